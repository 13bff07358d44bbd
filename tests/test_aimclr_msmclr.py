"""AimCLR (energy-based drop, D3M, nearest-neighbour mining) and MsMCLR (MsM attention, L_Ms)."""
import glob
import math
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import ROOT
from net.aimclr import AimCLR, energy_attention
from net.losses import distribution_cross_entropy, multi_positive_infonce, nearest_neighbour_mask
from net.msm_attention import MsMAttention, MotionAttention, motion_difference
from net.msmclr import MsMCLR
from net.utils.layouts import get_layout

ENCODER = dict(base_encoder='net.st_gcn.Model', in_channels=3, hidden_channels=8, hidden_dim=32, num_class=10,
               feature_dim=16, queue_size=16, dropout=0.0, graph_args={'layout': 'nw-ucla', 'strategy': 'spatial'})


def test_energy_attention_is_simam():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 5, 4)
    att = energy_attention(x, e_lambda=1e-4).numpy()
    xn = x.numpy().astype(np.float64)
    for n in range(2):
        for c in range(3):
            plane = xn[n, c]
            d = (plane - plane.mean()) ** 2
            var = d.sum() / (plane.size - 1)
            expected = 1 / (1 + np.exp(-(d / (4 * (var + 1e-4)) + 0.5)))
            np.testing.assert_allclose(att[n, c], expected, rtol=1e-5)


def test_distribution_cross_entropy_by_hand():
    target = torch.tensor([[2.0, 0.0, -1.0]])
    logits = torch.tensor([[0.5, 1.0, 0.0]])
    p = np.exp([2.0, 0.0, -1.0]); p /= p.sum()
    q = np.exp([0.5, 1.0, 0.0]); q /= q.sum()
    assert distribution_cross_entropy(target, logits).item() == pytest.approx(-(p * np.log(q)).sum(), rel=1e-6)
    # the target is detached
    target.requires_grad_(True)
    logits.requires_grad_(True)
    distribution_cross_entropy(target, logits).backward()
    assert target.grad is None and logits.grad is not None


def test_nearest_neighbour_mask_and_multi_positive_loss():
    a = torch.tensor([[0.1, 0.9, 0.3, 0.2]])
    b = torch.tensor([[0.8, 0.1, 0.3, 0.2]])
    mask = nearest_neighbour_mask([a, b], topk=1)
    assert mask.tolist() == [[1, 1, 1, 0, 0]]
    logits = torch.tensor([[1.0, 2.0, 0.0, -1.0, 0.5]])
    logp = F.log_softmax(logits, dim=1)[0]
    assert multi_positive_infonce(logits, mask).item() == pytest.approx(-(logp[0] + logp[1] + logp[2]).item() / 3)


@pytest.mark.parametrize('layout, sizes', [('ntu-rgb+d', None), ('nw-ucla', None)])
def test_msm_attention_shapes_on_25_and_20_joints(layout, sizes):
    spec = get_layout(layout)
    msm = MsMAttention(32, layout)
    x = torch.randn(3, 32, 7, spec.num_node)
    out = msm(x)
    assert list(out) == ['joint', 'part', 'body']
    assert out['joint'].shape == (3, 32, 7, spec.num_node)
    assert out['part'].shape == (3, 32, 7, len(spec.parts))
    assert out['body'].shape == (3, 32, 7, len(spec.bodies))
    assert 2 <= min(map(len, spec.parts)) and max(map(len, spec.parts)) <= 3
    assert 4 <= min(map(len, spec.bodies)) and max(map(len, spec.bodies)) <= 6
    assert list(MsMAttention(32, layout, multi_scale=False)(x)) == ['joint']


def test_part_scale_averages_the_groups():
    spec = get_layout('nw-ucla')
    msm = MsMAttention(4, 'nw-ucla')
    x = torch.randn(2, 4, 3, spec.num_node)
    merged = x @ msm.merge_part
    for s, group in enumerate(spec.parts):
        assert torch.allclose(merged[..., s], x[..., list(group)].mean(dim=-1), atol=1e-6)


def test_difference_modes():
    x = torch.arange(24.0).view(1, 1, 4, 6) ** 2
    frame, node = motion_difference(x, 'frame'), motion_difference(x, 'node')
    assert torch.equal(frame[0, 0, :3], x[0, 0, 1:] - x[0, 0, :3]) and (frame[0, 0, 3] == 0).all()
    assert torch.equal(node[0, 0, :, :5], x[0, 0, :, 1:] - x[0, 0, :, :5]) and (node[..., 5] == 0).all()
    assert torch.equal(motion_difference(x, 'all'), (frame + node) / 2)
    torch.manual_seed(0)
    feats = torch.randn(2, 16, 5, 6)
    outs = {}
    for mode in ('all', 'frame', 'node'):
        torch.manual_seed(1)
        block = MotionAttention(16, diff_mode=mode).eval()
        outs[mode] = block(feats)
    assert not torch.allclose(outs['all'], outs['frame'])
    assert not torch.allclose(outs['all'], outs['node'])
    assert not torch.allclose(outs['frame'], outs['node'])
    with pytest.raises(ValueError, match='diff_mode'):
        motion_difference(x, 'time')


