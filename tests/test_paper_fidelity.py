"""Paper fidelity of MICA and MsMCLR (issue 16): the claims of docs/METHODS.md that no other test pins,
checked against hand computations where there is arithmetic."""
import glob
import math
import os
import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import ROOT
from feeder import tools
from feeder.ntu_feeder import Feeder_triple
from feeder.preprocess import IncompleteSkeletonError, normalize_sequence_mica
from net.frest import FreST, FrequencyBlock, count_parameters, kept_fraction
from net.mica import MICA, ModalityHarmonizer, text_teacher_logits
from net.msm_attention import MotionAttention
from net.msmclr import MsMCLR
from net.st_gcn import Model
from net.utils.layouts import get_layout
from torchlight.io import load_config_file

UCLA_TEXT = os.path.join(ROOT, 'config/text/features/ucla.minilm.npz')
UCLA_DESC = os.path.join(ROOT, 'config/text/descriptions/ucla.yaml')
GRAPH = {'layout': 'nw-ucla', 'strategy': 'spatial'}
MICA_ARGS = dict(base_encoder='net.st_gcn.Model', in_channels=3, hidden_channels=4, hidden_dim=16, num_class=10,
                 queue_size=8, dropout=0.0, graph_args=GRAPH, num_frames=20, text_features=UCLA_TEXT,
                 descriptions=UCLA_DESC)
MSM_ARGS = dict(base_encoder='net.st_gcn.Model', in_channels=3, hidden_channels=4, hidden_dim=16, num_class=10,
                feature_dim=8, queue_size=8, dropout=0.0, graph_args=GRAPH)
LABEL = torch.tensor([0, 3, 3, 9])


def views(n=4, t=20, v=20, k=3):
    return [torch.randn(n, 3, t, v, 1) for _ in range(k)]


def load(path):
    return load_config_file(os.path.join(ROOT, path))      # base: files merged


# ------------------------------------------------------------------------------------------ MsMCLR

def test_msm_attention_arithmetic_against_a_hand_computation():
    """One scale, C = 2, T = 3, S = 4, reduction 1, identity reduce conv, BN as identity, known expand."""
    torch.manual_seed(0)
    att = MotionAttention(2, reduction=1, diff_mode='all').eval()
    conv, bn = att.reduce
    with torch.no_grad():
        conv.weight.copy_(torch.eye(2).view(2, 2, 1, 1))
        conv.bias.zero_()
        bn.eps = 0.0                                  # running mean 0, var 1, weight 1, bias 0: identity
        att.expand.weight.copy_(torch.tensor([[0.5, -1.0], [2.0, 0.25]]).view(2, 2, 1, 1))
        att.expand.bias.copy_(torch.tensor([0.1, -0.2]))
    x = torch.randn(1, 2, 3, 4)
    out = att(x).detach().numpy()[0]

    xs = x.numpy()[0].astype(np.float64)              # (C, T, S)
    C, T, S = xs.shape
    motion = np.zeros_like(xs)
    for c in range(C):
        for t in range(T):
            for s in range(S):
                frame = xs[c, t + 1, s] - xs[c, t, s] if t + 1 < T else 0.0
                node = xs[c, t, s + 1] - xs[c, t, s] if s + 1 < S else 0.0
                motion[c, t, s] = (frame + node) / 2
    tokens = [[motion[c, t, s] for c in range(C) for t in range(T)] for s in range(S)]
    values = [[xs[c, t, s] for c in range(C) for t in range(T)] for s in range(S)]
    d = C * T
    expected = np.zeros_like(xs)
    w = np.array([[0.5, -1.0], [2.0, 0.25]])
    b = np.array([0.1, -0.2])
    for s in range(S):
        scores = [sum(tokens[s][i] * tokens[j][i] for i in range(d)) / math.sqrt(d) for j in range(S)]
        top = max(scores)
        weights = [math.exp(v - top) for v in scores]
        weights = [v / sum(weights) for v in weights]
        attended = [sum(weights[j] * values[j][i] for j in range(S)) for i in range(d)]
        for c in range(C):
            for t in range(T):
                z = [xs[k, t, s] + attended[k * T + t] for k in range(C)]
                e = sum(w[c, k] * z[k] for k in range(C)) + b[c]
                a = 1 / (1 + math.exp(-e))
                expected[c, t, s] = xs[c, t, s] * a + xs[c, t, s]
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)


