import numpy as np
import pytest
import torch

from net.st_gcn import Model
from net.utils.graph import Graph, get_hop_distance, normalize_digraph
from net.utils.layouts import NTU_RGBD, get_layout

NTU_GRAPH = {'layout': 'ntu-rgb+d', 'strategy': 'spatial'}


def reference_spatial(layout_name):
    """The loop of the reference ST-GCN graph.py, as an oracle."""
    layout = get_layout(layout_name)
    num_node = layout.num_node
    edge = [(i, i) for i in range(num_node)] + list(layout.edges)
    hop_dis = get_hop_distance(num_node, edge, 1)
    adjacency = np.zeros((num_node, num_node))
    for hop in range(0, 2):
        adjacency[hop_dis == hop] = 1
    norm = normalize_digraph(adjacency)
    A = []
    for hop in range(0, 2):
        a_root, a_close, a_further = (np.zeros((num_node, num_node)) for _ in range(3))
        for i in range(num_node):
            for j in range(num_node):
                if hop_dis[j, i] == hop:
                    if hop_dis[j, layout.center] == hop_dis[i, layout.center]:
                        a_root[j, i] = norm[j, i]
                    elif hop_dis[j, layout.center] > hop_dis[i, layout.center]:
                        a_close[j, i] = norm[j, i]
                    else:
                        a_further[j, i] = norm[j, i]
        if hop == 0:
            A.append(a_root)
        else:
            A.append(a_root + a_close)
            A.append(a_further)
    return np.stack(A)


def test_spatial_graph_equals_reference_loop():
    for name in ('ntu-rgb+d', 'nw-ucla', 'openpose'):
        A = Graph(name, 'spatial').A
        assert A.shape == (3, get_layout(name).num_node, get_layout(name).num_node)
        np.testing.assert_allclose(A, reference_spatial(name))


def test_graph_strategies_and_custom_layout():
    assert Graph('ntu-rgb+d', 'uniform').A.shape == (1, 25, 25)
    assert Graph('ntu-rgb+d', 'distance').A.shape == (2, 25, 25)
    custom = {'num_node': 4, 'edges': [[0, 1], [1, 2], [2, 3]], 'center': 1}
    A = Graph(custom, 'spatial').A
    assert A.shape == (3, 4, 4)
    # every column of the summed spatial adjacency sums to 1 (column normalisation)
    np.testing.assert_allclose(A.sum(0).sum(0), np.ones(4))


def test_ntu_bone_pairs_are_the_reference_list():
    ref = [(1, 2), (2, 21), (3, 21), (4, 3), (5, 21), (6, 5), (7, 6), (8, 7), (9, 21), (10, 9), (11, 10),
           (12, 11), (13, 1), (14, 13), (15, 14), (16, 15), (17, 1), (18, 17), (19, 18), (20, 19), (21, 21),
           (22, 23), (23, 8), (24, 25), (25, 12)]
    assert NTU_RGBD.bone_pairs == ref


def expected_state_dict_keys():
    """The AimCLR/CrosSCLR ST-GCN parameter names, written out."""
    keys = ['A', 'data_bn.weight', 'data_bn.bias', 'data_bn.running_mean', 'data_bn.running_var',
            'data_bn.num_batches_tracked']
    bn = ['weight', 'bias', 'running_mean', 'running_var', 'num_batches_tracked']
    for i in range(10):
        p = f'st_gcn_networks.{i}.'
        keys += [p + 'gcn.conv.weight', p + 'gcn.conv.bias']
        keys += [p + f'tcn.0.{b}' for b in bn]
        keys += [p + 'tcn.2.weight', p + 'tcn.2.bias']
        keys += [p + f'tcn.3.{b}' for b in bn]
        if i in (4, 7, 9):  # channel change (and stride 2 in 4, 7): conv residual
            keys += [p + 'residual.0.weight', p + 'residual.0.bias']
            keys += [p + f'residual.1.{b}' for b in bn]
    keys += ['fc.weight', 'fc.bias']
    keys += [f'edge_importance.{i}' for i in range(10)]
    return keys


