"""Exact resume after SIGKILL at a random moment, truncated latest.pt, and resume: auto."""
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml

from conftest import ROOT, tiny_dataset


def config(tmp_path, epochs=5):
    data, label = tiny_dataset(str(tmp_path), n=96, T=24, num_class=4)
    cfg = {
        'train_feeder': 'feeder.ntu_feeder.Feeder_dual',
        'train_feeder_args': {'data_path': data, 'label_path': label},
        'model': 'net.skeletonclr.SkeletonCLR',
        'model_args': {'base_encoder': 'net.st_gcn.Model', 'feature_dim': 16, 'queue_size': 32, 'momentum': 0.99,
                       'Temperature': 0.2, 'in_channels': 3, 'hidden_channels': 8, 'hidden_dim': 16, 'num_class': 4,
                       'dropout': 0.5, 'shuffle_bn_groups': 2, 'graph_args': {'layout': 'nw-ucla'}},
        'base_lr': 0.05, 'batch_size': 8, 'num_epoch': epochs, 'save_interval': epochs,
        'progress_bar': False, 'log_interval': 1, 'seed': 7,
    }
    path = tmp_path / 'config.yaml'
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def run(cfg, work_dir, *extra, **kw):
    return subprocess.Popen([sys.executable, 'main.py', 'pretrain_skeletonclr', '--config', cfg,
                             '--work_dir', str(work_dir), *extra], cwd=ROOT,
                            env=dict(os.environ, OMP_NUM_THREADS='1'), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, **kw)


def assert_same_weights(a, b):
    sa, sb = torch.load(a, weights_only=True), torch.load(b, weights_only=True)
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def kill_at_random_iteration(cfg, work_dir, seed):
    rng = random.Random(seed)
    target = f'Iter {rng.randint(0, 11)} Done'
    epoch = f'Training epoch: {rng.randint(2, 4)}'
    proc = run(cfg, work_dir)
    log = os.path.join(work_dir, 'log.txt')
    deadline = time.time() + 300
    while time.time() < deadline:
        text = open(log).read() if os.path.exists(log) else ''
        if epoch in text and target in text.split(epoch, 1)[1]:
            break
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.01)
    assert proc.poll() is None, 'the run ended before it could be killed'
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return epoch, target


def test_sigkill_then_resume_is_bit_identical(tmp_path):
    cfg = config(tmp_path)
    full = run(cfg, tmp_path / 'full')
    assert full.wait() == 0, full.stderr.read()
    where = kill_at_random_iteration(cfg, tmp_path / 'killed', seed=os.getpid())
    resumed = run(cfg, tmp_path / 'killed', '--resume', 'true')
    assert resumed.wait() == 0, resumed.stderr.read()
    assert_same_weights(tmp_path / 'full' / 'epoch5_model.pt', tmp_path / 'killed' / 'epoch5_model.pt')
    text = open(tmp_path / 'killed' / 'log.txt').read()
    assert 'Resumed from' in text, where


def test_truncated_latest_falls_back_to_the_previous_checkpoint(tmp_path):
    cfg = config(tmp_path, epochs=3)
    full = run(cfg, tmp_path / 'full')
    assert full.wait() == 0
    part = run(cfg, tmp_path / 'part', '--num_epoch', '2', '--save_interval', '3')
    assert part.wait() == 0
    latest = tmp_path / 'part' / 'latest.pt'
    assert (tmp_path / 'part' / 'latest.prev.pt').exists()
    latest.write_bytes(latest.read_bytes()[:1000])           # a write cut short
    resumed = run(cfg, tmp_path / 'part', '--resume', 'true')
    assert resumed.wait() == 0, resumed.stderr.read()
    assert 'unreadable (truncated?)' in open(tmp_path / 'part' / 'log.txt').read()
    assert_same_weights(tmp_path / 'full' / 'epoch3_model.pt', tmp_path / 'part' / 'epoch3_model.pt')


def test_resume_auto(tmp_path):
    cfg = config(tmp_path, epochs=1)
    first = run(cfg, tmp_path / 'w', '--resume', 'auto')          # nothing to resume: a fresh run
    assert first.wait() == 0, first.stderr.read()
    refused = run(cfg, tmp_path / 'w')                             # a finished run is never overwritten
    assert refused.wait() == 2 and '--resume' in refused.stderr.read()
    again = run(cfg, tmp_path / 'w', '--resume', 'auto', '--num_epoch', '2', '--save_interval', '2')
    assert again.wait() == 0, again.stderr.read()
    log = open(tmp_path / 'w' / 'log.txt').read()
    assert 'Resumed from' in log and (tmp_path / 'w' / 'epoch2_model.pt').exists()


def test_nan_loss_stops_keeps_the_last_good_checkpoint_and_logs_the_iteration(tmp_path):
    from processor.pretrain import PretrainProcessor
    from torchlight.io import UserError
    cfg = config(tmp_path, epochs=3)
    proc = PretrainProcessor(['--config', cfg, '--work_dir', str(tmp_path / 'w')])
    calls = {'n': 0}
    forward = proc.model.forward

    def poisoned(*args, **kwargs):
        out = forward(*args, **kwargs)
        calls['n'] += 1
        if calls['n'] == 12 + 3:                     # epoch 2, iteration 2 (12 iterations per epoch)
            out['loss'] = out['loss'] * float('nan')
        return out
    proc.model.forward = poisoned
    with pytest.raises(UserError, match='epoch 2 iteration 2'):
        proc.start()
    state = torch.load(tmp_path / 'w' / 'latest.pt', weights_only=True)
    assert state['epoch'] == 1 and all(torch.isfinite(v).all() for v in state['model'].values() if v.is_floating_point())
    assert 'ERROR: loss is nan at epoch 2 iteration 2' in open(tmp_path / 'w' / 'log.txt').read()