def test_ntu25_part_and_body_groups_exactly():
    layout = get_layout('ntu-rgb+d')
    one_based = lambda groups: [tuple(j + 1 for j in g) for g in groups]  # noqa: E731
    assert one_based(layout.parts) == [(1, 2, 21), (3, 4), (5, 6), (7, 8), (22, 23), (9, 10), (11, 12), (24, 25),
                                       (13, 14), (15, 16), (17, 18), (19, 20)]
    assert one_based(layout.bodies) == [(1, 2, 3, 4, 21), (5, 6, 7, 8, 22, 23), (9, 10, 11, 12, 24, 25),
                                        (13, 14, 15, 16), (17, 18, 19, 20)]
    for groups, low, high in ((layout.parts, 2, 3), (layout.bodies, 4, 6)):   # section 3.2.1
        assert sorted(j for g in groups for j in g) == list(range(25))
        assert all(low <= len(g) <= high for g in groups)


def test_msm_only_on_the_strong_branch_with_one_shared_head():
    torch.manual_seed(0)
    model = MsMCLR(**MSM_ARGS)
    assert {k.split('.')[0] for k, _ in model.named_parameters()} == {'encoder_q', 'encoder_k', 'msm'}
    seen = []
    original = model.msm.forward
    model.msm.forward = lambda fmap: seen.append(fmap.detach().clone()) or original(fmap)
    im_q, im_k, im_s = views()
    model(im_q, im_k, im_s)
    assert len(seen) == 1                                        # once, on one branch
    torch.testing.assert_close(seen[0], model.query_feature_map(im_s).detach())   # ... the strong one
    maps = original(model.query_feature_map(im_s))
    strong = model.strong_embeddings(im_s)
    assert set(strong) == {'joint', 'part', 'body'}
    for name, h in maps.items():                                 # the shared MoCo head encoder_q.fc
        torch.testing.assert_close(strong[name], F.normalize(model.encoder_q.fc(model.encoder_q.pool(h, 1)), dim=1))


def test_total_loss_and_no_gradient_from_l_ms_into_the_normal_query():
    torch.manual_seed(0)
    model = MsMCLR(**MSM_ARGS)
    im_q, im_k, im_s = views()
    out = model(im_q, im_k, im_s)
    assert out['loss'].item() == pytest.approx(out['loss_info'].item() + out['loss_ms'].item(), rel=1e-6)
    parts = [out[f'loss_{s}'].item() for s in ('joint', 'part', 'body')]
    assert out['loss_ms'].item() == pytest.approx(sum(parts) / 3, rel=1e-6)           # eq. 9
    model.contrastive_loss = lambda logits: logits.sum() * 0.0                       # keep L_Ms only
    im_q.requires_grad_(True)
    im_s.requires_grad_(True)
    model(im_q, im_k, im_s)['loss'].backward()
    assert im_q.grad is not None and torch.count_nonzero(im_q.grad) == 0             # target detached
    assert torch.count_nonzero(im_s.grad) > 0


def test_without_multi_scale_the_loss_is_l1():
    torch.manual_seed(0)
    model = MsMCLR(**dict(MSM_ARGS, multi_scale=False))
    out = model(*views())
    assert 'loss_part' not in out and 'loss_body' not in out
    assert out['loss_ms'].item() == pytest.approx(out['loss_joint'].item(), rel=1e-6)


@pytest.fixture
def triple(tmp_path):
    rng = np.random.RandomState(0)
    data = rng.randn(4, 3, 20, 25, 2).astype(np.float32)
    data[..., 1] = 0                                               # empty second person
    np.save(tmp_path / 'x.npy', data)
    with open(tmp_path / 'y.pkl', 'wb') as f:
        pickle.dump(([f's{i}' for i in range(4)], [0, 1, 2, 3]), f)
    return lambda **kw: Feeder_triple(str(tmp_path / 'x.npy'), str(tmp_path / 'y.pkl'), **kw), data


