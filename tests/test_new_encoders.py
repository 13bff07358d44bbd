"""Hyperformer (net.hyperformer) and BlockGCN (net.blockgcn): the project's encoder interface, the
releases' parameter counts, the hop-distance and persistence-diagram pieces, CSRE on top, one-line errors,
and a two-iteration ``recognition`` run of each shipped NW-UCLA config."""
import glob
import os
import pickle
from itertools import combinations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from main import main
from net import blockgcn, hyperformer
from net.csre import CSRE
from net.utils.graph import Graph
from net.utils.layouts import get_layout
from torchlight.io import load_config_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAYOUTS = {'ntu-rgb+d': 25, 'nw-ucla': 20}
N, T, NUM_CLASS = 2, 12, 5
# The release's configs: the part of each NTU / NW-UCLA joint, and the release's NTU bones (InfoGCN's
# graph: hand tip and thumb both hang on the hand joint), 1-based.
RELEASE_NTU_JOINT_LABEL = [0, 4, 2, 2, 2, 2, 1, 1, 2, 2, 1, 1, 2, 3, 3, 3, 2, 3, 3, 3, 1, 0, 1, 0, 1]
RELEASE_UCLA_JOINT_LABEL = [0] * 4 + [1] * 8 + [2] * 8
RELEASE_NTU_BONES = [(1, 2), (2, 21), (3, 21), (4, 3), (5, 21), (6, 5), (7, 6), (8, 7), (9, 21), (10, 9),
                     (11, 10), (12, 11), (13, 1), (14, 13), (15, 14), (16, 15), (17, 1), (18, 17), (19, 18),
                     (20, 19), (22, 8), (23, 8), (24, 12), (25, 12)]
RELEASE_NTU_LAYOUT = {'name': 'ntu-release', 'num_node': 25, 'center': 20,
                      'edges': [[i - 1, j - 1] for i, j in RELEASE_NTU_BONES]}


def small(name, layout, M, **extra):
    """Narrow models for the interface tests (the full widths are checked by the parameter counts)."""
    graph_args = {'layout': layout}
    if name == 'hyperformer':
        return hyperformer.Model(num_class=NUM_CLASS, graph_args=graph_args, num_person=M, num_heads=2,
                                 head_channels=6, **extra)
    return blockgcn.Model(num_class=NUM_CLASS, graph_args=graph_args, num_person=M, base_channel=16, **extra)


def count(model):
    return sum(p.numel() for p in model.parameters())


def first_layer_weights(name, model):
    if name == 'hyperformer':
        # q, k and the part embedding only enter the attention, which is scaled by alpha = 0 at init
        return [model.l1.vit1.attn.kv.weight, model.l1.vit1.skip_proj.weight]
    return [model.to_joint_embedding.weight, model.l1.gcn1.fc2[0].weight]


