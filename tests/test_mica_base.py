"""MICA's base (SkeleMixCLR or SkeletonCLR) and its part-wise Feature Modulation objective (GAP's part
features pooled over the layout's ``text_parts``)."""
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import ROOT
from net.mica import MICA, part_pool, part_pooling
from net.skelemixclr import SkeleMixCLR
from net.utils.layouts import get_layout

UCLA_TEXT = os.path.join(ROOT, 'config/text/features/ucla.minilm.npz')
UCLA_DESC = os.path.join(ROOT, 'config/text/descriptions/ucla.yaml')
ENCODER = dict(base_encoder='net.st_gcn.Model', in_channels=3, hidden_channels=4, hidden_dim=8, num_class=10,
               queue_size=16, dropout=0.0, graph_args={'layout': 'nw-ucla', 'strategy': 'spatial'})


def test_part_pool_by_hand():
    """Every part in one pass: part p of sample n is the mean over its joints, the frames and the persons."""
    torch.manual_seed(0)
    fmap = torch.randn(6, 3, 4, 5, dtype=torch.float64)          # N*M = 3*2, C 3, T' 4, V 5
    parts = [[0, 3, 4], [1], [2, 4]]
    pooled = part_pool(fmap, part_pooling(parts, 5), 2).numpy()
    assert pooled.shape == (3, 3, 3)
    x = fmap.numpy()
    for p, joints in enumerate(parts):
        want = np.zeros((3, 3))
        for n in range(3):
            for c in range(3):
                want[n, c] = np.mean([x[2 * n + m, c, t, v] for m in range(2) for t in range(4) for v in joints])
        np.testing.assert_allclose(pooled[p], want, rtol=1e-12)


def test_part_pooled_fm_reads_each_part_from_its_joints():
    torch.manual_seed(0)
    model = MICA(**ENCODER, num_frames=16, text_features=UCLA_TEXT, descriptions=UCLA_DESC, frest=False,
                 harmonizer=False, prompts=['global', 'head', 'feet'], fm_objective='part_pooled').double()
    layout = get_layout('nw-ucla')
    assert model.part_joints == {'head': list(dict(layout.text_parts)['head']),
                                 'feet': list(dict(layout.text_parts)['feet'])}
    fmap = torch.randn(4, 8, 4, 20, dtype=torch.float64)          # N 2, M 2
    whole = F.normalize(torch.randn(2, 384, dtype=torch.float64), dim=1)
    z = model.fm_embeddings(fmap, 2, whole)
    assert z.shape == (3, 2, 384)
    assert torch.equal(z[0], whole)                               # 'global' against the whole body
    head = fmap[:, :, :, [2, 3]].mean(dim=(2, 3)).view(2, 2, 8).mean(1)
    torch.testing.assert_close(z[1], F.normalize(model.part_proj['head'](head), dim=1))
    # the teacher of the label-free mode and the student see the same per-kind layout
    out = model(torch.randn(4, 3, 16, 20, 2, dtype=torch.float64), torch.randn(4, 3, 16, 20, 2, dtype=torch.float64),
                label=torch.tensor([0, 1, 2, 3]))
    out['loss'].backward()
    assert model.part_proj['feet'].weight.grad.abs().sum() > 0     # each part's projection is trained
    assert not any(k.startswith('part_proj') and 'encoder' in k for k in model.state_dict())


def test_part_pooled_needs_the_layouts_text_parts():
    layout = {'name': 'tiny', 'num_node': 4, 'edges': [[0, 1], [1, 2], [2, 3]], 'center': 1,
              'bodies': [[0, 1], [2, 3]]}
    args = dict(ENCODER, graph_args={'layout': layout, 'strategy': 'spatial'}, num_frames=16, frest=False,
                harmonizer=False, text_features=UCLA_TEXT, descriptions=UCLA_DESC, prompts=['global', 'head'])
    with pytest.raises(ValueError, match="layout 'tiny' has no text_parts entry for the prompt kind 'head'"):
        MICA(**args, fm_objective='part_pooled')
    MICA(**args, fm_objective='multi_part')
    with_parts = dict(layout, text_parts={'head': [0, 1]})
    model = MICA(**dict(args, graph_args={'layout': with_parts, 'strategy': 'spatial'}), fm_objective='part_pooled')
    assert model.part_joints == {'head': [0, 1]}