def test_strong_set_is_exactly_the_eight_and_normal_views_are_shear_and_crop(triple, monkeypatch):
    make, data = triple
    feeder = make(aug_method='msmclr')
    calls = []
    for name in ('temperal_crop', 'shear', 'random_rotate', 'gaus_noise', 'gaus_filter', 'joint_mask',
                 'channel_mask', 'random_joint_noise', 'random_spatial_flip', 'random_time_flip', 'axis_mask'):
        original = getattr(tools, name)
        monkeypatch.setattr(tools, name, lambda *a, _f=original, _n=name, **k: calls.append(_n) or _f(*a, **k))
    normal_q, normal_k, strong = feeder.views(torch.from_numpy(data))
    normal = ['temperal_crop', 'shear']
    eight = ['temperal_crop', 'shear', 'random_rotate', 'gaus_noise', 'gaus_filter', 'joint_mask', 'channel_mask',
             'random_joint_noise']
    assert calls == normal + normal + eight
    assert strong.shape == normal_q.shape == data.shape


def test_random_joint_noise_uses_the_original_range_and_skips_empty_persons(triple):
    make, data = triple
    torch.manual_seed(0)
    raw = torch.from_numpy(data)
    view = raw * 0.01                                              # an augmented view with a far smaller range
    feeder = make(aug_method='msmclr')
    assert (feeder.joint_noise_joints, feeder.joint_noise_scale, feeder.joint_noise_range) == (5, 0.5, 'original')
    noisy = feeder.joint_noise(view, raw)
    delta = (noisy - view).abs()
    bound = 0.5 * tools.coordinate_range(raw).view(-1, 1, 1, 1, 1)
    assert torch.all(delta <= bound + 1e-5)
    assert torch.all(delta.amax(dim=(1, 2, 3, 4)) > 0.4 * bound.flatten())         # the raw range, not the view's
    assert torch.all(noisy[..., 1] == 0)                                            # empty person untouched
    assert torch.equal((delta[..., 0] > 0).any(dim=1).any(dim=1).sum(dim=1), torch.full((4,), 5))
    old = make(aug_method='msmclr', joint_noise_range='view', joint_noise_scale=0.1).joint_noise(view, raw)
    assert torch.all((old - view).abs() <= 0.1 * tools.coordinate_range(view).view(-1, 1, 1, 1, 1) + 1e-6)
    assert torch.any(old[..., 1] != 0)                                              # the earlier reading
    with pytest.raises(ValueError, match='joint_noise_range'):
        make(joint_noise_range='augmented')


def test_msm_size_matches_table_9_best_with_reduction_2():
    cfg = load('config/ntu60/xsub/pretrain_msmclr.yaml')['model_args']
    sizes = {r: sum(p.numel() for p in MsMCLR(**dict(cfg, queue_size=128, reduction=r)).parameters()) for r in (1, 2, 4)}
    assert sizes == {1: 2236424, 2: 2038664, 4: 1939784}
    assert cfg['reduction'] == 2 and min(sizes, key=lambda r: abs(sizes[r] - 2.1e6)) == 2


# ------------------------------------------------------------------------------------------ MICA

def test_mica_total_loss_is_info_plus_lambda_kl():
    torch.manual_seed(0)
    model = MICA(**MICA_ARGS)
    im_q, im_k = views(k=2)
    out = model(im_q, im_k, label=LABEL)
    assert out['loss'].item() == pytest.approx(out['loss_info'].item() + 0.01 * out['loss_kl'].item(), rel=1e-6)


def test_text_teacher_by_hand():
    anchors = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])
    probs = torch.softmax(text_teacher_logits(anchors, torch.tensor([0, 2]), 0.5), dim=1)
    row0 = [math.exp(2.0), math.exp(1.2), math.exp(0.0)]           # [1, 0.6, 0] / 0.5
    row2 = [math.exp(0.0), math.exp(1.6), math.exp(2.0)]           # [0, 0.8, 1] / 0.5
    expected = torch.tensor([[v / sum(row0) for v in row0], [v / sum(row2) for v in row2]])
    torch.testing.assert_close(probs, expected)


