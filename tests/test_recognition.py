"""Supervised recognition processor, Feeder_supervised options, and CSRE as a removable train head."""
import glob
import os
import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import ROOT, tiny_dataset
from feeder import tools
from processor.recognition import Recognition
from torchlight.io import import_class, load_config_file


def test_valid_crop_resize_matches_interpolate_on_the_valid_frames():
    x = torch.zeros(2, 3, 100, 5, 1)
    x[0, :, :80] = 1 + torch.arange(80.).view(1, 80, 1, 1)
    x[1, :, :100] = 1 + torch.arange(100.).view(1, 100, 1, 1)
    assert tools.valid_lengths(x).tolist() == [80, 100]
    y = tools.valid_crop_resize(x, (0.95,), window=40)
    for i, L in enumerate((80, 100)):
        b = int((1 - 0.95) * L / 2)
        clip = x[i:i + 1, :, b:L - b].permute(0, 1, 3, 4, 2).reshape(1, 15, L - 2 * b)
        ref = F.interpolate(clip, size=40, mode='linear', align_corners=False)
        assert torch.allclose(ref.view(1, 3, 5, 1, 40).permute(0, 1, 4, 2, 3), y[i:i + 1], atol=1e-5)
    z = tools.valid_crop_resize(x, (0.5, 1.0), window=40, min_length=10)
    assert z.shape == (2, 3, 40, 5, 1) and (z[:, :, :] > 0).all()       # never samples the empty padding


def test_random_rot_is_a_rotation():
    x = torch.randn(4, 3, 6, 5, 2)
    y = tools.random_rot(x, 0.3)
    assert torch.allclose(x.norm(dim=1), y.norm(dim=1), atol=1e-5)
    assert not torch.allclose(x, y)


def recognition_args(tmp_path, extra=()):
    data, label = tiny_dataset(str(tmp_path), n=24, T=16, num_class=3)
    feeder = f'data_path={data},label_path={label},window_size=16'
    model_args = 'in_channels=3,hidden_channels=4,hidden_dim=8,num_class=3,graph_args.layout=nw-ucla'
    return ['--work_dir', str(tmp_path / 'run'), '--model', 'net.st_gcn.Model', '--model_args', model_args,
            '--train_feeder_args', feeder, '--test_feeder_args', feeder + ',p_interval=[0.95]',
            '--batch_size', '8', '--test_batch_size', '8', '--num_epoch', '1', '--warm_up_epoch', '0',
            '--num_worker', '0', '--progress_bar', 'false', *extra]


def test_csre_is_absent_from_the_saved_model_and_changes_nothing_at_test_time(tmp_path):
    head_args = ['--train_head', 'net.csre.CSRE', '--train_head_args',
                 'num_positives=4,num_hard_negatives=4,num_random_negatives=4']
    proc = Recognition(recognition_args(tmp_path, head_args))
    proc.start()
    assert proc.head is not None and 'loss_s' in proc.epoch_info and 'loss_t' in proc.epoch_info
    state = torch.load(tmp_path / 'run' / 'best_model.pt', weights_only=True)
    assert not any('bank' in k or k.startswith(('head', 'csre', 'stfd')) for k in state)
    encoder = import_class('net.st_gcn.Model')(in_channels=3, hidden_channels=4, hidden_dim=8, num_class=3,
                                               graph_args={'layout': 'nw-ucla'})
    encoder.load_state_dict(state)                                          # strict: plain encoder keys
    with open(tmp_path / 'run' / 'test_result.pkl', 'rb') as f:
        trained = pickle.load(f)
    # the same checkpoint tested by a run that knows nothing of CSRE gives the same scores
    os.makedirs(tmp_path / 'x')
    test_args = recognition_args(tmp_path / 'x', ['--phase', 'test', '--weights', str(tmp_path / 'run' / 'best_model.pt')])
    tester = Recognition(test_args)
    tester.start()
    with open(tmp_path / 'x' / 'run' / 'test_result.pkl', 'rb') as f:
        tested = pickle.load(f)
    assert trained.keys() == tested.keys()
    for name in trained:
        np.testing.assert_allclose(trained[name], tested[name], rtol=1e-5, atol=1e-5)
    assert tester.head is None


def test_latest_checkpoint_keeps_the_head_for_resume(tmp_path):
    head_args = ['--train_head', 'net.csre.CSRE', '--train_head_args',
                 'num_positives=4,num_hard_negatives=4,num_random_negatives=4']
    proc = Recognition(recognition_args(tmp_path, head_args))
    proc.start()
    latest = torch.load(tmp_path / 'run' / 'latest.pt', weights_only=False)
    head_state = latest['extra']['train_head']
    assert any('bank' in k for k in head_state)
    filled = (head_state['bank_label'] >= 0).sum().item()
    assert filled == 24 - 24 % 8 or filled == 24


def test_recognition_without_head_trains_the_whole_encoder(tmp_path):
    proc = Recognition(recognition_args(tmp_path, ['--num_epoch', '2']))
    before = {k: v.clone() for k, v in proc.model.state_dict().items()}
    proc.start()
    changed = [k for k, v in proc.model.state_dict().items() if v.dtype.is_floating_point and not torch.equal(v, before[k])]
    assert any(k.startswith('st_gcn_networks.0') for k in changed) and any(k.startswith('fc') for k in changed)
    assert proc.head is None and proc.optimizer.param_groups[0]['nesterov']


RECOGNITION_CONFIGS = sorted(glob.glob(os.path.join(ROOT, 'config', '**', 'recognition_*.yaml'), recursive=True))


@pytest.mark.parametrize('path', RECOGNITION_CONFIGS, ids=lambda p: os.path.relpath(p, ROOT))
def test_every_recognition_config_builds(path):
    from net.csre import CSRE
    cfg = load_config_file(path)
    args = dict(cfg['model_args'])
    for width in ('hidden_channels', 'base_channel', 'out_channel'):      # small widths: a build check
        if width in args:
            args[width] = 8
    model = import_class(cfg['model'])(**args)
    V = 20 if 'ucla' in path else 25
    M = args.get('num_person', 1 if 'ucla' in path else 2)
    W = cfg['train_feeder_args']['window_size']
    assert model(torch.randn(1, 3, W, V, M)).shape == (1, args['num_class'])
    assert ('csre' in os.path.basename(path)) == (cfg.get('train_head') == 'net.csre.CSRE')
    stream = os.path.basename(path)[:-len('.yaml')]
    expected = next((s for s in ('bone_motion', 'motion', 'bone') if stream.endswith('_' + s)), 'joint')
    assert cfg['stream'] == expected
    if cfg.get('train_head'):
        C, T, V_ = model.feature_map_shape(W)
        CSRE(C, V_, num_samples=10, num_class=args['num_class'], num_frames=T, **cfg['train_head_args'])