def test_state_dict_keys_exact():
    model = Model(3, 16, 256, 60, NTU_GRAPH, True, dropout=0.5)
    assert list(model.state_dict().keys()) == expected_state_dict_keys()
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert shapes['st_gcn_networks.0.gcn.conv.weight'] == (48, 3, 1, 1)
    assert shapes['st_gcn_networks.4.tcn.2.weight'] == (32, 32, 9, 1)
    assert shapes['st_gcn_networks.9.gcn.conv.weight'] == (768, 64, 1, 1)
    assert shapes['data_bn.weight'] == (75,)
    assert shapes['fc.weight'] == (60, 256)


def test_shapes_and_feature_map():
    torch.manual_seed(0)
    model = Model(3, 16, 256, 60, NTU_GRAPH, True, dropout=0.5).eval()
    x = torch.randn(2, 3, 50, 25, 2)
    fmap = model.encode(x)
    assert fmap.shape == (4, 256, 13, 25)           # (N*M, C, T/4, V)
    feats = model.pool(fmap, 2)
    assert feats.shape == (2, 256)
    out = model(x)
    assert out.shape == (2, 60)
    torch.testing.assert_close(out, model.fc(feats))
    # the mean over persons: a sample with two identical persons equals the one-person result
    single = model(x[..., :1].repeat(1, 1, 1, 1, 2))
    torch.testing.assert_close(single, model.fc(model.pool(model.encode(x[..., :1]), 1)), rtol=1e-4, atol=1e-5)


def test_dropout_only_after_first_block():
    model = Model(3, 16, 256, 60, NTU_GRAPH, True, dropout=0.5)
    assert model.st_gcn_networks[0].tcn[4].p == 0
    assert all(block.tcn[4].p == 0.5 for block in model.st_gcn_networks[1:])


def test_wrong_joint_count_is_a_clear_error():
    model = Model(3, 16, 256, 60, NTU_GRAPH, True)
    try:
        model(torch.randn(1, 3, 20, 20, 1))
    except ValueError as e:
        assert 'V=25' in str(e) and 'layout' in str(e)
    else:
        raise AssertionError('expected a ValueError')


def _twin_models(**kwargs):
    """The same weights in the 'reference' and the channels-last 'fast' implementation."""
    torch.manual_seed(0)
    fast = Model(3, 8, 64, 10, NTU_GRAPH, True, implementation='fast', **kwargs)
    reference = Model(3, 8, 64, 10, NTU_GRAPH, True, implementation='reference', **kwargs)
    with torch.no_grad():     # non-trivial edge importance, so that its use is compared too
        for p in fast.edge_importance:
            p.uniform_(0.5, 1.5)
    reference.load_state_dict(fast.state_dict())
    return fast, reference


def train_step_outputs_and_grads(models, x):
    """Output and parameter gradients of one train-mode forward/backward of each model on ``x``."""
    outputs, grads = [], []
    for model in models:
        model.train()
        out = model(x)
        out.square().sum().backward()
        outputs.append(out)
        grads.append({k: p.grad.clone() for k, p in model.named_parameters()})
    return outputs, grads


def test_fast_implementation_equals_reference_in_float64_with_gradients():
    """The same function: in float64 the outputs, every parameter gradient and the BatchNorm statistics
    agree to rounding (in float32 oneDNN's channels-last BatchNorm sums differently, docs/PERFORMANCE.md)."""
    fast, reference = _twin_models()
    fast.double(), reference.double()
    x = torch.randn(4, 3, 50, 25, 2, dtype=torch.float64)
    outputs, grads = train_step_outputs_and_grads((fast, reference), x)
    torch.testing.assert_close(outputs[0], outputs[1], rtol=1e-10, atol=1e-10)
    for k in grads[1]:
        torch.testing.assert_close(grads[0][k], grads[1][k], rtol=1e-8, atol=1e-10, msg=k)
    for (k, a), b in zip(fast.state_dict().items(), reference.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12, msg=k)