def test_fm_noise_only_in_training_and_only_on_student_and_anchors():
    torch.manual_seed(0)
    model = MICA(**MICA_ARGS)
    z = F.normalize(torch.randn(4, model.anchors.size(1)), dim=1)
    s1, t1 = model.fm_logits(z, None, LABEL)
    s2, t2 = model.fm_logits(z, None, LABEL)
    assert not torch.allclose(s1, s2) and torch.equal(t1, t2)       # noise on the student side only
    clean = torch.stack([torch.softmax(text_teacher_logits(a, LABEL, model.tau_t), 1) for a in model.part_anchors])
    torch.testing.assert_close(t1, clean)                            # teacher: clean anchors
    model.eval()
    e1, _ = model.fm_logits(z, None, LABEL)
    e2, _ = model.fm_logits(z, None, LABEL)
    assert torch.equal(e1, e2)
    torch.testing.assert_close(e1, torch.einsum('nd,pkd->pnk', z, model.part_anchors) / model.tau_s)


@pytest.mark.parametrize('target', ['text', 'teacher'])
def test_teacher_is_detached_and_sharper(target):
    torch.manual_seed(0)
    model = MICA(**dict(MICA_ARGS, fm_target=target))
    z = F.normalize(torch.randn(4, model.anchors.size(1)), dim=1).requires_grad_(True)
    _, teacher = model.fm_logits(z, z, LABEL)
    assert not teacher.requires_grad
    assert model.tau_t < model.tau_s
    if target == 'text':                                            # the sample's class text embedding
        assert torch.equal(teacher.argmax(dim=-1), LABEL.expand(teacher.shape[:2]))
        with pytest.raises(ValueError, match='labels'):
            model.fm_loss(z, None, None)


def test_harmonizer_query_and_key_sides():
    torch.manual_seed(0)
    h = ModalityHarmonizer(16, 384, num_heads=4)
    assert h.attention.width == 16 and h.attention.num_heads == 4
    assert h.attention.q_proj_weight.shape == (16, 16) and h.attention.k_proj_weight.shape == (16, 384)
    frames, words = torch.randn(2, 5, 16), torch.randn(7, 384)
    out = h(frames, words)
    assert out.shape == (2, 16)
    assert not torch.allclose(out, h(frames, words * 2))           # keys/values: the words
    changed = frames.clone()
    changed[0, 2] += 1.0                                           # queries: the skeleton frames
    assert not torch.allclose(out[0], h(changed, words)[0]) and torch.allclose(out[1], h(changed, words)[1])
    narrow = ModalityHarmonizer(16, 384, num_heads=4, width=8)     # inner width 8: Table 3's reading
    assert narrow.attention.q_proj_weight.shape == (8, 16) and narrow.attention.out_proj.weight.shape == (16, 8)
    assert narrow(frames, words).shape == (2, 16)


@pytest.mark.parametrize('width', [None, 8])
def test_cross_attention_is_multihead_attention_with_shared_keys(width):
    """``CrossAttention`` computes nn.MultiheadAttention's output (keys and values repeated for every sample,
    float64) from the same parameters; at an inner width other than C it is that attention with the
    projections to and from the width d."""
    from net.mica import CrossAttention
    torch.manual_seed(0)
    ours = CrossAttention(16, 12, num_heads=4, width=width).double()
    d = ours.width
    mha = torch.nn.MultiheadAttention(d, 4, kdim=12, vdim=12, batch_first=True).double()
    state = {k: v for k, v in ours.state_dict().items()}
    queries, words = torch.randn(3, 5, 16, dtype=torch.float64), torch.randn(7, 12, dtype=torch.float64)
    if width is None:
        mha.load_state_dict(state)                               # nn.MultiheadAttention's names and shapes
        want = mha(queries, words.expand(3, -1, -1), words.expand(3, -1, -1), need_weights=False)[0]
    else:                                                        # queries mapped to d by q_proj, back by out_proj
        with torch.no_grad():
            mha.q_proj_weight.copy_(torch.eye(d))
            mha.k_proj_weight.copy_(ours.k_proj_weight)
            mha.v_proj_weight.copy_(ours.v_proj_weight)
            mha.in_proj_bias.copy_(torch.cat([torch.zeros(d, dtype=torch.float64), ours.in_proj_bias[d:]]))
            mha.out_proj.weight.copy_(torch.eye(d))
            mha.out_proj.bias.zero_()
        q = queries @ ours.q_proj_weight.T + ours.in_proj_bias[:d]
        want = ours.out_proj(mha(q, words.expand(3, -1, -1), words.expand(3, -1, -1), need_weights=False)[0])
    torch.testing.assert_close(ours(queries, words), want, rtol=1e-12, atol=1e-12)


