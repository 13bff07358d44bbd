"""Supervised recognition and CSRE against their reference code (issue 19): the reference graph of
2s-AGCN / CTR-GCN, CTR-GCN's NTU preprocessing and NW-UCLA sampling, the recipes of the shipped configs,
HCN's release widths, CSRE's STFD, its authors' loss (two softmaxes, skipped anchors, (L_s + L_t) / 2),
the processor's loss and schedule, the bone-motion stream."""
import glob
import math
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import ROOT, one_line, require_realdata
from feeder import tools
from feeder.ntu_feeder import Feeder_supervised, ucla_frame_indices, ucla_sample
from feeder.preprocess import translate_sequence_ctrgcn
from net.csre import CSRE
from net.utils.graph import Graph
from net.utils.layouts import get_layout
from processor.recognition import Recognition, logits_from_feature_map
from test_recognition import recognition_args          # tiny NW-UCLA-shaped ST-GCN run (24 samples, 3 classes)
from torchlight.io import UserError, import_class, load_config_file


@pytest.fixture(autouse=True, scope='module')
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ---------------------------------------------------------------- the reference graph (item 4)
# The reference lists (1-based), as printed in CTR-GCN's graph/ntu_rgb_d.py and graph/ucla.py.
NTU_INWARD = [(1, 2), (2, 21), (3, 21), (4, 3), (5, 21), (6, 5), (7, 6), (8, 7), (9, 21), (10, 9), (11, 10),
              (12, 11), (13, 1), (14, 13), (15, 14), (16, 15), (17, 1), (18, 17), (19, 18), (20, 19), (22, 23),
              (23, 8), (24, 25), (25, 12)]
UCLA_INWARD = [(1, 2), (2, 3), (4, 3), (5, 3), (6, 5), (7, 6), (8, 7), (9, 3), (10, 9), (11, 10), (12, 11),
               (13, 1), (14, 13), (15, 14), (16, 15), (17, 1), (18, 17), (19, 18), (20, 19)]


def reference_spatial_graph(inward_1based, num_node):
    """I, column-normalised inward, column-normalised outward, written from the reference's recipe."""
    def links(pairs):
        A = np.zeros((num_node, num_node))
        for i, j in pairs:
            A[j, i] = 1
        return A

    def col_norm(A):
        deg = A.sum(0)
        return A / np.where(deg > 0, deg, 1)[None, :]
    inward = [(i - 1, j - 1) for i, j in inward_1based]
    outward = [(j, i) for i, j in inward]
    return np.stack([np.eye(num_node), col_norm(links(inward)), col_norm(links(outward))])


@pytest.mark.parametrize('layout,inward,V', [('ntu-rgb+d', NTU_INWARD, 25), ('nw-ucla', UCLA_INWARD, 20)])
def test_agcn_and_ctrgcn_adjacency_is_the_reference_construction(layout, inward, V):
    ref = reference_spatial_graph(inward, V)
    A = Graph(layout, 'agcn').A
    np.testing.assert_allclose(A, ref)
    assert np.allclose(np.diagonal(A[0]), 1) and not np.diagonal(A[1]).any() and not np.diagonal(A[2]).any()
    agcn = import_class('net.agcn.Model')(num_class=5, graph_args={'layout': layout}, num_person=1, base_channel=8)
    ctr = import_class('net.ctrgcn.Model')(num_class=5, graph_args={'layout': layout}, num_person=1, base_channel=8)
    np.testing.assert_allclose(agcn.l1.gcn1.A.numpy(), ref, atol=1e-7)              # the default strategy
    np.testing.assert_allclose(ctr.l1.gcn1.PA.detach().numpy(), ref, atol=1e-7)
    # checkpoint names unchanged: the adjacency is no new state-dict key
    spatial = import_class('net.ctrgcn.Model')(num_class=5, graph_args={'layout': layout, 'strategy': 'spatial'},
                                               num_person=1, base_channel=8)
    assert list(spatial.state_dict()) == list(ctr.state_dict())
    assert not np.allclose(spatial.l1.gcn1.PA.detach().numpy(), ref)


