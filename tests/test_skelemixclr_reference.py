"""SkeleMixCLR against its reference code (czhaneva/SkeleMixCLR): four SGD steps from one state in
float64, each with three mixed views; every loss term, the logits of the query and of both pooled
halves of every mixed view, the partners, the masks, the mixed views, the encoder after every step and
the queue agree to 1e-10; checkpoints interchange strictly.

The fixture was written by ``tests/fixtures/make_skelemixclr_reference.py`` from the procedure in
``tests/skelemixclr_reference_procedure.py`` (the reference code itself is not part of this project)."""
import os

import numpy as np
import pytest
import torch

import skelemixclr_reference_procedure as proc
from conftest import ROOT
from feeder.tools import skelemix, skelemix_mask
from net.skelemixclr import SkeleMixCLR, masked_pool
from net.utils.layouts import get_layout

FIXTURE = os.path.join(ROOT, 'tests', 'fixtures', 'skelemixclr_reference_steps.npz')
TOL = dict(rtol=1e-10, atol=1e-10)
MODEL_ARGS = dict(proc.COMMON_ARGS, swap_cfg=proc.SWAP_CFG, **proc.OUR_ENCODER)


def step_mixes(step):
    """The procedure's draws of a step as our model's (partner, mask) pairs."""
    out = []
    for shift, parts, start, length in proc.MIXES[step]:
        partner = (torch.arange(proc.BATCH) + shift) % proc.BATCH
        out.append((partner, skelemix_mask(proc.UNITS, proc.JOINTS, proc.mixed_joints(parts), start, length)))
    return out


@pytest.fixture(scope='module')
def reference():
    return np.load(FIXTURE)


@pytest.fixture(scope='module')
def our_steps():
    torch.manual_seed(0)
    model = SkeleMixCLR(**MODEL_ARGS)
    model.load_state_dict(proc.deterministic_state(model.state_dict()), strict=True)
    model.double().train()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], **proc.SGD)
    steps = []
    for step in range(proc.STEPS):
        im_q, im_k = proc.views(step)
        out = model(im_q, im_k, mixes=step_mixes(step), details=True)
        optimizer.zero_grad()
        out['loss'].backward()
        optimizer.step()
        state = {k: v.clone() for k, v in model.state_dict().items()
                 if v.is_floating_point() and k.startswith('encoder_q.')}
        steps.append(dict(out, queue=model.queue.clone(), state=state))
    return steps


def test_every_step_equals_the_reference(reference, our_steps):
    for step, out in enumerate(our_steps):
        msg = f'step {step}'
        ours = [out['loss'].item(), out['loss_ins'].item(), out['loss_mix'].item()]
        np.testing.assert_allclose(ours, reference[f'{step}/losses'], err_msg=msg, **TOL)
        np.testing.assert_allclose(out['logits'][0].detach().numpy(), reference[f'{step}/logits'], err_msg=msg, **TOL)
        for name in ('logits_p', 'logits_c'):
            np.testing.assert_allclose(np.stack([x.detach().numpy() for x in out[name]]), reference[f'{step}/{name}'],
                                       err_msg=f'{msg} {name}', **TOL)
        partners = np.stack([p.numpy() for p, _ in step_mixes(step)])
        np.testing.assert_array_equal(partners, reference[f'{step}/partners'], err_msg=msg)
        np.testing.assert_array_equal(np.stack([m.numpy() for m in out['masks']]), reference[f'{step}/masks'])
        np.testing.assert_allclose(np.stack([proc.fingerprint(x).numpy() for x in out['mixed']]),
                                   reference[f'{step}/mixed'], err_msg=f'{msg} mixed views', **TOL)
        np.testing.assert_allclose(out['queue'].numpy(), reference[f'{step}/queue'], err_msg=f'{msg} queue', **TOL)
        keys = reference['state_keys'].tolist()
        assert sorted(out['state']) == keys
        np.testing.assert_allclose(np.stack([proc.fingerprint(out['state'][k]).numpy() for k in keys]),
                                   reference[f'{step}/state'], err_msg=f'{msg} encoder', **TOL)
    final = our_steps[-1]['state']
    compared = [k for k in final if f'final/{k}' in reference.files]
    for k in compared:
        np.testing.assert_allclose(final[k].numpy(), reference[f'final/{k}'], err_msg=k, **TOL)
    assert len(compared) > 50 and 'final/encoder_q.A' in reference.files      # the 2s-AGCN graph too