def test_mica_without_its_modules_on_the_skelemixclr_base_is_skelemixclr():
    """base_method: skelemixclr with FreST, FM and the harmonizer off gives SkeleMixCLR's losses exactly
    (same state, same mixing draws); base_method: skeletonclr has no mixed views and the MoCo v2 head."""
    args = dict(ENCODER, feature_dim=8, graph_args={'layout': 'nw-ucla', 'strategy': 'agcn'},
                swap_cfg={'swap_params': [[2, 3, 1, 3, 2, 0.5]]})       # 16 frames: 4 time units
    torch.manual_seed(0)
    mica = MICA(**args, base_method='skelemixclr', frest=False, feature_modulation=False, harmonizer=False).double()
    smx = SkeleMixCLR(**args).double()
    state = {k: v for k, v in mica.state_dict().items() if k != 'pretrain_labels'}    # MICA's record
    assert sorted(state) == sorted(smx.state_dict())
    smx.load_state_dict(state)
    g = torch.Generator().manual_seed(1)
    x, k = (torch.randn(4, 3, 16, 20, 2, generator=g, dtype=torch.float64) for _ in range(2))
    torch.manual_seed(5)
    a = mica(x, k)
    torch.manual_seed(5)
    b = smx(x, k)
    for key in ('loss', 'loss_info', 'loss_ins', 'loss_mix'):
        assert a[key].item() == pytest.approx(b[key].item(), rel=1e-12), key
    plain = MICA(**args, base_method='skeletonclr', frest=False, feature_modulation=False, harmonizer=False)
    assert plain.mix is None and 'encoder_q.fc.1.running_mean' not in plain.state_dict()
    out = plain(x.float(), k.float())
    assert 'loss_mix' not in out and out['loss'].item() == pytest.approx(out['loss_info'].item())
    with pytest.raises(ValueError, match='base_method'):
        MICA(**args, base_method='moco', feature_modulation=False, harmonizer=False)


# ------------------------------------------------------------------ label use in pretraining

def label_model(**kwargs):
    return MICA(**ENCODER, num_frames=16, text_features=UCLA_TEXT, descriptions=UCLA_DESC, frest=False,
                harmonizer=False, **kwargs)


def test_checkpoints_record_whether_pretraining_read_the_labels():
    assert int(label_model(fm_target='text').pretrain_labels) == 1
    assert int(label_model(fm_target='label').pretrain_labels) == 1
    assert int(label_model(fm_target='teacher').pretrain_labels) == 0
    assert int(label_model(feature_modulation=False).pretrain_labels) == 0
    evaluation = label_model(pretrain=False)
    assert int(evaluation.pretrain_labels) == 255                    # unknown until weights are loaded
    evaluation.load_state_dict({k: v for k, v in label_model().state_dict().items() if k.startswith(
        ('encoder_q.', 'pretrain_labels')) and '.fc.' not in k}, strict=False)
    assert int(evaluation.pretrain_labels) == 1


class FakeProcessor:
    def __init__(self, tmp_path, model, feeder, allow=False):
        from types import SimpleNamespace
        self.model, self.is_main, self.logged = model, True, []
        self.arg = SimpleNamespace(weights=str(tmp_path / 'pretext' / 'epoch1_model.pt'), train_feeder=feeder,
                                   allow_label_pretraining=allow, work_dir=str(tmp_path / 'eval'))

    def print_log(self, line):
        self.logged.append(line)