# ---------------------------------------------------------------- CTR-GCN's NTU preprocessing (item 1)
def test_ctrgcn_translation_is_one_origin_per_sequence_with_zero_padding():
    rng = np.random.RandomState(0)
    T, V = 40, 25
    seq = rng.randn(3, T, V, 2) + 5.0
    seq[:, :, :, 1] += np.linspace(0, 3, T)[None, :, None]            # global motion of person 2
    seq[:, 10:15, :, 1] = 0                                            # person 2 absent in frames 10-14
    out = translate_sequence_ctrgcn(seq, get_layout('ntu-rgb+d'), 300)
    assert out.shape == (3, 300, V, 2) and out.dtype == np.float32
    origin = seq[:, 0, 1, 0]                                           # joint 2 of person 0, first frame
    ref = seq - origin[:, None, None, None]
    ref[:, 10:15, :, 1] = 0
    np.testing.assert_allclose(out[:, :T], ref, rtol=1e-5, atol=1e-5)
    assert not out[:, T:].any()                                        # zero padding, no resize
    # global motion is kept (the family step recentres every frame and would remove it)
    assert np.ptp(out[0, :T, 1, 1]) > 2.5
    # leading empty frames are cropped: the origin is the first frame in which the main actor is present
    padded = np.concatenate([np.zeros((3, 7, V, 2)), seq], axis=1)
    np.testing.assert_allclose(translate_sequence_ctrgcn(padded, get_layout('ntu-rgb+d'), 300), out, atol=1e-5)


def test_gendata_tools_offer_the_ctrgcn_option(tmp_path):
    from tools import ucla_gendata
    src = tmp_path / 'sqe'
    src.mkdir()
    rng = np.random.RandomState(1)
    import json
    lengths = {'a01_s01_e00_v01': 9, 'a02_s01_e00_v02': 23, 'a03_s01_e00_v03': 15}
    for name, L in lengths.items():
        with open(src / f'{name}.json', 'w') as f:
            json.dump({'file_name': name, 'label': int(name[1:3]), 'skeletons': (rng.randn(L, 20, 3) + 2).tolist()}, f)
    ucla_gendata.main(['--data-path', str(src), '--out-folder', str(tmp_path / 'ctr'), '--preprocess', 'ctrgcn',
                       '--no-progress'])
    train = np.load(tmp_path / 'ctr' / 'ucla' / 'train_position.npy')
    assert train.shape == (2, 3, 23, 20, 1)                            # native lengths, padded to the longest
    assert tools.valid_lengths(torch.from_numpy(train)).tolist() == [9, 23]
    assert np.abs(train[:, :, 0, 1]).max() == 0                        # joint 2 of frame 0 is the origin
    ucla_gendata.main(['--data-path', str(src), '--out-folder', str(tmp_path / 'fam'), '--no-progress'])
    assert np.load(tmp_path / 'fam' / 'ucla' / 'train_position.npy').shape == (2, 3, 50, 20, 1)   # SSL unchanged


def test_ntu_gendata_ctrgcn_on_real_skeletons(tmp_path):
    skeletons = require_realdata('ntu_skeleton_samples')
    from tools import ntu_gendata
    ntu_gendata.main(['--data-path', skeletons, '--dataset', 'ntu60', '--benchmark', 'xsub', '--preprocess', 'ctrgcn',
                      '--out-folder', str(tmp_path), '--no-progress', '--ignored-sample-path'])
    data = np.load(tmp_path / 'ntu60' / 'xsub' / 'train_position.npy')
    raw = np.load(tmp_path / 'ntu60' / 'xsub' / 'train_data.npy')
    assert data.shape[2] == 300 and raw.shape == data.shape
    assert np.abs(data[:, :, 0, 1, 0]).max() == 0                      # one origin: joint 2, first frame
    present = np.any(raw != 0, axis=(1, 3))                            # (N, 300, M)
    first = raw[:, :, 0, 1, 0]
    expected = (raw - first[:, :, None, None, None]) * present[:, None, :, None, :]
    np.testing.assert_allclose(data, expected, atol=1e-5)             # no per-frame centring, no resize


