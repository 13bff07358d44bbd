import math

import pytest
import torch
import torch.nn.functional as F

from net.csre import CSRE
from net.st_gcn import Model


@pytest.fixture(autouse=True, scope='module')
def one_thread():
    """These tiny heads run fastest on one thread; restored after the module so that later tests
    (the end-to-end runs) keep every core."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# The earlier readings (one softmax, own entry excluded, no minimum sample, summed branches), kept as
# options; the authors' defaults are tested in tests/test_supervised_fidelity.py.
EARLIER = dict(negative_softmax='joint', bank_update='after', min_candidates='any', branch_reduction='sum')


def make_head(**kw):
    args = dict(channels=8, num_node=25, num_samples=20, embed_dim=16, reduction=2, num_frames=4,
                num_positives=4, num_hard_negatives=6, num_random_negatives=6, **EARLIER)
    args.update(kw)
    return CSRE(**args)


def fill_bank(head, feats, labels):
    """Write given (K, D) features and labels into all branches' banks by index 0..K-1."""
    K = feats.size(0)
    head.update_banks({b: F.normalize(feats, dim=1) for b in head.branches}, torch.as_tensor(labels),
                      torch.arange(K))


# ---------------------------------------------------------------- memory banks
def test_bank_update_by_index_writes_exactly_those_rows():
    head = make_head(global_contrast=True)
    assert (head.bank_label == -1).all() and head.num_filled == 0
    feats = {b: F.normalize(torch.randn(3, 16), dim=1) for b in head.branches}
    index = torch.tensor([3, 7, 15])
    head.update_banks(feats, torch.tensor([1, 0, 2]), index)
    for b in head.branches:
        bank = getattr(head, f'bank_{b}')
        assert torch.equal(bank[index], feats[b])
        others = torch.ones(20, dtype=torch.bool)
        others[index] = False
        assert (bank[others] == 0).all()
    assert head.bank_label[index].tolist() == [1, 0, 2]
    assert head.bank_index[index].tolist() == [3, 7, 15]
    assert head.num_filled == 3
    # overwrite one row
    head.update_banks({b: feats[b][:1] * -1 for b in head.branches}, torch.tensor([4]), torch.tensor([3]))
    assert head.bank_label[3] == 4 and torch.equal(head.bank_s[3], -feats['s'][0]) and head.num_filled == 3


def test_bank_fifo_wraps():
    head = make_head(num_samples=None, bank_capacity=5)
    f1 = F.normalize(torch.randn(3, 16), dim=1)
    f2 = F.normalize(torch.randn(3, 16), dim=1)
    head.update_banks({'s': f1, 't': f1}, torch.tensor([0, 1, 2]), torch.tensor([100, 101, 102]))
    assert head.bank_ptr.item() == 3 and head.num_filled == 3
    head.update_banks({'s': f2, 't': f2}, torch.tensor([3, 4, 5]), torch.tensor([200, 201, 202]))
    assert head.bank_ptr.item() == 1
    # rows 3, 4 then wrap to row 0
    assert head.bank_label.tolist() == [5, 1, 2, 3, 4]
    assert head.bank_index.tolist() == [202, 101, 102, 200, 201]
    assert torch.equal(head.bank_s[0], f2[2]) and torch.equal(head.bank_s[3], f2[0])
    assert torch.equal(head.bank_t[1], f1[1])
    # a batch bigger than the queue keeps its tail
    f3 = F.normalize(torch.randn(7, 16), dim=1)
    head.update_banks({'s': f3, 't': f3}, torch.arange(7), torch.arange(7))
    assert sorted(head.bank_label.tolist()) == [2, 3, 4, 5, 6]
    assert head.bank_ptr.item() == 1


def test_banks_are_in_head_state_dict_not_encoder():
    head = make_head()
    sd = head.state_dict()
    assert {'bank_s', 'bank_t', 'bank_label', 'bank_index', 'bank_ptr'} <= set(sd)
    head2 = make_head(persistent_banks=False)
    assert not any(k.startswith('bank') for k in head2.state_dict())
    enc = Model(hidden_channels=4, hidden_dim=8, num_class=3)
    assert not any('bank' in k for k in enc.state_dict())