def test_key_encoders_frest_is_momentum_updated():
    torch.manual_seed(0)
    model = MICA(**dict(MICA_ARGS, momentum=0.9))
    with torch.no_grad():
        for p in model.encoder_q.neck.parameters():
            p.add_(torch.randn_like(p))
    q0 = [p.detach().clone() for p in model.encoder_q.neck.parameters()]
    k0 = [p.detach().clone() for p in model.encoder_k.neck.parameters()]
    assert all(not p.requires_grad for p in model.encoder_k.neck.parameters())
    model(*views(k=2), label=LABEL)
    for q, k, k1 in zip(q0, k0, model.encoder_k.neck.parameters()):
        torch.testing.assert_close(k1, 0.9 * k + 0.1 * q)


def test_forward_eval_goes_through_the_neck():
    model = MICA(**dict(MICA_ARGS, pretrain=False)).eval()
    calls = []
    model.encoder_q.neck.register_forward_hook(lambda *a: calls.append(1))
    assert model(torch.randn(2, 3, 20, 20, 1)).shape == (2, 10) and calls == [1]
    assert model(None, torch.randn(2, 3, 20, 20, 1)).shape == (2, 10) and calls == [1, 1]


def test_adaptive_mask_kept_fraction_varies_across_sequences():
    """tau 1 keeps half of every spectrum; at the shipped tau 2 a smooth (random-walk) sequence keeps more
    than a white-noise one (the mask relaxes for clean low-frequency motion, tightens for noise)."""
    torch.manual_seed(0)
    T, V, C = 32, 4, 64
    maps = torch.stack([torch.randn(C, T, V), torch.randn(C, T, V).cumsum(dim=1)])    # sample 0 white, 1 smooth
    spec = torch.fft.rfft(maps, dim=2, norm='ortho')
    half = kept_fraction(FrequencyBlock(C, T, dim='frame', tau=1.0).spectrum_mask(spec, 2), 2)
    torch.testing.assert_close(half, torch.full((2,), 0.5), atol=0.01, rtol=0)
    kept = kept_fraction(FrequencyBlock(C, T, dim='frame', tau=2.0).spectrum_mask(spec, 2), 2)
    assert 0.2 < kept[0] < 0.3                                      # white noise: about 2^-2
    assert kept[1] > kept[0] + 0.03
    for path in glob.glob(os.path.join(ROOT, 'config', '**', '*mica*.yaml'), recursive=True):
        if os.sep + 'reproduce' + os.sep in path:          # plans, not run configs
            continue
        assert load(path)['model_args']['tau_f'] == 2.0, path


def test_shipped_parameter_count():
    t = Model(graph_args={'layout': 'ntu-rgb+d'}).feature_map_shape(50)[1]
    assert t == 13
    assert count_parameters(FreST(256, t, 25)) == 2 * (256 * 256 + 256) + 2 * (13 + 7) * 256 * 2 == 152064
    assert count_parameters(FreST(256, t, 25, decoupling='depthwise')) == 2 * 512 + 2 * (13 + 7) * 256 * 2 == 21504
    assert count_parameters(FreST(256, t, 25, decoupling='none')) == 20480
    cfg = dict(load('config/ntu60/xsub/pretrain_mica.yaml')['model_args'], pretrain=False)     # 50 frames
    encoder = MICA(**cfg).encoder_q
    assert count_parameters(encoder) == 988864 and count_parameters(encoder.neck) == 152064
    # the paper config (64 frames: T' 16, rfft 9 instead of 7; Table 3's depthwise decoupling)
    cfg = dict(load('config/ntu60/xsub.yaml')['model_args'], pretrain=False)
    encoder = MICA(**cfg).encoder_q
    assert count_parameters(encoder.neck) == 2 * 512 + 2 * (13 + 9) * 256 * 2 == 23552
    assert count_parameters(encoder) == 836800 + 23552