# ---------------------------------------------------------------- CTR-GCN's NW-UCLA sampling (item 2)
def reference_ucla_sample(value, agx, agy, s, idx):
    """The reference NW-UCLA feeder's steps for one clip ``value`` (T, 20, 3), written out in numpy."""
    value = value - value[0, 1, :]
    ax, ay = math.radians(agx), math.radians(agy)
    rx = np.array([[1, 0, 0], [0, math.cos(ax), math.sin(ax)], [0, -math.sin(ax), math.cos(ax)]])
    ry = np.array([[math.cos(ay), 0, -math.sin(ay)], [0, 1, 0], [math.sin(ay), 0, math.cos(ay)]])
    flat = value.reshape(-1, 3) @ (ry @ (rx @ (np.eye(3) * s)))
    flat = (flat - flat.min(0)) / (flat.max(0) - flat.min(0)) * 2 - 1
    return flat.reshape(value.shape)[idx].transpose(2, 0, 1)[..., None]     # (3, window, 20, 1)


def padded_clips(lengths, T=None, seed=0):
    rng = np.random.RandomState(seed)
    T = T or max(lengths)
    x = np.zeros((len(lengths), 3, T, 20, 1), dtype=np.float32)
    for i, L in enumerate(lengths):
        x[i, :, :L] = (rng.randn(3, L, 20, 1) + 3).astype(np.float32)
    return x


def test_ucla_sample_matches_the_reference_feeder():
    lengths = [30, 80, 7]
    x = padded_clips(lengths, T=90)
    angles = torch.tensor([[13., -41.], [-60., 60.], [0., 5.]])
    scales = torch.tensor([0.7, 1.4, 1.0])
    frames = ucla_frame_indices(torch.tensor(lengths), 52, train=True)
    out = ucla_sample(torch.from_numpy(x), 52, train=True, angles=angles, scales=scales, frames=frames)
    for i, L in enumerate(lengths):
        value = x[i, :, :L, :, 0].transpose(1, 2, 0).astype(np.float64)
        ref = reference_ucla_sample(value, angles[i, 0].item(), angles[i, 1].item(), scales[i].item(),
                                    frames[i].numpy())
        np.testing.assert_allclose(out[i].numpy(), ref, atol=1e-4)
    test = ucla_sample(torch.from_numpy(x), 52, train=False)
    for i, L in enumerate(lengths):
        value = x[i, :, :L, :, 0].transpose(1, 2, 0).astype(np.float64)
        ref = reference_ucla_sample(value, 0, 0, 1.0, np.linspace(0, L - 1, 52).astype(int))
        np.testing.assert_allclose(test[i].numpy(), ref, atol=1e-4)


def test_ucla_frame_draw_is_the_reference_multiset_sample():
    torch.manual_seed(0)
    idx = ucla_frame_indices(torch.tensor([5, 200] * 200), 52, train=True)
    assert idx.shape == (400, 52) and (idx[:, 1:] >= idx[:, :-1]).all()
    short, long = idx[0::2], idx[1::2]
    assert short.max() == 4 and short.min() == 0                       # repeats frames of a short clip
    assert long.max() < 200
    # each frame of a 5-frame clip gets ~52/5 of the draws (a multiset of 100 copies of each frame)
    counts = torch.bincount(short.flatten(), minlength=5).float() / 200
    assert torch.allclose(counts, torch.full((5,), 52 / 5), atol=0.6)


def shipped(path):
    return load_config_file(os.path.join(ROOT, path))