# ---------------------------------------------------------------- sampling
@pytest.mark.parametrize('pos,neg', [('R', 'R'), ('H', 'H'), ('H', 'R+H'), ('R+H', 'R+H')])
def test_sample_labels_and_self_exclusion(pos, neg):
    torch.manual_seed(0)
    head = make_head(positive_sampling=pos, negative_sampling=neg)
    labels = torch.randint(0, 3, (20,))
    labels[17:] = -1                      # rows 17..19 stay empty
    fill_bank(head, torch.randn(17, 16), labels[:17])
    anchor = F.normalize(torch.randn(5, 16), dim=1)
    a_label = torch.tensor([0, 1, 2, 0, 1])
    a_index = torch.tensor([0, 5, 9, 18, 2])
    pi, pv, ni, nv = head.sample(anchor, a_label, a_index, head.bank_s)
    for i in range(5):
        p, n = pi[i][pv[i]], ni[i][nv[i]]
        assert (head.bank_label[p] == a_label[i]).all()
        assert (head.bank_label[n] != a_label[i]).all() and (head.bank_label[n] >= 0).all()
        assert not (p == a_index[i]).any() and not (n == a_index[i]).any()
        assert (p < 17).all() and (n < 17).all()
        assert len(set(p.tolist())) == len(p) and len(set(n.tolist())) == len(n)  # no duplicates
        n_pos_cand = int(((labels[:17] == a_label[i]) & (torch.arange(17) != a_index[i])).sum())
        n_neg_cand = int(((labels[:17] != a_label[i]) & (torch.arange(17) != a_index[i])).sum())
        assert len(p) == min(n_pos_cand, 4)
        expected_neg = {'R': 6, 'H': 6, 'R+H': 12}[neg]
        assert len(n) == min(n_neg_cand, expected_neg)


def test_hard_mining_picks_extreme_similarities():
    # 2-d unit vectors at known angles: cosine with the anchor (angle 0) decreases with the angle
    angles = torch.tensor([10., 80., 30., 60., 5., 50., 170., 20., 100., 40.]) * math.pi / 180
    feats = torch.stack([angles.cos(), angles.sin()], 1)
    labels = torch.tensor([0, 0, 0, 0, 0, 1, 1, 1, 1, 1])
    head = make_head(embed_dim=2, num_samples=10, num_positives=2, num_hard_negatives=2,
                     positive_sampling='H', negative_sampling='H')
    fill_bank(head, feats, labels)
    anchor = torch.tensor([[1.0, 0.0]])
    pi, pv, ni, nv = head.sample(anchor, torch.tensor([0]), torch.tensor([-1]), head.bank_s)
    assert pv.all() and nv.all()
    assert set(pi[0].tolist()) == {1, 3}          # positives at 80 and 60 deg: lowest similarity
    assert set(ni[0].tolist()) == {7, 9}          # negatives at 20 and 40 deg: highest similarity
    # the anchor's own index is excluded: anchor index 1 -> next hardest positives are 60 and 30 deg
    pi, pv, _, _ = head.sample(anchor, torch.tensor([0]), torch.tensor([1]), head.bank_s)
    assert set(pi[0][pv[0]].tolist()) == {3, 2}


def test_random_sampling_only_valid_candidates_and_covers_them():
    torch.manual_seed(1)
    head = make_head(num_samples=30, num_positives=3, num_random_negatives=2, positive_sampling='R',
                     negative_sampling='R')
    labels = torch.tensor([0] * 5 + [1] * 10)
    fill_bank(head, torch.randn(15, 16), labels)
    anchor = F.normalize(torch.randn(1, 16), dim=1)
    seen_p, seen_n = set(), set()
    for _ in range(200):
        pi, pv, ni, nv = head.sample(anchor, torch.tensor([0]), torch.tensor([29]), head.bank_s)
        assert pv.all() and nv.all()
        seen_p |= set(pi[0].tolist())
        seen_n |= set(ni[0].tolist())
    assert seen_p == set(range(5))                # all positives reachable, nothing else
    assert seen_n == set(range(5, 15))            # all negatives reachable, no empty rows


