"""The written-down procedure behind ``tests/fixtures/aimclr_reference_steps.npz``: one model state,
one set of views and one optimiser, defined without any model code, so that the reference AimCLR
(Levigty/AimCLR) and ``net.aimclr.AimCLR`` can be run from exactly the same start.

``python tests/fixtures/make_aimclr_reference.py --reference <AimCLR checkout>`` runs the reference
through these steps and writes the fixture; ``tests/test_aimclr_reference.py`` runs ours and compares.
Both sides run in float64 (``float64()``: the default dtype, the model and every input), so the
comparison does not depend on the CPU's float32 rounding or the thread count and the bound is 1e-10.
Only torch is imported here.
"""
import contextlib

import torch

MODEL_ARGS = dict(base_encoder='net.st_gcn.Model', pretrain=True, feature_dim=8, queue_size=16, momentum=0.9,
                  Temperature=0.07, mlp=True, in_channels=3, hidden_channels=4, hidden_dim=16, num_class=60,
                  dropout=0.0, graph_args={'layout': 'ntu-rgb+d', 'strategy': 'spatial'},
                  edge_importance_weighting=True)
BATCH, FRAMES, JOINTS, PERSONS = 4, 20, 25, 2
# (nnm, topk) of each SGD step: three plain AimCLR steps, then nearest-neighbour mining with topk 1 and 3
STEPS = [(False, 1), (False, 1), (False, 1), (True, 1), (True, 1), (True, 3)]
SGD = dict(lr=0.05, momentum=0.9, weight_decay=1e-4, nesterov=False)
DTYPE = torch.float64


@contextlib.contextmanager
def float64():
    """The default dtype float64 while the model is built and run (the reference makes its masks with
    the default dtype); restored afterwards.  The model itself is cast with ``model.to(DTYPE)``."""
    before = torch.get_default_dtype()
    torch.set_default_dtype(DTYPE)
    try:
        yield
    finally:
        torch.set_default_dtype(before)


def deterministic_state(state_dict):
    """A new state for a model with these keys, drawn key by key in sorted order from one generator:
    weights N(0, 0.1), BatchNorm weights and edge importances 1 + N(0, 0.1), running variances
    1 + U(0, 0.1), the queue a column-normalised N(0, 1), all in ``DTYPE``; the adjacency ``A``,
    counters and the queue pointer are kept (``A`` cast to ``DTYPE``)."""
    g = torch.Generator().manual_seed(0)
    out = {}
    for key in sorted(state_dict):
        value = state_dict[key]
        if not value.is_floating_point() or key.endswith('.A') or key == 'A':
            out[key] = value.to(DTYPE) if value.is_floating_point() else value.clone()
        elif key == 'queue':
            q = torch.randn(value.shape, generator=g, dtype=DTYPE)
            out[key] = q / q.norm(dim=0, keepdim=True)
        elif key.endswith('running_var'):
            out[key] = 1 + 0.1 * torch.rand(value.shape, generator=g, dtype=DTYPE)
        elif key.endswith('running_mean'):
            out[key] = 0.1 * torch.randn(value.shape, generator=g, dtype=DTYPE)
        elif 'edge_importance' in key or (value.dim() == 1 and key.endswith('.weight') and _is_norm(key)):
            out[key] = 1 + 0.1 * torch.randn(value.shape, generator=g, dtype=DTYPE)
        else:
            out[key] = 0.1 * torch.randn(value.shape, generator=g, dtype=DTYPE)
    return out


def _is_norm(key):
    """BatchNorm weights of ST-GCN: data_bn, and the BN layers inside tcn / residual (index 0 / 4 / 1)."""
    return key.endswith(('data_bn.weight', 'tcn.0.weight', 'tcn.4.weight', 'residual.1.weight'))


def views(step):
    """(im_q, im_k, im_q_extreme) of one step, each (BATCH, 3, FRAMES, JOINTS, PERSONS)."""
    g = torch.Generator().manual_seed(100 + step)
    return [torch.randn(BATCH, 3, FRAMES, JOINTS, PERSONS, generator=g, dtype=DTYPE) for _ in range(3)]