def test_ucla_training_crop_actually_varies_the_window(tmp_path):
    """Two draws of the shipped NW-UCLA training feeder on the same clips (random view off, so only the
    temporal sampling is random) give different frames, and differ from the whole evenly-spaced clip.  The
    earlier setting (50-frame data, window 50, crop-resize with a 64-frame minimum) fails this check."""
    lengths = [40, 70, 120, 201]
    data = padded_clips(lengths, T=201)
    data[:, 0] += np.arange(201, dtype=np.float32)[None, :, None, None] * (data[:, 0] != 0)   # time in x
    np.save(tmp_path / 'data.npy', data)
    with open(tmp_path / 'label.pkl', 'wb') as f:
        pickle.dump(([f's{i}' for i in range(4)], [0, 1, 2, 3]), f)
    cfg = shipped('config/ucla/recognition_ctrgcn.yaml')
    args = dict(cfg['train_feeder_args'], data_path=str(tmp_path / 'data.npy'),
                label_path=str(tmp_path / 'label.pkl'), random_view=False)
    feeder = Feeder_supervised(**args)
    raw = torch.from_numpy(data)
    a, b = feeder.views(raw)[0], feeder.views(raw)[0]
    assert a.shape == (4, 3, 52, 20, 1)
    assert all(not torch.allclose(a[i], b[i]) for i in range(4))
    even = Feeder_supervised(**dict(cfg['test_feeder_args'], data_path=args['data_path'],
                                    label_path=args['label_path'])).views(raw)[0]
    assert all(not torch.allclose(a[i], even[i]) for i in range(4))
    assert torch.equal(even, Feeder_supervised(**dict(cfg['test_feeder_args'], data_path=args['data_path'],
                                                       label_path=args['label_path'])).views(raw)[0])
    assert len(feeder) == 4 * cfg['train_feeder_args']['repeat']
    # the earlier NW-UCLA setting (every clip resized to 50 frames): its "random" crop returns the clip unchanged
    fixed = np.ascontiguousarray(data[1:, :, :50])
    np.save(tmp_path / 'd50.npy', fixed)
    with open(tmp_path / 'l50.pkl', 'wb') as f:
        pickle.dump((['a', 'b', 'c'], [0, 1, 2]), f)
    old = Feeder_supervised(data_path=str(tmp_path / 'd50.npy'), label_path=str(tmp_path / 'l50.pkl'),
                            window_size=50, p_interval=[0.5, 1])
    x50 = torch.from_numpy(fixed)
    assert torch.allclose(old.views(x50)[0], x50, atol=1e-5)


# ---------------------------------------------------------------- recipes (items 3, 5)
def recognition_configs(encoder):
    paths = [p for p in glob.glob(os.path.join(ROOT, 'config', '**', f'recognition_{encoder}*.yaml'), recursive=True)
             if '_small' not in os.path.basename(p)]      # the small-set CPU recipe (config/ucla/*_small*) is not a paper config
    return sorted(p for p in paths if os.path.basename(p).split('_')[1].split('.')[0] == encoder)


@pytest.mark.parametrize('encoder', ['stgcn', 'agcn', 'ctrgcn', 'hcn'])
def test_recognition_recipes(encoder):
    paths = recognition_configs(encoder)
    assert len(paths) == 5 * 2 * 4                 # 5 benchmarks x with/without CSRE x 4 streams
    for path in paths:
        cfg, ucla = load_config_file(path), '/ucla/' in path
        tr, te = cfg['train_feeder_args'], cfg['test_feeder_args']
        assert tr['data_path'].startswith('data/ctrgcn/') and te['data_path'].startswith('data/ctrgcn/')
        if ucla:
            assert (tr['sampling'], tr['window_size'], tr['ucla_train']) == ('ucla', 52, True)
            assert (te['sampling'], te['window_size'], te['ucla_train']) == ('ucla', 52, False)
        else:
            assert (tr['window_size'], tr['p_interval'], te['p_interval']) == (64, [0.5, 1], [0.95])
        if encoder in ('agcn', 'ctrgcn'):
            assert cfg['model_args']['graph_args']['strategy'] == 'agcn'
        if encoder == 'hcn':
            assert (cfg['optimizer'], cfg['base_lr'], cfg['weight_decay']) == ('Adam', 0.001, 0.0001)
            assert (cfg['lr_schedule'], cfg['lr_decay_rate'], cfg['num_epoch']) == ('exponential', 0.99, 400)
            assert (cfg['warm_up_epoch'], cfg['step'], cfg['clip_grad_norm'], cfg['batch_size']) == (0, [], 32.0, 64)
            m = cfg['model_args']
            assert (m['window_size'], m['out_channel'], m['fc_hidden']) == (52 if ucla else 64, 64, 512)
            assert m['window_size'] == tr['window_size'] and 'repeat' not in tr
            continue
        assert (cfg['optimizer'], cfg['nesterov'], cfg['base_lr'], cfg['num_epoch']) == ('SGD', True, 0.1, 65)
        assert (cfg['warm_up_epoch'], cfg['warm_up']) == (5, 'epoch')
        if ucla:       # CTR-GCN's config/ucla/default.yaml
            assert (cfg['weight_decay'], cfg['step'], cfg['batch_size'], tr['repeat']) == (0.0001, [50], 16, 5)
            assert tr['random_view'] is True
        else:
            assert (cfg['weight_decay'], cfg['step'], cfg['batch_size']) == (0.0004, [35, 55], 64)
            assert tr['random_rot'] is True


