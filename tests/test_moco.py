import math

import pytest
import torch
import torch.nn.functional as F

from net.skeletonclr import SkeletonCLR

ARGS = dict(base_encoder='net.st_gcn.Model', pretrain=True, feature_dim=16, queue_size=8, momentum=0.9,
            Temperature=0.07, mlp=True, in_channels=3, hidden_channels=4, hidden_dim=8, num_class=10,
            dropout=0.5, graph_args={'layout': 'nw-ucla', 'strategy': 'spatial'}, edge_importance_weighting=True)


def make(**kw):
    torch.manual_seed(0)
    return SkeletonCLR(**dict(ARGS, **kw))


def test_reference_names_and_mlp_head():
    model = make()
    keys = model.state_dict().keys()
    assert 'queue' in keys and 'queue_ptr' in keys
    assert 'encoder_q.fc.0.weight' in keys and 'encoder_q.fc.2.weight' in keys
    assert 'encoder_k.fc.2.bias' in keys
    assert model.queue.shape == (16, 8)
    torch.testing.assert_close(model.queue.norm(dim=0), torch.ones(8))
    assert all(not p.requires_grad for p in model.encoder_k.parameters())
    for pq, pk in zip(model.encoder_q.parameters(), model.encoder_k.parameters()):
        assert torch.equal(pq, pk)


def test_momentum_update_formula():
    model = make()
    with torch.no_grad():
        for p in model.encoder_q.parameters():
            p.add_(torch.randn_like(p))
    before_k = [p.clone() for p in model.encoder_k.parameters()]
    q = [p.clone() for p in model.encoder_q.parameters()]
    model.momentum_update()
    for k0, q0, k1 in zip(before_k, q, model.encoder_k.parameters()):
        assert torch.equal(k1, k0 * 0.9 + q0 * (1 - 0.9))


def test_queue_pointer_wraps_and_stores_keys():
    model = make()
    keys = F.normalize(torch.randn(4, 16), dim=1)
    model.enqueue(keys)
    assert int(model.queue_ptr) == 4
    torch.testing.assert_close(model.queue[:, :4], keys.T)
    model.enqueue(keys * -1)
    assert int(model.queue_ptr) == 0
    torch.testing.assert_close(model.queue[:, 4:], -keys.T)


def test_queue_size_not_multiple_of_batch_is_an_error():
    model = make()
    with pytest.raises(ValueError, match='queue_size=8 is not a multiple of batch_size=3'):
        model.check_batch_size(3)


def test_forward_loss_is_infonce_over_queue():
    model = make(dropout=0.0)
    x1, x2 = torch.randn(4, 3, 16, 20, 1), torch.randn(4, 3, 16, 20, 1)
    queue_before = model.queue.clone()
    out = model(x1, x2)
    assert set(out) >= {'loss', 'loss_info', 'embed_std', 'acc_pos'}
    # recompute by hand with the key encoder after its momentum step
    q = F.normalize(model.encoder_q(x1), dim=1)
    with torch.no_grad():
        k = F.normalize(model.encoder_k(x2), dim=1)
    logits = torch.cat([(q * k).sum(1, keepdim=True), q @ queue_before], dim=1) / 0.07
    expected = F.cross_entropy(logits, torch.zeros(4, dtype=torch.long))
    torch.testing.assert_close(out['loss'], expected, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(model.queue[:, :4], k.T, rtol=1e-4, atol=1e-5)
    assert model.uniform_loss == pytest.approx(math.log(9))


def test_loss_decreases_on_fixed_batch():
    """Queries of batch x learn to find their keys among the keys of another batch y."""
    model = make(queue_size=16, dropout=0.0)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    torch.manual_seed(1)
    x = torch.randn(8, 3, 12, 20, 1)
    y = torch.randn(16, 3, 12, 20, 1)
    losses = []
    for _ in range(12):
        with torch.no_grad():
            model.queue.copy_(model.embed_key(y).T)        # negatives: keys of the other batch
        out = model(x + 0.3 * torch.randn_like(x), x + 0.3 * torch.randn_like(x))
        opt.zero_grad()
        out['loss'].backward()
        opt.step()
        losses.append(out['loss'].item())
    assert sum(losses[-3:]) < 0.7 * sum(losses[:3]), losses


def test_eval_mode_builds_classifier_only():
    model = SkeletonCLR(**dict(ARGS, pretrain=False))
    assert not hasattr(model, 'encoder_k') and not hasattr(model, 'queue')
    assert model(torch.randn(2, 3, 16, 20, 1)).shape == (2, 10)