def test_r_plus_h_negatives_are_hard_plus_disjoint_random():
    torch.manual_seed(2)
    head = make_head(num_samples=40, num_hard_negatives=3, num_random_negatives=5, negative_sampling='R+H')
    labels = torch.tensor([0] * 5 + [1] * 35)
    feats = F.normalize(torch.randn(40, 16), dim=1)
    fill_bank(head, feats, labels)
    anchor = F.normalize(torch.randn(1, 16), dim=1)
    _, _, ni, nv = head.sample(anchor, torch.tensor([0]), torch.tensor([-1]), head.bank_s)
    assert nv.all() and ni.size(1) == 8
    sim = (anchor @ head.bank_s.t())[0]
    sim[:5] = -2
    assert set(ni[0, :3].tolist()) == set(sim.topk(3).indices.tolist())
    assert len(set(ni[0].tolist())) == 8


def test_too_few_candidates_and_empty_bank():
    head = make_head()
    fmap = torch.randn(4, 8, 4, 25, requires_grad=True)
    out = head(fmap, 1, torch.tensor([0, 1, 0, 1]), torch.arange(4))      # empty bank: loss 0, no NaN
    assert out['loss'].item() == 0 and out['num_anchors'] == 0 and out['bank_filled'] == 4
    out['loss'].backward()
    assert torch.isfinite(fmap.grad).all()
    # bank has only class 0 -> anchors of class 1 have no positives, anchors of class 0 no negatives
    head2 = make_head()
    fill_bank(head2, torch.randn(3, 16), [0, 0, 0])
    out = head2(fmap, 1, torch.tensor([0, 1, 0, 1]), torch.arange(10, 14))
    assert out['num_anchors'] == 0 and out['loss'].item() == 0


# ---------------------------------------------------------------- loss
def test_loss_finite_positive_and_decreases_when_classes_pulled_together():
    torch.manual_seed(0)
    N, C, T, V = 12, 8, 4, 25
    labels = torch.arange(N) % 3
    head = make_head(num_samples=N, temperature=0.5)
    fmap = torch.nn.Parameter(torch.randn(N, C, T, V))
    opt = torch.optim.SGD([fmap] + list(head.parameters()), lr=0.5)
    head.train()
    with torch.no_grad():
        head(fmap, 1, labels, torch.arange(N))        # fill the banks
    losses = []
    for _ in range(30):
        out = head(fmap, 1, labels, torch.arange(N))
        assert torch.isfinite(out['loss']) and out['loss'].item() > 0
        assert out['num_anchors'] == N
        opt.zero_grad()
        out['loss'].backward()
        opt.step()
        losses.append(out['loss'].item())
    assert losses[-1] < 0.7 * losses[0], losses
    # and the embeddings cluster: same-class cosine exceeds other-class cosine
    with torch.no_grad():
        f = head.decompose(fmap, 1)['s']
    sim = f @ f.t()
    same = labels[:, None] == labels[None, :]
    off = ~torch.eye(N, dtype=torch.bool)
    assert sim[same & off].mean() > sim[~same].mean() + 0.3


def test_loss_matches_reference_formula():
    torch.manual_seed(3)
    head = make_head(spatial=True, temporal=False, num_positives=100, num_hard_negatives=100,
                     num_random_negatives=0, positive_sampling='H', negative_sampling='H', temperature=0.7)
    labels = torch.randint(0, 3, (20,))
    bank = F.normalize(torch.randn(20, 16), dim=1)
    fill_bank(head, bank, labels)
    anchor = F.normalize(torch.randn(2, 16), dim=1)
    a_label, a_index = torch.tensor([0, 2]), torch.tensor([4, 11])
    loss, n = head.contrast(anchor, a_label, a_index, 's')
    ref = []
    for i in range(2):
        keep = torch.arange(20) != a_index[i]
        s = (anchor[i] @ bank.t()) / 0.7
        pos = s[keep & (labels == a_label[i])]
        neg = s[keep & (labels != a_label[i])]
        ref.append(torch.stack([-(p - torch.logsumexp(torch.cat([p[None], neg]), 0)) for p in pos]).mean())
    assert n == 2
    assert torch.allclose(loss, torch.stack(ref).mean(), atol=1e-5)