def test_checkpoints_hold_exactly_the_reference_keys_both_ways(reference):
    ours = SkeleMixCLR(**MODEL_ARGS)
    assert sorted(ours.state_dict()) == reference['keys'].tolist()
    evaluation = SkeleMixCLR(**dict(MODEL_ARGS, pretrain=False))
    assert sorted(evaluation.state_dict()) == reference['eval_keys'].tolist()
    kept = {k: v for k, v in ours.state_dict().items() if not k.startswith(('encoder_q.fc', 'encoder_k', 'queue'))}
    result = evaluation.load_state_dict(kept, strict=False)
    assert not result.unexpected_keys and set(result.missing_keys) == {'encoder_q.fc.weight', 'encoder_q.fc.bias'}
    SkeleMixCLR(**MODEL_ARGS).load_state_dict(ours.state_dict(), strict=True)


def test_ntu_bodies_are_the_reference_parts():
    bodies = {frozenset(b) for b in get_layout('ntu-rgb+d').bodies}
    assert bodies == {frozenset(p) for p in proc.BODY_PARTS}


def test_mix_and_masked_pool_by_hand():
    torch.manual_seed(1)
    x = torch.randn(3, 2, 8, 5, 1, dtype=torch.float64)
    mask = skelemix_mask(4, 5, [1, 3], 1, 2)                  # units 1-2 = frames 2-5, joints 1 and 3
    partner = torch.tensor([2, 0, 1])
    mixed = skelemix(x, partner, mask)
    want = x.clone()
    for n in range(3):
        for t in range(2, 6):
            for v in (1, 3):
                want[n, :, t, v] = x[partner[n], :, t, v]
    assert torch.equal(mixed, want)
    assert torch.equal(skelemix(x, partner, mask, 'zeros')[:, :, 2:6][:, :, :, [1, 3]], torch.zeros(3, 2, 4, 2, 1,
                                                                                                 dtype=x.dtype))
    fmap = torch.randn(6, 3, 4, 5, dtype=torch.float64)     # N*M = 3*2
    p, c = masked_pool(fmap, mask, 2)
    inside = fmap[:, :, 1:3][:, :, :, [1, 3]].mean(dim=(2, 3)).view(3, 2, 3).mean(1)
    keep = ~mask
    outside = torch.stack([fmap[i][:, keep].mean(dim=1) for i in range(6)]).view(3, 2, 3).mean(1)
    torch.testing.assert_close(p, inside)
    torch.testing.assert_close(c, outside)


def test_draws_are_inside_the_configured_ranges():
    """The device draws: partner (i + shift) % N with shift in [1, N-2], a window of 1-3 units, the joints
    of 2-3 whole body groups; every value in range is reached."""
    model = SkeleMixCLR(**MODEL_ARGS)
    bodies = [set(b) for b in get_layout('ntu-rgb+d').bodies]
    torch.manual_seed(0)
    seen = {'shift': set(), 'length': set(), 'start': set(), 'groups': set()}
    for _ in range(200):
        partner, mask = model.mix.draw(proc.BATCH, proc.UNITS, model.mix_groups)
        shift = int(partner[0])
        assert torch.equal(partner, (torch.arange(proc.BATCH) + shift) % proc.BATCH) and 1 <= shift <= proc.BATCH - 2
        rows = mask.any(dim=1).nonzero().flatten().tolist()
        start, length = rows[0], len(rows)
        assert rows == list(range(start, start + length)) and 1 <= length <= 3 and start + length <= proc.UNITS
        joints = set(mask.any(dim=0).nonzero().flatten().tolist())
        assert all(torch.equal(mask[r], mask[rows[0]]) for r in rows)
        used = [b for b in bodies if b <= joints]
        assert 2 <= len(used) <= 3 and set().union(*used) == joints
        for key, value in (('shift', shift), ('length', length), ('start', start), ('groups', len(used))):
            seen[key].add(value)
    assert seen == {'shift': {1, 2}, 'length': {1, 2, 3}, 'start': {0, 1, 2, 3}, 'groups': {2, 3}}