def test_hcn_release_widths_and_parameter_count():
    hcn = import_class('net.hcn.Model')(num_class=60)
    assert hcn.conv2.out_channels == 64 and hcn.fc7[0].out_features == 512
    assert sum(p.numel() for p in hcn.parameters()) == 2_647_868          # 2.65 M
    small = import_class('net.hcn.Model')(num_class=60, conv2_channel=32, fc_hidden=256)   # the earlier widths
    assert sum(p.numel() for p in small.parameters()) < 1.1e6


# ---------------------------------------------------------------- CSRE: shipped values (item 6)
CSRE_SHIPPED = dict(embed_dim=256, reduction=8, num_positives=128, num_hard_negatives=512, num_random_negatives=512,
                    positive_sampling='H', negative_sampling='R+H', negative_softmax='separate',
                    min_candidates='full', bank_update='before', temperature=0.8, loss_weight=1.0,
                    branch_reduction='mean', spatial=True, temporal=True, global_contrast=False)


def test_shipped_csre_values_are_the_authors():
    import inspect
    defaults = {k: v.default for k, v in inspect.signature(CSRE).parameters.items() if k in CSRE_SHIPPED}
    paths = [p for p in glob.glob(os.path.join(ROOT, 'config', '**', 'recognition_*csre*.yaml'), recursive=True)
             if '_small' not in os.path.basename(p)]      # the small-set CPU recipe is not the authors' values
    mine = [p for p in paths if os.path.basename(p).split('_')[1] in ('stgcn', 'agcn', 'ctrgcn', 'hcn')]
    assert len(mine) == 5 * 4 * 4
    for path in mine:
        cfg = load_config_file(path)
        assert cfg['train_head'] == 'net.csre.CSRE' and cfg['train_head_args'] == CSRE_SHIPPED, path


# ---------------------------------------------------------------- CSRE: STFD (eqs. 4-5) and M = 2
def test_stfd_spatial_ignores_frame_order_and_temporal_ignores_joint_order():
    torch.manual_seed(0)
    head = CSRE(16, 25, num_samples=8, embed_dim=12, num_frames=6)
    fmap = torch.randn(2, 16, 6, 25)
    base = head.decompose(fmap, 1)
    frames, joints = torch.randperm(6), torch.randperm(25)
    by_frames = head.decompose(fmap[:, :, frames], 1)
    by_joints = head.decompose(fmap[:, :, :, joints], 1)
    assert torch.allclose(by_frames['s'], base['s'], atol=1e-6)           # spatial: temporal pooling first
    assert torch.allclose(by_joints['t'], base['t'], atol=1e-6)           # temporal: spatial pooling first
    assert not torch.allclose(by_frames['t'], base['t'], atol=1e-3)
    assert not torch.allclose(by_joints['s'], base['s'], atol=1e-3)
    assert head.reduce_s.out_channels == 16 // 8                          # reduction 8 (STD_unit)


def test_two_persons_are_averaged_before_stfd():
    torch.manual_seed(1)
    head = CSRE(8, 25, num_samples=8, embed_dim=12, num_frames=4, reduction=2)
    fmap = torch.randn(3 * 2, 8, 4, 25)                                   # N = 3, M = 2 folded in the batch
    two = head.decompose(fmap, 2)
    mean = head.decompose(fmap.view(3, 2, 8, 4, 25).mean(1), 1)
    for b in two:
        assert two[b].shape == (3, 12) and torch.allclose(two[b], mean[b], atol=1e-6)
    # the authors project each person and average the projections: the same embedding (STFD is affine)
    xs = head.proj_s(head.reduce_s(fmap.mean(2)).flatten(1)).view(3, 2, -1).mean(1)
    assert torch.allclose(F.normalize(xs, dim=1), two['s'], atol=1e-6)
    with pytest.raises(ValueError):
        head.decompose(torch.randn(5, 8, 4, 25), 2)