def test_every_mica_evaluation_config_builds_the_frest_of_its_pretraining():
    keys = ('frest', 'fres', 'fret', 'global_filter', 'local_filter', 'adaptive_mask', 'tau_f', 'num_frames',
            'decoupling', 'hidden_dim', 'hidden_channels', 'graph_args')
    for pre in glob.glob(os.path.join(ROOT, 'config', '**', 'pretrain_mica*.yaml'), recursive=True):
        suffix = os.path.basename(pre)[len('pretrain_mica'):]
        folder = os.path.dirname(pre)
        trained = load(pre)['model_args']
        for kind in ('linear_eval', 'knn', 'finetune', 'semi10', 'semi1'):
            path = os.path.join(folder, f'{kind}_mica{suffix}')
            if os.path.exists(path):
                ev = load(path)['model_args']
                assert {k: ev.get(k) for k in keys} == {k: trained.get(k) for k in keys}, path


NTU_PKU = ('ntu60/xsub', 'ntu60/xview', 'ntu120/xsub', 'ntu120/xset', 'pkummd/part1', 'pkummd/part2')


@pytest.mark.parametrize('split', NTU_PKU)
def test_recipe_values_of_the_ntu_and_pku_configs(split):
    mica = load(f'config/{split}/pretrain_mica.yaml')
    m = mica['model_args']
    assert (m['queue_size'], m['Temperature'], m['momentum'], m['lambda_kl']) == (32768, 0.2, 0.999, 0.01)   # 5.2
    assert (mica['base_lr'], mica['weight_decay'], mica['num_epoch'], mica['optimizer']) == (0.1, 0.0001, 300, 'SGD')
    assert (m['fm_target'], m['fm_embedding'], m['fm_objective'], m['feature_dim']) == ('text', 'query', 'part_pooled', 384)
    assert m['base_method'] == 'skelemixclr'                     # Tables 2 and 3 measure from SkeleMixCLR
    assert m['hidden_channels'] == 16 and m['tau_t'] < m['tau_s']
    lin = load(f'config/{split}/linear_eval_mica.yaml')
    assert (lin['base_lr'], lin['num_epoch'], lin['step']) == (5.0, 120, [80])
    msm = load(f'config/{split}/pretrain_msmclr.yaml')
    s = msm['model_args']
    assert (s['queue_size'], s['momentum'], s['reduction'], s['diff_mode'], s['ms_loss']) == (32768, 0.999, 2, 'all', 'd3m')
    assert (msm['base_lr'], msm['step'], msm['num_epoch'], msm['weight_decay']) == (0.1, [250], 300, 0.0001)   # 4.2
    assert msm['train_feeder_args']['aug_method'] == 'msmclr'
    lin = load(f'config/{split}/linear_eval_msmclr.yaml')
    assert (lin['base_lr'], lin['num_epoch'], lin['step']) == (3.0, 100, [80])


def test_pku_part2_config_pretrains_on_part1():
    pre = load('config/pkummd/part2/pretrain_mica.yaml')
    assert pre['train_feeder_args']['data_path'] == 'data/pkummd/part1/train_position.npy'
    assert pre['model_args']['num_class'] == 51 and 'pkummd1' in pre['model_args']['text_features']
    lin = load('config/pkummd/part2/linear_eval_mica.yaml')
    assert lin['weights'].startswith(pre['work_dir'])
    assert lin['train_feeder_args']['data_path'] == 'data/pkummd/part2/train_position.npy'
    assert lin['test_feeder_args']['data_path'] == 'data/pkummd/part2/val_position.npy'
    assert lin['model_args']['num_class'] == 41
    own = load('config/pkummd/part2/pretrain_mica_part2only.yaml')
    assert own['train_feeder_args']['data_path'] == 'data/pkummd/part2/train_position.npy'


