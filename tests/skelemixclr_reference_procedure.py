"""The written-down procedure behind ``tests/fixtures/skelemixclr_reference_steps.npz``: one model state,
one set of views, the mixing draws of every step and one optimiser, defined without any model code, so
that the reference SkeleMixCLR (czhaneva/SkeleMixCLR, ``net.skeletonclr_multi_swapv2.SkeletonCLR`` with
``net.st_gcn_swap.Model``, ``processor/pretrain_skeletonclr_multi_swapv2.py``'s loss) and
``net.skelemixclr.SkeleMixCLR`` run from exactly the same start, in float64.

``python tests/fixtures/make_skelemixclr_reference.py --reference <SkeleMixCLR checkout>`` runs the
reference through these steps and writes the fixture; ``tests/test_skelemixclr_reference.py`` runs ours.
Only torch is imported here.
"""
import torch

from aimclr_reference_procedure import deterministic_state  # noqa: F401  (one state recipe for both fixtures)

COMMON_ARGS = dict(pretrain=True, feature_dim=8, queue_size=16, momentum=0.9, Temperature=0.2, mlp=True,
                   in_channels=3, hidden_channels=4, hidden_dim=8, num_class=60, dropout=0.0,
                   edge_importance_weighting=True)
# the reference's encoder and its graph (net/utils/ntu_rgb_d.py, 'spatial' there = the 2s-AGCN graph) / ours
REFERENCE_ENCODER = dict(base_encoder='net.st_gcn_swap.Model', graph_args={'layout': 'ntu-rgb+d', 'strategy': 'spatial'})
OUR_ENCODER = dict(base_encoder='net.st_gcn.Model', graph_args={'layout': 'ntu-rgb+d', 'strategy': 'agcn'})
# spa_l, spa_u, tem_l, tem_u (of T // 4 = 4 units), repeat, loss weight
SWAP_CFG = {'swap_params': [[2, 3, 1, 3, 3, 0.7]], 'swap_mode': 'swap', 'spatial_mode': 'semantic'}
BATCH, FRAMES, JOINTS, PERSONS = 4, 16, 25, 2
UNITS = FRAMES // 4
SGD = dict(lr=0.05, momentum=0.9, weight_decay=1e-4, nesterov=False)

# the reference's five NTU body parts (0-based joints), in its list order
BODY_PARTS = [[3, 2, 20, 1, 0], [8, 9, 10, 11, 23, 24], [4, 5, 6, 7, 21, 22], [16, 17, 18, 19], [12, 13, 14, 15]]
# every step's ``repeat`` mixed views: (partner shift n, indices into BODY_PARTS, start unit, units);
# the reference draws them with torch.randint(1, N - 1), random.randint / random.sample, in that order
MIXES = [
    [(1, [0, 3], 0, 2), (2, [1, 2, 4], 1, 3), (1, [2, 4], 3, 1)],
    [(2, [4, 1], 2, 2), (1, [0, 1, 2], 0, 3), (2, [3, 0], 1, 1)],
    [(1, [1, 3], 1, 3), (2, [2, 0, 4], 0, 1), (1, [4, 2], 2, 2)],
    [(2, [0, 4], 0, 3), (1, [3, 1], 1, 2), (2, [1, 0, 2], 3, 1)],
]
STEPS = len(MIXES)


def mixed_joints(parts):
    """The sorted joints of the chosen parts (the reference's ``spa_idx``)."""
    return sorted(j for p in parts for j in BODY_PARTS[p])


def views(step):
    """(im_q, im_k) of one step, each (BATCH, 3, FRAMES, JOINTS, PERSONS), float64."""
    g = torch.Generator().manual_seed(200 + step)
    return [torch.randn(BATCH, 3, FRAMES, JOINTS, PERSONS, generator=g).double() for _ in range(2)]


def fingerprint(tensor):
    """Three weighted sums of a tensor's values (weights 1, cos(0.7 i + 1), sin(1.3 i) over the flat
    index i): how a mixed view or an encoder tensor is recorded after every step (a misplaced or wrong
    value changes them), the full encoder only after the last step, to keep the fixture small."""
    flat = tensor.detach().reshape(-1).double()
    i = torch.arange(flat.numel(), dtype=torch.float64)
    return torch.stack([flat.sum(), (flat * torch.cos(0.7 * i + 1)).sum(), (flat * torch.sin(1.3 * i)).sum()])