def test_ms_loss_is_the_mean_of_the_scale_cross_entropies():
    """L_Ms (eqs. 6-9) recomputed by hand from the embeddings the model produced."""
    torch.manual_seed(0)
    model = MsMCLR(**ENCODER)
    x = torch.randn(4, 3, 12, 20, 1)
    queue = model.queue.clone()
    torch.manual_seed(5)
    out = model(x, x.flip(2), x * 0.9)
    torch.manual_seed(5)
    model.queue.copy_(queue)
    q = model.embed_query(x)
    strong = model.strong_embeddings(x * 0.9)
    k = model.embed_key(x.flip(2))
    p_normal = torch.softmax(torch.cat([(q * k).sum(1, keepdim=True), q @ queue], 1) / model.T, 1)
    losses = []
    for z in strong.values():
        p_scale = torch.softmax(torch.cat([(z * k).sum(1, keepdim=True), z @ queue], 1) / model.T, 1)
        losses.append(-(p_normal * p_scale.log()).sum(1).mean())
    assert len(losses) == 3
    assert out['loss_ms'].item() == pytest.approx((sum(losses) / 3).item(), rel=1e-4)


def _train_steps(model, steps=20):
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.05, momentum=0.9)
    torch.manual_seed(1)
    x = torch.randn(8, 3, 12, 20, 1)
    y = torch.randn(16, 3, 12, 20, 1)
    losses = []
    for _ in range(steps):
        with torch.no_grad():
            model.queue.copy_(model.embed_key(y).T)
        out = model(x + 0.3 * torch.randn_like(x), x + 0.3 * torch.randn_like(x), x + 0.5 * torch.randn_like(x))
        opt.zero_grad()
        out['loss'].backward()
        opt.step()
        losses.append(out['loss'].item())
    return losses


@pytest.mark.parametrize('cls, extra', [(AimCLR, {}), (MsMCLR, {}), (MsMCLR, {'msm_attention': False}),
                                        (MsMCLR, {'multi_scale': False, 'diff_mode': 'frame', 'ms_loss': 'infonce'})])
def test_loss_decreases(cls, extra):
    torch.manual_seed(0)
    losses = _train_steps(cls(**ENCODER, **extra))
    assert all(math.isfinite(v) for v in losses)
    # the D3M/L_Ms part has the target's entropy as its floor, so the total falls less than InfoNCE alone
    assert sum(losses[-3:]) < 0.85 * sum(losses[:3]), losses


def test_nearest_neighbour_mining_changes_the_loss():
    torch.manual_seed(0)
    model = AimCLR(**ENCODER)
    x = torch.randn(4, 3, 12, 20, 1)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    torch.manual_seed(3)
    plain = model(x, x, x)['loss_info']
    model.load_state_dict(state)
    torch.manual_seed(3)
    model.mining_epoch, model.topk = 5, 2
    assert model(x, x, x, epoch=4)['loss_info'].item() == pytest.approx(plain.item())   # before mining_epoch
    model.load_state_dict(state)
    torch.manual_seed(3)
    mined = model(x, x, x, epoch=5)['loss_info']
    assert mined.item() != pytest.approx(plain.item())


def test_bad_switch_values_are_errors():
    with pytest.raises(ValueError, match='ms_loss'):
        MsMCLR(**ENCODER, ms_loss='kl')
    with pytest.raises(ValueError, match='diff_mode'):
        MsMCLR(**ENCODER, diff_mode='both')
    custom = {'num_node': 3, 'edges': [[0, 1], [1, 2]], 'center': 1}
    args = dict(ENCODER, in_channels=3, graph_args={'layout': custom, 'strategy': 'spatial'})
    with pytest.raises(ValueError, match='part groups'):
        MsMCLR(**args)
    MsMCLR(**args, multi_scale=False)       # joint scale only needs no groups


def test_eval_model_has_only_the_encoder():
    for cls in (AimCLR, MsMCLR):
        model = cls(**dict(ENCODER, pretrain=False))
        assert set(name.split('.')[0] for name in model.state_dict()) == {'encoder_q'}
        assert model(torch.randn(2, 3, 12, 20, 1)).shape == (2, 10)


