"""torchrun with 2 CPU processes (gloo) follows the 1-process run with the same global batch."""
import os
import re
import subprocess
import sys

import torch

from conftest import ROOT, write_config

ARGS = ['--num_epoch', '3', '--batch_size', '8', '--base_lr', '0.05', '--log_interval', '1', '--save_interval', '3',
        '--train_feeder_args', 'shear_amplitude=-1,temperal_padding_ratio=-1']


def losses(log):
    return [float(v) for v in re.findall(r'mean_loss_info: ([0-9.]+)', open(log).read())]


def test_two_processes_match_one_process(tmp_path):
    cfg = write_config(tmp_path, model_args={
        'base_encoder': 'net.st_gcn.Model', 'pretrain': True, 'feature_dim': 8, 'queue_size': 16, 'momentum': 0.9,
        'Temperature': 0.2, 'mlp': True, 'in_channels': 3, 'hidden_channels': 4, 'hidden_dim': 8, 'num_class': 4,
        'dropout': 0.0, 'graph_args': {'layout': 'nw-ucla', 'strategy': 'spatial'}})
    env = dict(os.environ, OMP_NUM_THREADS='1', DIST_BACKEND='gloo')
    one = subprocess.run([sys.executable, 'main.py', 'pretrain_skeletonclr', '--config', cfg, '--work_dir',
                          str(tmp_path / 'one'), '--model_args', 'shuffle_bn_groups=2', *ARGS],
                         cwd=ROOT, env=env, capture_output=True, text=True)
    assert one.returncode == 0, one.stderr[-2000:]
    two = subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', '2',
                          'main.py', 'pretrain_skeletonclr', '--config', cfg, '--work_dir', str(tmp_path / 'two'),
                          *ARGS], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert two.returncode == 0, two.stderr[-3000:]
    log_two = open(tmp_path / 'two' / 'log.txt').read()
    assert 'Distributed: 2 processes' in log_two
    a, b = losses(tmp_path / 'one' / 'log.txt'), losses(tmp_path / 'two' / 'log.txt')
    assert len(a) == len(b) == 3
    print('1 process:', a, '2 processes:', b)
    # the queries see the same BatchNorm sub-batches (the rank slices), and the keys are shuffled across
    # ranks as the 1-process run shuffles them over its two groups (MoCo's shuffle-BN), so the two
    # trajectories differ only by float reduction order and the permutations drawn
    for x, y in zip(a, b):
        assert abs(x - y) < 0.01 * x, (a, b)
    # rank 0 alone wrote the checkpoints; the queue holds keys of both ranks (global batch 8 per step)
    state = torch.load(tmp_path / 'two' / 'epoch3_model.pt', weights_only=True)
    assert int(state['queue_ptr']) == (3 * 2 * 8) % 16
