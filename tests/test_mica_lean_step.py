"""MICA's step after issue 44 (batched parts, shared-key attention, batched teachers, device draws) equals
the step before it in float64: ``tests/mica_step_procedure.py`` run on the current code against
``tests/fixtures/mica_step_before.npz`` (written by ``tests/fixtures/make_mica_step_fixture.py`` on the
code before the change)."""
import json
import os

import numpy as np
import pytest

import mica_step_procedure as proc
from conftest import ROOT

FIXTURE = os.path.join(ROOT, 'tests', 'fixtures', 'mica_step_before.npz')
TOL = dict(rtol=1e-10, atol=1e-10)


@pytest.fixture(scope='module')
def before():
    return np.load(FIXTURE)


CASES = [(v, {}) for v in proc.VARIANTS] + [('paper', {'checkpoint_blocks': True})]


@pytest.mark.parametrize('variant, extra', CASES, ids=[v + ''.join(f'-{k}' for k in e) for v, e in CASES])
def test_the_lean_step_equals_the_step_before_it(before, variant, extra):
    """Every variant, and the paper variant with activation checkpointing of the encoder blocks (the
    switch that trades time for memory: the same step)."""
    model = proc.build(variant, **extra).double()
    shapes = json.loads(str(before[f'{variant}/shapes']))
    assert shapes == {k: list(v.shape) for k, v in model.state_dict().items()}      # same parameters, same names
    model.load_state_dict(proc.initial_state(shapes, model.state_dict()))
    ours = proc.run(model)
    for step in range(proc.STEPS):
        msg = f'{variant}, step {step}'
        np.testing.assert_allclose(ours[f'{step}/losses'].numpy(), before[f'{variant}/{step}/losses'], err_msg=msg, **TOL)
        np.testing.assert_allclose(ours[f'{step}/queue'].numpy(), before[f'{variant}/{step}/queue'], err_msg=msg, **TOL)
        assert ours[f'{step}/keys'] == before[f'{variant}/{step}/keys'].tolist()
        np.testing.assert_allclose(ours[f'{step}/state'].numpy(), before[f'{variant}/{step}/state'],
                                   err_msg=f'{msg}, state', **TOL)