@pytest.mark.parametrize('path', sorted(glob.glob(os.path.join(ROOT, 'config', '**', 'pretrain_*clr*.yaml'), recursive=True)))
def test_every_pretrain_config_builds_its_model(path):
    """Every shipped pretraining YAML parses and builds its model with the right feeder/method pair."""
    from torchlight.io import import_class, load_config_file
    cfg = load_config_file(path)
    args = dict(cfg['model_args'], queue_size=cfg['batch_size'] * 2)
    model = import_class(cfg['model'])(**args)
    if 'aimclr' in path or 'msmclr' in path:
        assert cfg['train_feeder'].endswith('Feeder_triple')
    if 'msmclr' in path:
        assert model.msm is not None and cfg['train_feeder_args']['aug_method'] == 'msmclr'
    stream = os.path.basename(path).rsplit('.', 1)[0].split('_')[-1]
    assert cfg['stream'] == (stream if stream in ('bone', 'motion') else 'joint')
    twin = path.replace('pretrain_', 'linear_eval_')
    assert os.path.exists(twin), twin
    assert load_config_file(twin)['model'] == cfg['model']


def test_the_references_top_level_mining_keys_become_the_methods_model_args(tmp_path):
    """AimCLR's reference YAMLs (and ``--mining_epoch`` on the command line) set mining at the top level:
    mapped to ``model_args`` of a method that mines, ignored with a notice for one that does not."""
    from conftest import write_config
    from processor.pretrain import PretrainProcessor
    cfg = write_config(tmp_path, model='net.aimclr.AimCLR', train_feeder='feeder.ntu_feeder.Feeder_triple',
                       mining_epoch=7, topk=2)
    proc = PretrainProcessor(['--config', cfg, '--topk', '3'])
    assert (proc.model.mining_epoch, proc.model.topk) == (7, 3)
    log = open(tmp_path / 'run' / 'log.txt').read()
    assert "top-level key 'mining_epoch' (the reference's) is model_args.mining_epoch: 7" in log
    plain = PretrainProcessor(['--config', write_config(tmp_path), '--work_dir', str(tmp_path / 'plain'),
                               '--mining_epoch', '5'])
    assert "top-level key 'mining_epoch' is ignored: net.skeletonclr.SkeletonCLR does not declare it" in \
        open(tmp_path / 'plain' / 'log.txt').read()
    assert not hasattr(plain.model, 'mining_epoch')


@pytest.mark.parametrize('cls, extra_loss', [(AimCLR, 'loss_d3m'), (MsMCLR, 'loss_ms')])
def test_infonce_warmup_trains_on_infonce_alone_then_adds_the_divergence(cls, extra_loss):
    """infonce_warmup_epochs = 2: epochs 0-1 train L_info alone (the divergence is only logged), from
    epoch 2 on the reference's sum."""
    torch.manual_seed(0)
    model = cls(**ENCODER, infonce_warmup_epochs=2)
    x = torch.randn(4, 3, 12, 20, 1)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    for epoch, with_divergence in ((1, False), (2, True)):
        model.load_state_dict(state)
        torch.manual_seed(3)
        out = model(x, x.flip(2), x * 0.9, epoch=epoch)
        expected = out['loss_info'] + out[extra_loss] if with_divergence else out['loss_info']
        assert out['loss'].item() == pytest.approx(expected.item())
        assert out[extra_loss].item() > 0                    # computed and logged in both phases
    assert cls(**ENCODER).infonce_warmup_epochs == 0          # the reference: the divergence from the start


def test_divergence_weight_holds_then_ramps_to_one():
    from net.losses import divergence_weight
    assert [divergence_weight(e) for e in range(3)] == [1.0, 1.0, 1.0]           # the references
    assert [divergence_weight(e, ramp=3) for e in range(5)] == [0.25, 0.5, 0.75, 1.0, 1.0]
    assert [divergence_weight(e, hold=2, ramp=1) for e in range(5)] == [0.0, 0.0, 0.5, 1.0, 1.0]


@pytest.mark.parametrize('cls, extra_loss', [(AimCLR, 'loss_d3m'), (MsMCLR, 'loss_ms')])
def test_divergence_ramp_weighs_the_divergence_in_the_loss(cls, extra_loss):
    """divergence_ramp_epochs = 3 (the small-data recipe's schedule): L = L_info + (e + 1) / 4 * L_div."""
    torch.manual_seed(0)
    model = cls(**ENCODER, divergence_ramp_epochs=3)
    x = torch.randn(4, 3, 12, 20, 1)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    for epoch in (0, 2, 5):
        model.load_state_dict(state)
        out = model(x, x.flip(2), x * 0.9, epoch=epoch)
        weight = min(1.0, (epoch + 1) / 4)
        assert out['loss'].item() == pytest.approx((out['loss_info'] + weight * out[extra_loss]).item())