# ---------------------------------------------------------------- CSRE: the authors' loss
def authors_contrast(anchor, bank, bank_label, label, P, Q, tau, rand_idx):
    """The authors' ContrastLoss on a written bank, in plain loops: per anchor with >= P positives and
    >= Q negatives, P rows [hardest positive_j, Q hardest negatives] and P rows [positive_j, the random
    negatives ``rand_idx[i]``], cross-entropy with target 0, mean over all rows."""
    rows = []
    for i in range(anchor.size(0)):
        sim = bank @ anchor[i]
        pos = sim[bank_label == label[i]]
        neg_rows = torch.nonzero(bank_label != label[i]).flatten()
        if pos.numel() < P or neg_rows.numel() < Q:
            continue
        hard_pos = pos.sort().values[:P]
        hard_neg = sim[neg_rows].sort(descending=True).values[:Q]
        rand_neg = sim[rand_idx[i]]
        for p in hard_pos:
            rows.append(torch.cat([p.view(1), hard_neg]))
        for p in hard_pos:
            rows.append(torch.cat([p.view(1), rand_neg]))
    if not rows:
        return torch.zeros(())
    logits = torch.stack(rows) / tau
    return F.cross_entropy(logits, torch.zeros(len(rows), dtype=torch.long))


def test_contrast_is_the_authors_two_softmax_loss_with_skipped_anchors():
    torch.manual_seed(3)
    K, D, P, Q = 60, 8, 4, 6
    head = CSRE(8, 25, num_samples=K, embed_dim=D, num_frames=4, num_positives=P, num_hard_negatives=Q,
                num_random_negatives=Q, temperature=0.7, temporal=False)
    labels = torch.cat([torch.zeros(30), torch.ones(27), torch.full((3,), 2.)]).long()   # class 2: 3 rows
    bank = F.normalize(torch.randn(K, D), dim=1)
    head.update_banks({'s': bank}, labels, torch.arange(K))
    anchor = F.normalize(torch.randn(4, D), dim=1)
    a_label = torch.tensor([0, 1, 2, 0])                                 # the class-2 anchor is skipped
    torch.manual_seed(7)
    pi, pv, ni, nv, sizes = head.sample(anchor, a_label, torch.arange(4), head.bank_s, return_groups=True)
    assert sizes == [Q, Q] and pv[2].sum() == 0 and nv[2].sum() == 0 and pv[[0, 1, 3]].all()
    rand_idx = ni[:, Q:]
    torch.manual_seed(7)
    loss, n = head.contrast(anchor, a_label, torch.arange(4), 's')
    ref = authors_contrast(anchor, bank, labels, a_label, P, Q, 0.7, rand_idx)
    assert n == 3 and torch.allclose(loss, ref, atol=1e-5)
    # random negatives come from every negative (a hard one may repeat), hard ones are the most similar
    sim = anchor @ bank.t()
    for i in (0, 1, 3):
        negs = set(torch.nonzero(labels != a_label[i]).flatten().tolist())
        assert set(ni[i, :Q].tolist()) == set(sim[i].masked_fill(labels == a_label[i], -9).topk(Q).indices.tolist())
        assert set(ni[i, Q:].tolist()) <= negs


def test_bank_is_written_before_the_contrast_and_copies_get_their_own_rows():
    head = CSRE(8, 25, num_samples=5, embed_dim=8, num_frames=4, num_positives=1, num_hard_negatives=1,
                num_random_negatives=1, bank_copies=3)
    assert head.bank_s.shape == (15, 8)
    fmap, lab = torch.randn(2, 8, 4, 25), torch.tensor([0, 1])
    out = head(fmap, 1, lab, torch.tensor([0, 1]))                      # empty bank before: written first
    assert out['bank_filled'] == 2 and out['num_anchors'] == 2         # own fresh entry is the positive
    head(fmap, 1, lab, torch.tensor([0, 1]))
    head(fmap, 1, lab, torch.tensor([0, 1]))
    head(fmap, 1, lab, torch.tensor([0, 1]))
    assert head.bank_label.tolist() == [0, 1, -1, -1, -1, 0, 1, -1, -1, -1, 0, 1, -1, -1, -1]
    assert head.bank_writes[:2].tolist() == [4, 4]