# ---------------------------------------------------------------- interface
@pytest.mark.parametrize('name', ['hyperformer', 'blockgcn'])
@pytest.mark.parametrize('layout', list(LAYOUTS))
@pytest.mark.parametrize('M', [1, 2])
def test_interface_shapes_and_gradient(name, layout, M):
    torch.manual_seed(0)
    V = LAYOUTS[layout]
    model = small(name, layout, M)
    assert model.num_node == V and model.fc.out_features == NUM_CLASS
    x = torch.randn(N, 3, T, V, M)
    model.train()
    fmap = model.encode(x)
    assert fmap.shape == (N * M, model.feature_dim, (((T + 1) // 2) + 1) // 2, V)
    out = model(x)
    assert out.shape == (N, NUM_CLASS)
    out.sum().backward()
    assert all(w.grad is not None and w.grad.abs().sum() > 0 for w in first_layer_weights(name, model))
    model.eval()
    with torch.no_grad():
        logits = model(x)
        assert torch.allclose(logits, model.fc(model.pool(model.encode(x), M)), atol=1e-5)
        assert torch.allclose(model.forward_features(x), model.pool(model.encode(x), M), atol=1e-6)


@pytest.mark.parametrize('name', ['hyperformer', 'blockgcn'])
def test_wrong_input_is_a_one_line_error(name):
    model = small(name, 'nw-ucla', 1)
    with pytest.raises(ValueError, match='V=20') as err:
        model(torch.randn(1, 3, T, 25, 1))
    assert '\n' not in str(err.value)


# ---------------------------------------------------------------- parameter counts (the releases)
# Measured by building the releases' Model classes (model/Hyperformer.py, model/BlockGCN.py) with their
# configs' arguments; the state-dict names and shapes were the same as here.
@pytest.mark.parametrize('num_class,hyper,block', [(60, 2_729_194, 1_372_780), (120, 2_742_214, 1_388_200)])
def test_ntu_parameter_counts_equal_the_releases(num_class, hyper, block):
    h = hyperformer.Model(num_class=num_class, graph_args={'layout': RELEASE_NTU_LAYOUT},
                          joint_label=RELEASE_NTU_JOINT_LABEL)
    b = blockgcn.Model(num_class=num_class, graph_args={'layout': RELEASE_NTU_LAYOUT})
    assert count(h) == hyper and count(b) == block
    # the papers' rounded numbers (Hyperformer README 2.6 M, BlockGCN 1.3 M) within their rounding range
    if num_class == 60:
        assert 2.6e6 <= count(h) < 2.8e6 and 1.3e6 <= count(b) < 1.4e6
    # the project's NTU layout (CTR-GCN's bones) has a diameter of 12 hops instead of 11: one more row of
    # the hop embeddings per unit
    assert count(hyperformer.Model(num_class=num_class, joint_label=RELEASE_NTU_JOINT_LABEL)) == hyper + 10 * 216
    assert count(blockgcn.Model(num_class=num_class)) == block + 10 * 3 * 8


def test_ucla_parameter_counts_equal_the_releases():
    h = hyperformer.Model(num_class=10, num_person=1, graph_args={'layout': 'nw-ucla'},
                          joint_label=RELEASE_UCLA_JOINT_LABEL)
    assert count(h) == 2_695_754
    assert count(blockgcn.Model(num_class=10, num_person=1, graph_args={'layout': 'nw-ucla'})) == 1_297_370
    # the body parts change no parameter count
    assert count(hyperformer.Model(num_class=10, num_person=1, graph_args={'layout': 'nw-ucla'})) == 2_695_754


def test_release_parameter_names():
    h = hyperformer.Model(num_class=60).state_dict()
    for key in ('data_bn.running_mean', 'l1.vit1.norm1.weight', 'l1.vit1.attn.rpe', 'l1.vit1.attn.w1',
                'l1.vit1.attn.outer', 'l1.vit1.attn.alpha', 'l1.vit1.attn.kv.weight', 'l1.vit1.attn.q.weight',
                'l1.vit1.attn.proj.bias', 'l1.vit1.skip_proj.weight', 'l1.vit1.pe_proj.weight',
                'l1.residual.conv.weight', 'l5.residual.bn.weight', 'l2.tcn1.branches.3.0.weight', 'fc.weight'):
        assert key in h, key
    assert 'l2.vit1.skip_proj.weight' not in h and not any('hops' in k or 'part_mean' in k for k in h)
    b = blockgcn.Model(num_class=60).state_dict()
    for key in ('to_joint_embedding.weight', 'pos_embedding', 'data_bn.running_var', 'l1.gcn1.fc1',
                'l1.gcn1.fc2.2.weight', 'l1.gcn1.rpe', 'l5.gcn1.down.0.weight', 'l5.residual.conv.weight',
                'l1.tcn1.branches.0.3.conv.weight', 't0.mlp.weight', 't9.bn.running_mean', 'topo.pl.centres',
                'topo.pl.sharpness', 'fc.bias'):
        assert key in b, key
    assert b['l1.gcn1.fc1'].shape == (3, 8, 25, 25) and b['data_bn.running_mean'].shape == (2 * 128 * 25,)
    assert not any(k.startswith('t') and k[1:2].isdigit() for k in
                   blockgcn.Model(num_class=60, topology=False).state_dict())


# ---------------------------------------------------------------- pieces against the releases' algorithms
def release_hops(A):
    """The releases' hop matrix: boolean powers of the binarised A.sum(0), differences of successive
    reachability masks weighted by their hop count."""
    V = A.shape[-1]
    h1 = (A.sum(0) != 0).astype(float)
    h = [np.eye(V), h1]
    for _ in range(2, V):
        h.append(((h[-1] @ h1.T) != 0).astype(float))
    hops = np.zeros((V, V))
    for i in range(V - 1, 0, -1):
        if np.any(h[i] - h[i - 1]):
            hops += i * (h[i] - h[i - 1])
    return hops


@pytest.mark.parametrize('layout', ['ntu-rgb+d', 'nw-ucla', RELEASE_NTU_LAYOUT])
def test_hop_matrix_equals_the_release_construction(layout):
    graph = Graph(layout=layout)
    V = graph.num_node
    A = np.zeros((3, V, V))                  # I, inward, outward as in the CTR-GCN-style graph
    A[0] = np.eye(V)
    for i, j in graph.layout.edges:
        A[1, j, i] = A[2, i, j] = 1
    assert np.array_equal(hyperformer.hop_matrix(graph).numpy(), release_hops(A))
    diameter = {'ntu-rgb+d': 12, 'nw-ucla': 10, 'ntu-release': 11}[graph.layout.name]
    assert int(hyperformer.hop_matrix(graph).max()) == diameter


def test_mst_edges_equal_brute_force_kruskal():
    torch.manual_seed(0)
    pts = torch.rand(3, 9, 4)
    dist = torch.cdist(pts, pts)
    got = blockgcn.mst_edge_lengths(dist)
    for b in range(3):
        parent = list(range(9))

        def root(i):
            while parent[i] != i:
                i = parent[i]
            return i
        lengths = []
        for d, i, j in sorted((float(dist[b, i, j]), i, j) for i, j in combinations(range(9), 2)):
            if root(i) != root(j):
                parent[root(i)] = root(j)
                lengths.append(d)
        assert np.allclose(sorted(got[b].tolist()), lengths, atol=1e-6)


def test_structure_element_layer_formula():
    layer = blockgcn.StructureElementLayer(3)
    diagram = torch.tensor([[[0.0, 0.2], [0.0, 0.7]]])
    c, s = layer.centres.detach(), layer.sharpness.detach() ** 2
    want = sum(torch.exp(-(s[:, 0] * (c[:, 0] - b) ** 2 + s[:, 1] * (c[:, 1] - d) ** 2)) for b, d in diagram[0])
    assert torch.allclose(layer(diagram)[0], want)


def test_topology_rows_follow_the_sample_of_each_person():
    torch.manual_seed(0)
    model = small('blockgcn', 'ntu-rgb+d', 2).eval()
    x = torch.randn(3, 3, T, 25, 2)
    feat = model.topo(x.permute(0, 4, 1, 2, 3))
    assert feat.shape == (3, 64) and torch.isfinite(feat).all()
    rows = model.t0(feat, 2)[:, :, 0, 0]
    assert torch.equal(rows[0], rows[1]) and torch.equal(rows[4], rows[5]) and not torch.equal(rows[1], rows[2])
    # all-zero input (the dummy pass that sizes CSRE) stays finite
    assert torch.isfinite(model.encode(torch.zeros(1, 3, T, 25, 2))).all()
    # one sample of one person in training mode: the topology BN uses its running statistics
    one = small('blockgcn', 'nw-ucla', 1).train()
    assert one(torch.randn(1, 3, T, 20, 1)).shape == (1, NUM_CLASS)


# ---------------------------------------------------------------- body parts from the layout's data
def test_hyperformer_parts_come_from_the_layout():
    for layout in LAYOUTS:
        lay = get_layout(layout)
        label = hyperformer.Model(num_class=3, graph_args={'layout': layout}, num_heads=2,
                                  head_channels=6).joint_label
        assert all(label[j] == g for g, group in enumerate(lay.bodies) for j in group)
    custom = {'name': 'chain4', 'num_node': 4, 'edges': [[0, 1], [1, 2], [2, 3]], 'center': 1,
              'bodies': [[0, 1], [2, 3]]}
    model = hyperformer.Model(num_class=3, graph_args={'layout': custom}, num_person=1, num_heads=2,
                              head_channels=6)
    assert model.joint_label == [0, 0, 1, 1] and model(torch.randn(2, 3, 8, 4, 1)).shape == (2, 3)


@pytest.mark.parametrize('kwargs,needle', [
    ({'joint_label': [0, 1]}, 'model_args.joint_label='),
    ({'joint_label': [0] * 19 + [2]}, 'part indices [1]'),
    ({'num_heads': 0}, 'model_args.num_heads=0'),
    ({'head_channels': 5, 'num_heads': 2}, 'divisible by'),
    ({'graph_args': {'layout': {'name': 'nobody', 'num_node': 3, 'edges': [[0, 1], [1, 2]], 'center': 1}}},
     "layout 'nobody' has no 'bodies'"),
])
def test_hyperformer_bad_values_name_key_and_value(kwargs, needle):
    kwargs = {'graph_args': {'layout': 'nw-ucla'}, 'num_person': 1, **kwargs}
    with pytest.raises(ValueError) as err:
        hyperformer.Model(num_class=3, **kwargs)
    assert needle in str(err.value) and '\n' not in str(err.value)


@pytest.mark.parametrize('kwargs,needle', [({'base_channel': 0}, 'model_args.base_channel=0'),
                                           ({'base_channel': 18}, 'model_args.base_channel=18'),
                                           ({'base_channel': 20}, 'model_args.base_channel=20'),
                                           ({'topology': 'yes'}, "model_args.topology='yes'"),
                                           ({'drop_out': 1.5}, 'model_args.drop_out=1.5'),
                                           ({'drop_out': 'x'}, "model_args.drop_out='x'")])
def test_blockgcn_bad_values_name_key_and_value(kwargs, needle):
    with pytest.raises(ValueError) as err:
        blockgcn.Model(num_class=3, **kwargs)
    assert needle in str(err.value) and '\n' not in str(err.value)


# ---------------------------------------------------------------- with CSRE
@pytest.mark.parametrize('name', ['hyperformer', 'blockgcn'])
@pytest.mark.parametrize('M', [1, 2])
def test_csre_gradient_reaches_head_and_encoder(name, M):
    torch.manual_seed(0)
    layout = 'ntu-rgb+d' if M == 2 else 'nw-ucla'
    V = LAYOUTS[layout]
    enc = small(name, layout, M).train()
    C, Tp, Vp = enc.feature_map_shape(16)
    assert (C, Tp, Vp) == (enc.feature_dim, 4, V)
    head = CSRE(C, V, num_samples=16, num_class=4, embed_dim=16, num_frames=Tp, num_positives=2,
                num_hard_negatives=4, num_random_negatives=4).train()
    x = torch.randn(16, 3, 16, V, M)
    label = torch.arange(16) % 4
    with torch.no_grad():
        head(enc.encode(x), M, label, torch.arange(16))            # fill the banks
    fmap = enc.encode(x[:8])
    assert fmap.shape == (8 * M, C, Tp, V)
    out = head(fmap, M, label[:8], torch.arange(8))
    assert out['loss'] > 0
    out['loss'].backward()                                          # the head's loss alone
    assert head.proj_s.weight.grad.abs().sum() > 0 and head.proj_t.weight.grad.abs().sum() > 0
    assert all(w.grad is not None and w.grad.abs().sum() > 0 for w in first_layer_weights(name, enc))
    logits = enc.fc(enc.pool(enc.encode(x[:8]), M))
    assert logits.shape == (8, NUM_CLASS) and torch.isfinite(F.cross_entropy(logits, label[:8]))


# ---------------------------------------------------------------- configs and main.py
CONFIGS = sorted(glob.glob(os.path.join(ROOT, 'config', '*', 'recognition_hyperformer*.yaml'))
                 + glob.glob(os.path.join(ROOT, 'config', '*', '*', 'recognition_hyperformer*.yaml'))
                 + glob.glob(os.path.join(ROOT, 'config', '*', 'recognition_blockgcn*.yaml'))
                 + glob.glob(os.path.join(ROOT, 'config', '*', '*', 'recognition_blockgcn*.yaml')))


def test_every_benchmark_with_ctrgcn_has_both_encoders_with_and_without_csre():
    for ctr in glob.glob(os.path.join(ROOT, 'config', '**', 'recognition_ctrgcn.yaml'), recursive=True):
        folder = os.path.dirname(ctr)
        for stem in ('hyperformer', 'hyperformer_csre', 'blockgcn', 'blockgcn_csre'):
            assert os.path.exists(os.path.join(folder, f'recognition_{stem}.yaml')), (folder, stem)
    assert len(CONFIGS) == 20


@pytest.mark.parametrize('path', CONFIGS, ids=lambda p: os.path.relpath(p, ROOT))
def test_shipped_configs_build_the_release_models(path):
    cfg = load_config_file(path)
    cls = hyperformer.Model if 'hyperformer' in path else blockgcn.Model
    assert cfg['model'] == f'net.{cls.__module__.split(".")[-1]}.Model'
    model = cls(**cfg['model_args'])
    ucla = '/ucla/' in path
    ntu120 = '/ntu120/' in path
    want = {('hyperformer', False): 2_744_374 if ntu120 else 2_731_354,
            ('blockgcn', False): 1_388_440 if ntu120 else 1_373_020,
            ('hyperformer', True): 2_695_754, ('blockgcn', True): 1_297_370}
    assert count(model) == want[('hyperformer' if 'hyperformer' in path else 'blockgcn', ucla)]
    assert ('train_head' in cfg) == ('_csre' in path)
    if '_csre' in path:            # the same head settings as the CTR-GCN + CSRE configs
        ctr = os.path.join(ROOT, 'config', 'ucla', 'recognition_ctrgcn_csre.yaml')
        assert cfg['train_head_args'] == load_config_file(ctr)['train_head_args']
    assert cfg['optimizer'] == 'SGD' and cfg['nesterov'] and cfg['warm_up_epoch'] == 5 and cfg['step'] == [110, 120]
    assert cfg['warm_up'] == 'epoch'
    # the releases' values (configs and train.sh; BlockGCN ships no NW-UCLA config: its NTU optimiser)
    hyper = 'hyperformer' in path
    assert cfg['base_lr'] == (0.025 if hyper else 0.05)
    assert cfg['weight_decay'] == (0.0 if hyper and ucla else 0.0004)
    assert cfg['num_epoch'] == (150 if hyper and ucla else 140)
    assert cfg['batch_size'] == (16 if ucla else 64)
    assert cfg['lr_decay_rate'] == (0.025 if hyper and '/ntu60/xview/' in path else 0.1)
    feeder = cfg['train_feeder_args']
    if ucla:
        assert feeder['sampling'] == 'ucla' and feeder['window_size'] == 52 and feeder['repeat'] == 5
    else:
        assert feeder['window_size'] == 64 and feeder['p_interval'] == [0.5, 1] and feeder['random_rot']


def ucla_like(folder, n, seed):
    rng = np.random.RandomState(seed)
    data = rng.randn(n, 3, 50, 20, 1).astype(np.float32)
    np.save(os.path.join(folder, f'data{seed}.npy'), data)
    with open(os.path.join(folder, f'label{seed}.pkl'), 'wb') as f:
        pickle.dump(([f's{i}' for i in range(n)], [i % 10 for i in range(n)]), f)
    return f'data_path={folder}/data{seed}.npy,label_path={folder}/label{seed}.pkl'


@pytest.mark.parametrize('stem', ['hyperformer', 'hyperformer_csre', 'blockgcn', 'blockgcn_csre'])
def test_two_iterations_of_the_shipped_ucla_config(tmp_path, stem, capsys):
    """The shipped NW-UCLA config as it is (full-width model, its CSRE head, CTR-GCN's NW-UCLA sampling with
    ``repeat: 5``), on 2 UCLA-shaped clips (10 per epoch) so that batch 5 makes two iterations; overridden:
    epochs, batch sizes, data files, work_dir, and CSRE's ``min_candidates=any`` (2 clips cannot give the
    authors' full sample, which the run refuses)."""
    train, test = ucla_like(str(tmp_path), 2, 0), ucla_like(str(tmp_path), 2, 1)
    head = ['--train_head_args', 'min_candidates=any'] if stem.endswith('_csre') else []
    rc = main(['recognition', '--config', os.path.join(ROOT, 'config', 'ucla', f'recognition_{stem}.yaml'),
               '--work_dir', str(tmp_path / 'run'), '--num_epoch', '1', '--batch_size', '5',
               '--test_batch_size', '2', '--train_feeder_args', train, '--test_feeder_args', test,
               '--progress_bar', 'false', '--log_interval', '1', *head])
    assert rc == 0, capsys.readouterr().err
    log = open(tmp_path / 'run' / 'log.txt').read()
    assert 'Iter 1 Done' in log and 'Iter 2 Done' not in log
    if stem.endswith('_csre'):
        assert 'Train head net.csre.CSRE' in log and 'loss_ce' in log
    best = torch.load(tmp_path / 'run' / 'best_model.pt', weights_only=True)
    assert not any('bank' in k for k in best)


def test_bad_model_value_through_main_is_one_line(tmp_path, capsys):
    train = ucla_like(str(tmp_path), 4, 0)
    rc = main(['recognition', '--config', os.path.join(ROOT, 'config', 'ucla', 'recognition_hyperformer.yaml'),
               '--work_dir', str(tmp_path / 'run'), '--train_feeder_args', train, '--test_feeder_args', train,
               '--model_args', 'num_heads=0'])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and 'model_args.num_heads' in err and 'got 0' in err, err
