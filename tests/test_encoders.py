"""Supervised encoders 2s-AGCN (net.agcn), CTR-GCN (net.ctrgcn) and HCN (net.hcn): the net.st_gcn
interface (encode / pool / forward_features / forward / fc / neck / check_input), at tiny widths."""
import pytest
import torch
import torch.nn as nn

from net import agcn, ctrgcn, hcn

LAYOUTS = {'ntu-rgb+d': 25, 'nw-ucla': 20}
N, T, NUM_CLASS = 2, 12, 5


def build(name, layout, M, **extra):
    graph_args = {'layout': layout, 'strategy': 'spatial'}
    if name == 'agcn':
        return agcn.Model(in_channels=3, num_class=NUM_CLASS, graph_args=graph_args, num_person=M,
                          base_channel=8, **extra)
    if name == 'ctrgcn':
        return ctrgcn.Model(in_channels=3, num_class=NUM_CLASS, graph_args=graph_args, num_person=M,
                            base_channel=8, **extra)
    return hcn.Model(in_channels=3, num_class=NUM_CLASS, graph_args=graph_args, num_person=M, out_channel=8,
                     window_size=16, conv2_channel=16, fc_hidden=16, **extra)


def expected_t(name, t):
    if name == 'hcn':
        return 16                                   # resampled to window_size
    return (((t + 1) // 2) + 1) // 2                # two stride-2 blocks


def first_layer_weights(name, model):
    if name == 'agcn':
        return [model.l1.gcn1.conv_d[0].weight, model.l1.gcn1.conv_a[0].weight]
    if name == 'ctrgcn':
        # conv1/conv2 (the refinement branch) get no gradient at init: it is scaled by alpha = 0
        return [model.l1.gcn1.convs[0].conv3.weight, model.l1.gcn1.alpha]
    return [model.conv1[0].weight, model.conv1m[0].weight]


def head(model, fmap, M):
    return model.head(model.pool(fmap, M))


@pytest.mark.parametrize('name', ['agcn', 'ctrgcn', 'hcn'])
@pytest.mark.parametrize('layout', list(LAYOUTS))
@pytest.mark.parametrize('M', [1, 2])
def test_interface(name, layout, M):
    torch.manual_seed(0)
    V = LAYOUTS[layout]
    model = build(name, layout, M)
    assert model.num_node == V
    assert isinstance(model.fc, nn.Linear) and model.fc.out_features == NUM_CLASS
    x = torch.randn(N, 3, T, V, M)

    # training mode: shapes and gradients down to the first layer
    model.train()
    fmap = model.encode(x)
    assert fmap.shape == (N * M, model.feature_dim, expected_t(name, T), V)
    out = model(x)
    assert out.shape == (N, NUM_CLASS)
    out.pow(2).sum().backward()
    for w in first_layer_weights(name, model):
        assert w.grad is not None and torch.isfinite(w.grad).all() and w.grad.abs().sum() > 0

    # eval mode: forward == fc(pool(encode(x), M)), forward_features == pool(encode(x), M)
    model.eval()
    with torch.no_grad():
        fmap = model.encode(x)
        feats = model.forward_features(x)
        assert feats.shape == (N, model.fc.in_features)
        torch.testing.assert_close(feats, model.pool(fmap, M))
        torch.testing.assert_close(model(x), head(model, fmap, M))


@pytest.mark.parametrize('name', ['agcn', 'ctrgcn', 'hcn'])
def test_wrong_input_raises_one_line_error(name):
    model = build(name, 'ntu-rgb+d', 2)
    for bad, needle in (((1, 3, T, 20, 2), 'V=25'), ((1, 4, T, 25, 2), 'C=3')):
        with pytest.raises(ValueError) as err:
            model(torch.randn(*bad))
        msg = str(err.value)
        assert needle in msg and "'ntu-rgb+d'" in msg and '\n' not in msg
    with pytest.raises(ValueError):
        model(torch.randn(1, 3, T, 25))                 # no person axis
    if name != 'hcn':                                   # data_bn fixes M for the GCNs
        with pytest.raises(ValueError, match='M=2'):
            model(torch.randn(1, 3, T, 25, 1))


class Double(nn.Module):
    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return 2 * x


@pytest.mark.parametrize('name', ['agcn', 'ctrgcn', 'hcn'])
def test_neck_is_applied(name):
    torch.manual_seed(0)
    model = build(name, 'nw-ucla', 2).eval()
    x = torch.randn(N, 3, T, 20, 2)
    with torch.no_grad():
        plain = model.encode(x)
        model.neck = Double()
        necked = model.encode(x)
        out = model(x)
    assert model.neck.calls == 2
    torch.testing.assert_close(necked, 2 * plain)
    torch.testing.assert_close(out, head(model, 2 * plain, 2))


def test_hcn_time_resampling_and_window():
    model = build('hcn', 'ntu-rgb+d', 2).eval()
    for t in (8, 16, 40):
        x = torch.randn(1, 3, t, 25, 2)
        assert model.encode(x).shape == (2, 32, 16, 25)
        assert model(x).shape == (1, NUM_CLASS)
    # persons are max-pooled: swapping them does not change the output
    x = torch.randn(1, 3, 16, 25, 2)
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(x.flip(-1)))


def test_reference_parameter_names():
    a = dict(agcn.Model(base_channel=8).state_dict())
    for key in ('data_bn.running_mean', 'l1.gcn1.PA', 'l1.gcn1.conv_a.2.weight', 'l1.gcn1.conv_d.0.bias',
                'l1.gcn1.down.0.weight', 'l1.tcn1.conv.weight', 'l5.residual.conv.weight', 'l10.tcn1.bn.bias',
                'fc.weight'):
        assert key in a, key
    assert not any(k.endswith('.A') for k in a)        # the fixed A is not in checkpoints (as the reference)
    c = dict(ctrgcn.Model(base_channel=8).state_dict())
    for key in ('data_bn.running_var', 'l1.gcn1.PA', 'l1.gcn1.alpha', 'l1.gcn1.convs.0.conv4.weight',
                'l1.tcn1.branches.0.3.conv.weight', 'l1.tcn1.branches.2.4.weight', 'l1.tcn1.branches.3.0.weight',
                'l5.residual.conv.weight', 'fc.weight'):
        assert key in c, key
    h = dict(hcn.Model().state_dict())
    for key in ('conv1.0.weight', 'conv2.weight', 'conv3.0.weight', 'conv4.0.weight', 'conv1m.0.weight',
                'conv5.0.weight', 'conv6.0.weight', 'fc7.0.weight', 'fc.weight'):
        assert key in h, key


def test_full_width_parameter_counts():
    """Full-width NTU-60 joint models against the published sizes (2s-AGCN 3.47 M, CTR-GCN 1.46 M)."""
    counts = {}
    for name, cls, known in (('2s-AGCN', agcn.Model, 3.47e6), ('CTR-GCN', ctrgcn.Model, 1.46e6)):
        n = sum(p.numel() for p in cls(num_class=60).parameters())
        counts[name] = n
        print(f'{name}: {n:,} parameters (published {known / 1e6:.2f} M)')
        assert abs(n - known) / known < 0.03, (name, n)
    n = sum(p.numel() for p in hcn.Model(num_class=60).parameters())
    print(f'HCN (paper widths, window 64): {n:,} parameters')
    # exact counts of the reference layer sizes (data_bn over 2 persons x 25 joints x 3 channels).  CTR-GCN's
    # published 1.46 M is its NTU-120 model: 1,446,672 + 256 * 60 + 60 = 1,462,092.
    assert counts['2s-AGCN'] == 3_469_510
    assert counts['CTR-GCN'] == 1_446_672
    assert sum(p.numel() for p in ctrgcn.Model(num_class=120).parameters()) == 1_462_092


@pytest.mark.parametrize('name', ['agcn', 'ctrgcn', 'hcn'])
def test_train_head_path_keeps_the_encoders_dropout(name):
    """With a train head (CSRE) the recognition step builds the logits from the feature map
    (``processor.recognition.logits_from_feature_map``): in training mode, with dropout on, that equals
    ``forward(x)`` under the same random draws (it used to skip the dropout before ``fc``)."""
    from processor.recognition import logits_from_feature_map
    extra = {'drop_out': 0.5}
    model = build(name, 'nw-ucla', 1, **extra).train()
    x = torch.randn(N, 3, T, 20, 1)
    torch.manual_seed(3)
    direct = model(x)
    torch.manual_seed(3)
    via_map = logits_from_feature_map(model, model.encode(x), 1)
    torch.testing.assert_close(via_map, direct)
    if isinstance(model.drop_out, nn.Dropout):              # 2s-AGCN, CTR-GCN (HCN's sits inside fc7)
        torch.manual_seed(3)
        without_dropout = model.fc(model.pool(model.encode(x), 1))
        assert not torch.allclose(without_dropout, direct)  # the dropout matters, so the test can fail