def test_branch_losses_are_averaged_and_weighted():
    torch.manual_seed(0)
    head = CSRE(8, 25, num_samples=12, embed_dim=8, num_frames=4, reduction=2, num_positives=2,
                num_hard_negatives=3, num_random_negatives=3, loss_weight=0.3)
    fmap, lab = torch.randn(12, 8, 4, 25), torch.arange(12) % 3
    out = head(fmap, 1, lab, torch.arange(12))
    assert out['num_anchors'] == 12 and out['loss_s'] > 0 and out['loss_t'] > 0
    assert torch.allclose(out['loss'], 0.3 * (out['loss_s'] + out['loss_t']) / 2)


# ---------------------------------------------------------------- CSRE with every encoder
ENCODERS = {
    'net.st_gcn.Model': dict(hidden_channels=4, hidden_dim=16, graph_args={'layout': 'ntu-rgb+d', 'strategy': 'spatial'}),
    'net.agcn.Model': dict(base_channel=8, num_person=2),
    'net.ctrgcn.Model': dict(base_channel=8, num_person=2),
    'net.hcn.Model': dict(out_channel=8, window_size=32, num_person=2),
}


@pytest.mark.parametrize('name', list(ENCODERS))
def test_csre_trains_with_every_encoder(name):
    torch.manual_seed(0)
    enc = import_class(name)(in_channels=3, num_class=3, **ENCODERS[name])
    x, lab, M = torch.randn(6, 3, 32, 25, 2), torch.tensor([0, 1, 2, 0, 1, 2]), 2
    C, T, V = enc.feature_map_shape(32)
    assert V == 25                                                        # a map with a joint axis
    head = CSRE(C, V, num_samples=6, num_class=3, embed_dim=16, num_frames=T, num_positives=1,
                num_hard_negatives=2, num_random_negatives=2)
    enc.eval()
    fmap = enc.encode(x)
    assert torch.allclose(logits_from_feature_map(enc, fmap, M), enc(x), atol=1e-5)   # encode -> head = forward
    if name == 'net.hcn.Model':        # the attach point: conv2 / conv2m outputs, before the transpose
        xs = x.permute(0, 4, 1, 2, 3).reshape(12, 3, 32, 25)
        assert torch.allclose(fmap[:, :enc.conv2_channel], enc.conv2(enc.conv1(xs)), atol=1e-5)
    enc.train()
    head.train()
    fmap = enc.encode(x)
    out = head(fmap, M, lab, torch.arange(6))
    loss = F.cross_entropy(logits_from_feature_map(enc, fmap, M), lab) + out['loss']
    assert out['num_anchors'] == 6 and out['loss'] > 0
    enc.zero_grad()
    out['loss'].backward(retain_graph=True)                              # the head's gradient alone
    first = next(p for n, p in enc.named_parameters() if p.requires_grad and 'fc' not in n and p.dim() > 1)
    assert first.grad is not None and first.grad.abs().sum() > 0
    loss.backward()


# ---------------------------------------------------------------- the processor (items 6, 7, 9)
def test_processor_loss_is_ce_plus_weighted_head_loss(tmp_path):
    head = ['--train_head', 'net.csre.CSRE', '--train_head_args',
            'num_positives=2,num_hard_negatives=4,num_random_negatives=4,loss_weight=0.3']
    proc = Recognition(recognition_args(tmp_path, head))
    seen = []
    step = proc.backward_step

    def record(loss):
        seen.append(float(loss.detach()))
        return step(loss)
    proc.backward_step = record
    proc.start()
    info = proc.epoch_info
    assert info['loss_s'] > 0 and info['loss_t'] > 0
    assert math.isclose(info['loss'], info['loss_ce'] + 0.3 * (info['loss_s'] + info['loss_t']) / 2, rel_tol=1e-5)
    assert math.isclose(info['loss'], sum(seen) / len(seen), rel_tol=1e-5)
    assert proc.head.bank_copies == 1 and proc.head.bank_size == 24