# ------------------------------------------------------------------------------------------ MICA preprocessing

def test_mica_preprocessing_by_hand():
    """Two joints moving on a line: hip-centred, bone-length scaled, resampled, in [-1, 1]; missing joints
    interpolated; more than 30% missing excludes the sample."""
    layout = get_layout('nw-ucla')
    T, V = 5, 20
    seq = np.zeros((3, T, V, 1))
    for t in range(T):
        seq[0, t, :, 0] = 1.0 + t                       # every joint at x = 1 + t ...
        seq[0, t, 1, 0] = 3.0 + t                       # ... but joint 2 two units to the right
    seq[:, 2, 1, 0] = 0.0                               # joint 2 missing in frame 2: 1 of 100 joints
    out = normalize_sequence_mica(seq, layout, length=9)
    assert out.shape == (3, 9, V, 1) and np.abs(out).max() == pytest.approx(1.0)
    # centred on joint 1 (the hip) -> joint 2 at x = 2 in every frame (frame 2 interpolated); bones (1, 2)
    # and (2, 3) have length 2, the other 17 zero; after any scaling, [-1, 1] puts joint 2 at x = 1
    np.testing.assert_allclose(out[0, :, 1, 0], 1.0, atol=1e-6)
    np.testing.assert_allclose(np.delete(out, 1, axis=2), 0.0, atol=1e-6)
    seq[:, :, :7, 0] = 0.0                               # 35% of person 0's joints missing
    seq[0, :, 7:, 0] += 1.0
    with pytest.raises(IncompleteSkeletonError, match='35.0%'):
        normalize_sequence_mica(seq, layout)


def test_mica_normal_view_jitter_and_rotation_option(tmp_path):
    """Section 5.2's "joint jittering, and random rotation": ``normal_extra_aug`` adds them to every
    normal view after crop and shear (the family's views by default); an unknown name is one line."""
    from conftest import tiny_dataset as make
    from feeder.ntu_feeder import Feeder_dual
    from torchlight.io import UserError
    data, label = make(str(tmp_path), n=4, T=12, num_class=2)
    x = torch.from_numpy(np.load(data)).float()
    plain = Feeder_dual(data, label, shear_amplitude=-1, temperal_padding_ratio=-1)
    assert plain.normal_extra_aug == [] and torch.equal(plain.normal_aug(x), x)
    jitter = Feeder_dual(data, label, shear_amplitude=-1, temperal_padding_ratio=-1,
                         normal_extra_aug=['joint_jitter'], jitter_std=0.05)
    delta = jitter.normal_aug(x) - x
    assert 0.04 < float(delta.std()) < 0.06
    both = Feeder_dual(data, label, shear_amplitude=-1, temperal_padding_ratio=-1,
                       normal_extra_aug=['random_rotate', 'joint_jitter'], jitter_std=0.0)
    assert both.normal_extra_aug == ['joint_jitter', 'random_rotate']            # fixed order
    rotated = both.normal_aug(x)
    assert not torch.allclose(rotated, x)
    torch.testing.assert_close(rotated.norm(dim=1), x.norm(dim=1), rtol=1e-4, atol=1e-4)   # a rotation
    with pytest.raises(UserError, match='normal_extra_aug'):
        Feeder_dual(data, label, normal_extra_aug=['flip'])


def test_named_augmentation_lists_equal_the_digit_codes():
    names = ['random_spatial_flip', 'random_rotate', 'gaus_noise', 'gaus_filter', 'axis_mask']
    assert Feeder_triple.parse_aug_method(names) == Feeder_triple.parse_aug_method('12345')
    assert Feeder_triple.parse_aug_method(list(reversed(names))) == Feeder_triple.parse_aug_method('54321')
    msm = ['random_rotate', 'gaus_noise', 'gaus_filter', 'joint_mask', 'channel_mask', 'random_joint_noise']
    assert Feeder_triple.parse_aug_method(msm) == Feeder_triple.parse_aug_method('msmclr')
    from torchlight.io import UserError
    with pytest.raises(UserError, match='unknown augmentation'):
        Feeder_triple.parse_aug_method(['random_spatial_flip', 'mixup'])
