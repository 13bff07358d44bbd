"""The written-down procedure behind ``tests/fixtures/mica_step_before.npz``: MICA's training step (on the
SkeleMixCLR base, FreST, Feature Modulation and the harmonizer) as it was before issue 44 made it lean,
run in float64 from one stored state, with scripted mixing draws and seeded FM noise, three SGD steps.

``python tests/fixtures/make_mica_step_fixture.py`` ran it on the code before the change (commit of the
fixture's ``source`` entry) and wrote the losses, the queue and a fingerprint of every trained tensor after
every step; ``tests/test_mica_lean_step.py`` runs the same procedure on the current code.  The variants
cover the readings that existed then (their keys are unchanged, so the step must be unchanged too).
"""
import os

import torch

from feeder.tools import skelemix_mask

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
UCLA_TEXT = os.path.join(ROOT, 'config/text/features/ucla.minilm.npz')
UCLA_DESC = os.path.join(ROOT, 'config/text/descriptions/ucla.yaml')
BATCH, FRAMES, JOINTS, PERSONS, UNITS = 4, 16, 20, 2, 4
COMMON = dict(base_encoder='net.st_gcn.Model', in_channels=3, hidden_channels=4, hidden_dim=16, num_class=10,
              queue_size=8, momentum=0.9, Temperature=0.2, dropout=0.0, num_frames=FRAMES,
              graph_args={'layout': 'nw-ucla', 'strategy': 'agcn'}, text_features=UCLA_TEXT,
              descriptions=UCLA_DESC, base_method='skelemixclr', swap_cfg={'swap_params': [[2, 3, 1, 3, 2, 0.5]]},
              prompts=['global', 'head', 'hands', 'hips', 'feet'])
VARIANTS = {
    # the paper configs' reading before issue 44: part-wise FM on z_q at the text width, text teacher,
    # full-width harmonizer, FreST with the linear decoupling
    'paper': dict(fm_objective='part_pooled', fm_target='text', fm_embedding='query'),
    # label-free teacher, separate projection, every kind against the global embedding
    'label_free': dict(fm_objective='multi_part', fm_target='teacher', fm_embedding='projection', feature_dim=8),
    # one-hot teacher on the averaged anchor, no harmonizer, depthwise decoupling; no smoothing: the code
    # before built the target in float32 (``F.one_hot(...).float()``), so KL's log(target) was float32
    # rounding for any value but 0 and 1 (the float64 target now is the fix)
    'label': dict(fm_objective='averaged', fm_target='label', harmonizer=False, decoupling='depthwise',
                  label_smoothing=0.0),
}
# per step, per mixed view: (partner shift, body groups of the nw-ucla layout, start unit, units)
MIXES = [[(1, [0, 3], 0, 2), (2, [1, 2, 4], 1, 3)],
         [(2, [4, 1], 2, 2), (1, [0, 1, 2], 0, 3)],
         [(1, [1, 3], 1, 3), (2, [2, 0, 4], 0, 1)]]
STEPS = len(MIXES)
LABEL = torch.tensor([0, 3, 7, 9])
SGD = dict(lr=0.05, momentum=0.9, weight_decay=1e-4)
BODIES = [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11], [12, 13, 14, 15], [16, 17, 18, 19]]


def step_mixes(step):
    out = []
    for shift, bodies, start, length in MIXES[step]:
        joints = sorted(j for b in bodies for j in BODIES[b])
        out.append(((torch.arange(BATCH) + shift) % BATCH, skelemix_mask(UNITS, JOINTS, joints, start, length)))
    return out


def views(step):
    g = torch.Generator().manual_seed(300 + step)
    return [torch.randn(BATCH, 3, FRAMES, JOINTS, PERSONS, generator=g, dtype=torch.float64) for _ in range(2)]


def fingerprint(tensor):
    """Three weighted sums of a tensor's values (weights 1, cos(0.7 i + 1), sin(1.3 i))."""
    flat = tensor.detach().reshape(-1).double()
    i = torch.arange(flat.numel(), dtype=torch.float64)
    return torch.stack([flat.sum(), (flat * torch.cos(0.7 * i + 1)).sum(), (flat * torch.sin(1.3 * i)).sum()])


def initial_state(shapes, own):
    """The start of every variant, drawn key by key (sorted) from one generator in float64 for the
    floating entries of ``shapes`` ({key: shape}, the parameter names before issue 44): 1-D weights
    1 + N(0, 0.1), running variances 1 + U(0, 0.1), the queue a column-normalised N(0, 1), other tensors
    N(0, 0.1); the key encoder a copy of the query encoder; the adjacency and the integer buffers are
    the model's own (``own``)."""
    g = torch.Generator().manual_seed(0)
    out = {}
    for key in sorted(shapes):
        shape = tuple(shapes[key])
        if key.startswith('encoder_k.') or key not in own or not own[key].is_floating_point() or key.endswith('.A'):
            continue
        if key == 'queue':
            q = torch.randn(shape, generator=g, dtype=torch.float64)
            out[key] = q / q.norm(dim=0, keepdim=True)
        elif key.endswith('running_var'):
            out[key] = 1 + 0.1 * torch.rand(shape, generator=g, dtype=torch.float64)
        elif len(shape) == 1 and key.endswith('.weight') or 'edge_importance' in key:
            out[key] = 1 + 0.1 * torch.randn(shape, generator=g, dtype=torch.float64)
        else:
            out[key] = 0.1 * torch.randn(shape, generator=g, dtype=torch.float64)
    for key, value in own.items():
        if key.startswith('encoder_k.') and value.is_floating_point() and not key.endswith('.A'):
            out[key] = out['encoder_q.' + key[len('encoder_k.'):]].clone()
        elif key not in out:
            out[key] = value.clone()
    return out


def build(variant, **extra):
    from net.mica import MICA
    torch.manual_seed(0)
    return MICA(**dict(COMMON, **VARIANTS[variant], **extra))


def run(model):
    """Three SGD steps of ``model`` (float64, its state already set): per step the losses, then the queue
    and the fingerprints of every floating tensor of the state dict but the key encoder's."""
    model.double().train()
    model.draw_mixes = lambda x: [(p, m) for p, m in current['mixes']]       # scripted draws
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], **SGD)
    record = {}
    current = {}
    for step in range(STEPS):
        current['mixes'] = step_mixes(step)
        im_q, im_k = views(step)
        torch.manual_seed(10 + step)                                         # the FM noise
        out = model(im_q, im_k, label=LABEL)
        optimizer.zero_grad()
        out['loss'].backward()
        optimizer.step()
        record[f'{step}/losses'] = torch.stack([out[k].detach() for k in ('loss', 'loss_info', 'loss_mix', 'loss_kl')])
        record[f'{step}/queue'] = fingerprint(model.queue)
        state = {k: v for k, v in model.state_dict().items() if v.is_floating_point() and not k.startswith('encoder_k.')
                 and k != 'queue'}
        record[f'{step}/keys'] = sorted(state)
        record[f'{step}/state'] = torch.stack([fingerprint(state[k]) for k in sorted(state)])
    return record