def test_warm_up_per_epoch_and_hcn_schedule(tmp_path):
    proc = Recognition(recognition_args(tmp_path, ['--warm_up_epoch', '5', '--num_epoch', '65',
                                                   '--step', '35', '55']))
    lr = proc.learning_rate
    assert [lr(e, 0.7) for e in range(5)] == pytest.approx([0.02, 0.04, 0.06, 0.08, 0.1])   # (epoch + 1) / 5
    assert lr(5, 0.0) == pytest.approx(0.1) and lr(35) == pytest.approx(0.01) and lr(60) == pytest.approx(0.001)
    os.makedirs(tmp_path / 'i')
    it = Recognition(recognition_args(tmp_path / 'i', ['--warm_up_epoch', '5', '--warm_up', 'iteration']))
    assert it.learning_rate(0, 0.5) == pytest.approx(0.01)
    os.makedirs(tmp_path / 'h')
    hcn = Recognition(recognition_args(tmp_path / 'h', ['--optimizer', 'Adam', '--base_lr', '0.001', '--lr_schedule',
                                                        'exponential', '--lr_decay_rate', '0.99',
                                                        '--clip_grad_norm', '32']))
    assert hcn.learning_rate(0) == pytest.approx(1e-3) and hcn.learning_rate(100) == pytest.approx(1e-3 * 0.99 ** 100)
    hcn.start()                                                          # the clipped step runs


def test_repeat_and_bone_motion_stream(tmp_path):
    head = ['--train_head', 'net.csre.CSRE', '--train_head_args', 'num_positives=2,num_hard_negatives=4,'
            'num_random_negatives=4', '--stream', 'bone_motion']
    args = recognition_args(tmp_path, head)
    args[args.index('--train_feeder_args') + 1] += ',repeat=3'
    proc = Recognition(args)
    assert len(proc.train_feeder) == 72 and proc.head.bank_copies == 3 and proc.head.bank_size == 72
    proc.start()
    x = torch.randn(2, 3, 8, 20, 1)
    parents = get_layout('nw-ucla').parents
    assert torch.allclose(tools.to_stream(x, 'bone_motion', parents),
                          tools.to_motion(tools.to_bone(x, parents)))


def test_ensemble_four_stream_preset():
    from tools.ensemble import default_weights
    assert default_weights(4) == [0.6, 0.6, 0.4, 0.4] and default_weights(3) == [0.6, 0.6, 0.4]


# ---------------------------------------------------------------- bad values: one line naming key and value
@pytest.mark.parametrize('extra,needles', [
    (['--train_head_args', 'negative_softmax=both'], ['negative_softmax', 'both']),
    (['--train_head_args', 'min_candidates=some'], ['min_candidates', 'some']),
    (['--train_head_args', 'reduction=0'], ['reduction', '0']),
    (['--train_feeder_args', 'sampling=random'], ['sampling', 'random']),
    (['--train_feeder_args', 'repeat=0'], ['repeat', '0']),
    (['--warm_up', 'step'], ['warm_up', 'step']),
    (['--lr_schedule', 'linear'], ['lr_schedule', 'linear']),
    (['--clip_grad_norm', '-1'], ['clip_grad_norm', '-1']),
])
def test_bad_values_are_one_line_errors(tmp_path, extra, needles):
    key, value = extra
    args = recognition_args(tmp_path, ['--train_head', 'net.csre.CSRE'])
    if key in args:
        args[args.index(key) + 1] += ',' + value
    else:
        args += [key, value]
    with pytest.raises(UserError) as error:
        Recognition(args)
    one_line(str(error.value), *needles)


def test_bad_graph_strategy_is_a_one_line_error_from_main(tmp_path):
    args = recognition_args(tmp_path)
    args[args.index('--model_args') + 1] += ',graph_args.strategy=ctrgcn'
    proc = subprocess.run([sys.executable, 'main.py', 'recognition', *args], cwd=ROOT, capture_output=True,
                          text=True, env=dict(os.environ, OMP_NUM_THREADS='1'))
    assert proc.returncode != 0
    one_line(proc.stderr, 'strategy', 'ctrgcn', 'agcn')