def test_fast_implementation_float32_train_forward():
    fast, reference = _twin_models()
    x = torch.randn(4, 3, 50, 25, 2)
    fast.train(), reference.train()
    torch.testing.assert_close(fast(x), reference(x), rtol=1e-4, atol=1e-5)


def test_auto_is_reference_on_cpu_and_fast_runs_channels_last(monkeypatch):
    from net import st_gcn
    calls = []
    original = st_gcn.ConvTemporalGraphical.forward_channels_last
    monkeypatch.setattr(st_gcn.ConvTemporalGraphical, 'forward_channels_last',
                        lambda self, x, A: calls.append(x.is_contiguous(memory_format=torch.channels_last))
                        or original(self, x, A))
    x = torch.randn(2, 3, 20, 25, 1)
    Model(3, 8, 64, 10, NTU_GRAPH, True)(x)                       # implementation: auto, CPU input
    assert calls == []
    Model(3, 8, 64, 10, NTU_GRAPH, True, implementation='fast')(x)
    assert calls == [True] * 10                                    # every block in channels-last


def test_fast_implementation_feature_map_layout_and_eval_numerics():
    fast, reference = _twin_models()
    fast.eval(), reference.eval()
    x = torch.randn(3, 3, 50, 25, 1)
    a, b = fast.encode(x), reference.encode(x)
    assert a.shape == b.shape == (3, 64, 13, 25)
    assert a.is_contiguous()           # heads and necks see the reference layout
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_fast_implementation_under_bf16_autocast_stays_close():
    fast, reference = _twin_models()
    fast.eval(), reference.eval()
    x = torch.randn(2, 3, 50, 25, 2)
    expected = reference(x)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = fast(x)
    assert torch.isfinite(out).all()
    # bf16 has an 8-bit mantissa: about 1% relative error after ten blocks
    assert (out.float() - expected).norm() / expected.norm() < 0.03


def test_implementations_share_the_state_dict_and_bad_name_is_an_error():
    fast, reference = _twin_models()
    assert list(fast.state_dict()) == list(reference.state_dict())
    assert list(Model(3, 16, 256, 60, NTU_GRAPH, True, implementation='fast').state_dict()) == \
        expected_state_dict_keys()
    try:
        Model(3, 8, 64, 10, NTU_GRAPH, True, implementation='cuda')
    except ValueError as e:
        assert 'implementation' in str(e) and 'cuda' in str(e)
    else:
        raise AssertionError('expected a ValueError')


@pytest.mark.parametrize('implementation', ['reference', 'fast'])
def test_checkpointed_blocks_give_the_plain_step_in_float64(implementation):
    """``checkpoint_blocks``: the same output, every parameter gradient and every buffer (BatchNorm
    running statistics and counters: the re-run does not update them again) as the plain step, with
    dropout on (its masks are replayed); off in eval mode and without gradients."""
    models = []
    for checkpointed in (False, True):
        torch.manual_seed(0)
        models.append(Model(3, 8, 64, 10, NTU_GRAPH, True, implementation=implementation, dropout=0.5,
                            checkpoint_blocks=checkpointed).double())
    models[1].load_state_dict(models[0].state_dict())
    x = torch.randn(4, 3, 32, 25, 2, dtype=torch.float64)
    outputs, grads = [], []
    for model in models:
        torch.manual_seed(3)                             # the dropout masks
        model.train()
        out = model(x)
        out.square().sum().backward()
        outputs.append(out)
        grads.append({k: p.grad.clone() for k, p in model.named_parameters()})
    assert torch.equal(outputs[0], outputs[1])
    for k in grads[0]:
        torch.testing.assert_close(grads[1][k], grads[0][k], rtol=1e-12, atol=1e-14, msg=k)
    plain, checkpointed = models[0].state_dict(), models[1].state_dict()
    for k in plain:
        assert torch.equal(plain[k], checkpointed[k]), k
    assert int(checkpointed['st_gcn_networks.0.tcn.0.num_batches_tracked']) == 1
    models[1].eval()
    torch.testing.assert_close(models[1](x), models[0].eval()(x))