def test_a_label_using_checkpoint_cannot_enter_a_semi_supervised_evaluation_silently(tmp_path):
    from processor.checkpoint import check_label_use, pretraining_label_use
    from torchlight.io import UserError
    evaluation = label_model(pretrain=False)
    evaluation.pretrain_labels.fill_(1)
    semi = FakeProcessor(tmp_path, evaluation, 'feeder.ntu_feeder.Feeder_semi')
    with pytest.raises(UserError, match='fm_target=teacher.*--allow_label_pretraining true'):
        check_label_use(semi)
    allowed = FakeProcessor(tmp_path, evaluation, 'feeder.ntu_feeder.Feeder_semi', allow=True)
    check_label_use(allowed)
    assert allowed.label_use == {'weights': allowed.arg.weights, 'pretraining_used_labels': True,
                                 'semi_supervised': True, 'allow_label_pretraining': True}
    assert len(allowed.logged) == 1 and 'read the training labels' in allowed.logged[0]
    linear = FakeProcessor(tmp_path, evaluation, 'feeder.ntu_feeder.Feeder_single')
    check_label_use(linear)
    assert linear.label_use['semi_supervised'] is False and 'not of a self-supervised' in linear.logged[0]
    evaluation.pretrain_labels.fill_(0)
    free = FakeProcessor(tmp_path, evaluation, 'feeder.ntu_feeder.Feeder_semi')
    check_label_use(free)
    assert not free.logged and not hasattr(free, 'label_use')
    # a checkpoint made before the record: the run's config.yaml beside it tells
    evaluation.pretrain_labels.fill_(255)
    os.makedirs(tmp_path / 'pretext')
    (tmp_path / 'pretext' / 'config.yaml').write_text('model_args:\n  fm_target: teacher\n')
    assert pretraining_label_use(evaluation, semi.arg.weights) is False
    (tmp_path / 'pretext' / 'config.yaml').write_text('model_args:\n  fm_target: text\n')
    assert pretraining_label_use(evaluation, semi.arg.weights) is True
    with pytest.raises(UserError):
        check_label_use(semi)


def test_the_fm_terms_uniform_value():
    """The value of L_KL for a uniform student: ln C - H(teacher); for the label target exactly that of
    the smoothed one-hot."""
    model = label_model(fm_target='label', label_smoothing=0.1, prompts=['global'], fm_objective='multi_part')
    C = 10
    p = np.full(C, 0.1 / C)
    p[0] += 0.9
    assert model.uniform_terms['loss_kl'] == pytest.approx(np.log(C) + (p * np.log(p)).sum(), rel=1e-6)
    text = label_model(fm_target='text')
    assert 0 < text.uniform_terms['loss_kl'] < np.log(C)
    assert label_model(fm_target='teacher').uniform_terms == {}


def test_principal_basis_reads_a_narrow_embedding_against_the_text_anchors():
    """The paper configs' z_q is narrower (128) than the text (384): the anchors are read in the orthonormal
    basis of their principal subspace, exactly (inner products kept) when they span at most that many
    dimensions; the student logits are then z . (B^T a) = (B z) . a, a unit vector of the text space."""
    from net.mica import principal_basis
    torch.manual_seed(0)
    anchors = F.normalize(torch.randn(2, 5, 3, dtype=torch.float64) @ torch.randn(3, 12, dtype=torch.float64), dim=-1)
    basis = principal_basis(anchors, 4)                           # rank 3 <= 4: exact
    assert basis.shape == (12, 4)
    torch.testing.assert_close(basis.T @ basis, torch.eye(4, dtype=torch.float64), rtol=0, atol=1e-12)
    reduced = anchors @ basis
    torch.testing.assert_close(reduced @ reduced.transpose(1, 2), anchors @ anchors.transpose(1, 2), rtol=0, atol=1e-12)
    assert torch.equal(principal_basis(anchors, 4), basis)                            # signs fixed
    assert torch.equal(principal_basis(anchors, 12), torch.eye(12, dtype=torch.float64))
    narrow = principal_basis(F.normalize(torch.randn(2, 5, 12, dtype=torch.float64), dim=-1), 4)
    torch.testing.assert_close(narrow.T @ narrow, torch.eye(4, dtype=torch.float64), rtol=0, atol=1e-12)
    # in the model: feature_dim 8 < 384, part-wise FM through the shared head adds no parameter
    model = MICA(**dict(ENCODER, feature_dim=8), num_frames=16, text_features=UCLA_TEXT, descriptions=UCLA_DESC,
                 frest=False, harmonizer=False, fm_objective='part_pooled', part_head='shared')
    plain = MICA(**dict(ENCODER, feature_dim=8), num_frames=16, text_features=UCLA_TEXT, descriptions=UCLA_DESC,
                 frest=False, harmonizer=False, feature_modulation=False)
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in plain.parameters())
    assert model.fm_student_anchors.shape == (6, 10, 8) and model.part_proj is None     # 6 prompt kinds
    out = model(torch.randn(4, 3, 16, 20, 2), torch.randn(4, 3, 16, 20, 2), label=torch.tensor([0, 1, 2, 3]))
    out['loss'].backward()
    assert torch.isfinite(out['loss_kl']) and model.encoder_q.fc[0].weight.grad.abs().sum() > 0