def test_switches_change_losses():
    fmap = torch.randn(4, 8, 4, 25)
    lab, idx = torch.tensor([0, 1, 0, 1]), torch.arange(4)
    for kw, keys in [(dict(), {'loss_s', 'loss_t'}),
                     (dict(temporal=False), {'loss_s'}),
                     (dict(spatial=False), {'loss_t'}),
                     (dict(spatial=False, temporal=False, global_contrast=True), {'loss_g'}),
                     (dict(global_contrast=True), {'loss_s', 'loss_t', 'loss_g'})]:
        head = make_head(**kw)
        head(fmap, 1, lab, idx)
        out = head(fmap, 1, lab, idx + 4)
        assert {k for k in out if k.startswith('loss_')} == keys
        total = sum(out[k] for k in keys)
        assert torch.allclose(out['loss'], total)
    head = make_head(loss_weight=0.25)
    head(fmap, 1, lab, idx)
    out = head(fmap, 1, lab, idx + 4)
    assert torch.allclose(out['loss'], 0.25 * (out['loss_s'] + out['loss_t']))
    with pytest.raises(ValueError):
        make_head(spatial=False, temporal=False)
    with pytest.raises(ValueError):
        make_head(num_frames=None)
    with pytest.raises(ValueError):
        make_head(positive_sampling='X')


def test_eval_mode_does_not_write_banks():
    head = make_head().eval()
    head(torch.randn(4, 8, 4, 25), 1, torch.tensor([0, 1, 0, 1]), torch.arange(4))
    assert head.num_filled == 0
    head(torch.randn(4, 8, 4, 25), 1, torch.tensor([0, 1, 0, 1]), torch.arange(4), update=True)
    assert head.num_filled == 4


# ---------------------------------------------------------------- with the ST-GCN encoder
@pytest.mark.parametrize('layout,V', [('ntu-rgb+d', 25), ('nw-ucla', 20)])
@pytest.mark.parametrize('M', [1, 2])
def test_with_st_gcn_encoder(layout, V, M):
    torch.manual_seed(0)
    enc = Model(hidden_channels=4, hidden_dim=8, num_class=3, graph_args={'layout': layout, 'strategy': 'spatial'})
    C, Tp, Vp = enc.feature_map_shape(16)
    assert (C, Tp, Vp) == (8, 4, V)
    head = CSRE(C, V, num_samples=10, num_class=3, embed_dim=16, num_frames=Tp, num_positives=4,
                num_hard_negatives=4, num_random_negatives=4, global_contrast=True, **EARLIER)
    x = torch.randn(4, 3, 16, V, M)
    lab = torch.tensor([0, 1, 2, 0])
    enc.train()
    head.train()
    head(enc.encode(x), M, lab, torch.arange(4))
    fmap = enc.encode(x)
    assert fmap.shape == (4 * M, C, Tp, V)
    out = head(fmap, M, lab, torch.tensor([4, 5, 6, 7]))
    logits = enc.fc(enc.pool(fmap, M))
    loss = F.cross_entropy(logits, lab) + out['loss']
    loss.backward()
    assert out['num_anchors'] > 0 and torch.isfinite(out['loss'])
    assert enc.st_gcn_networks[0].gcn.conv.weight.grad.abs().sum() > 0
    assert head.proj_s.weight.grad is not None and head.proj_t.weight.grad is not None
    # a different temporal length is pooled to num_frames
    out = head(enc.encode(torch.randn(2, 3, 24, V, M)), M, lab[:2], torch.tensor([8, 9]))
    assert torch.isfinite(out['loss'])


def test_autocast_loss_is_float32():
    head = make_head()
    fmap = torch.randn(4, 8, 4, 25, requires_grad=True)
    lab = torch.tensor([0, 1, 0, 1])
    with torch.autocast('cpu', dtype=torch.bfloat16):
        head(fmap, 1, lab, torch.arange(4))
        out = head(fmap, 1, lab, torch.arange(4, 8))
    assert out['loss'].dtype == torch.float32 and head.bank_s.dtype == torch.float32
    out['loss'].backward()
    assert torch.isfinite(fmap.grad).all() and fmap.grad.abs().sum() > 0
