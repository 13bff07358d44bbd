"""The released SkeletonCLR/AimCLR YAML files run unchanged apart from their paths."""
import os
import pickle

import numpy as np
import torch

from main import main

PRETEXT = '''work_dir: {root}/skeletonclr_joint/pretext

# feeder
train_feeder: feeder.ntu_feeder.Feeder_dual
train_feeder_args:
  data_path: {root}/train_position.npy
  label_path: {root}/train_label.pkl
  shear_amplitude: 0.5
  temperal_padding_ratio: 6
  mmap: True

# model
model: net.skeletonclr.SkeletonCLR
model_args:
  base_encoder: net.st_gcn.Model
  pretrain: True
  feature_dim: 128
  queue_size: 32768
  momentum: 0.999
  Temperature: 0.07
  mlp: True
  in_channels: 3
  hidden_channels: 16
  hidden_dim: 256
  num_class: 60
  dropout: 0.5
  graph_args:
    layout: 'ntu-rgb+d'
    strategy: 'spatial'
  edge_importance_weighting: True

# optim
nesterov: False
weight_decay: 1e-4
base_lr: 0.1
optimizer: SGD
step: [250]

# training
device: [0]
batch_size: 128
test_batch_size: 128
num_epoch: 300
start_epoch: 0
view: 'joint'

# log
save_interval: 5
eval_interval: -1
pavi_log: False
'''

LINEAR = '''work_dir: {root}/skeletonclr_joint/linear_eval
weights: {root}/skeletonclr_joint/pretext/epoch1_model.pt
ignore_weights: [encoder_q.fc, encoder_k, queue]

# feeder
train_feeder: feeder.ntu_feeder.Feeder_single
train_feeder_args:
  data_path: {root}/train_position.npy
  label_path: {root}/train_label.pkl
  shear_amplitude: -1
  temperal_padding_ratio: -1
  mmap: True
test_feeder: feeder.ntu_feeder.Feeder_single
test_feeder_args:
  data_path: {root}/val_position.npy
  label_path: {root}/val_label.pkl
  shear_amplitude: -1
  temperal_padding_ratio: -1
  mmap: True

# model
model: net.skeletonclr.SkeletonCLR
model_args:
  base_encoder: net.st_gcn.Model
  pretrain: False
  in_channels: 3
  hidden_channels: 16
  hidden_dim: 256
  num_class: 60
  dropout: 0.5
  graph_args:
    layout: 'ntu-rgb+d'
    strategy: 'spatial'
  edge_importance_weighting: True

# optim
nesterov: False
weight_decay: 0.0
base_lr: 3.
optimizer: SGD
step: [80]

# training
device: [0]
batch_size: 128
test_batch_size: 128
num_epoch: 100
start_epoch: 0
stream: 'joint'

# log
save_interval: -1
eval_interval: 5
'''


def ntu_shaped(root, split, n, seed):
    rng = np.random.RandomState(seed)
    np.save(os.path.join(root, f'{split}_position.npy'), rng.randn(n, 3, 50, 25, 2).astype(np.float32) * 0.3)
    with open(os.path.join(root, f'{split}_label.pkl'), 'wb') as f:
        pickle.dump(([f'S001C001P001R{i // 60 + 1:03d}A{i % 60 + 1:03d}' for i in range(n)],   # unique names
                     [i % 60 for i in range(n)]), f)


def test_reference_yamls_run_unchanged(tmp_path, capsys):
    root = str(tmp_path)
    ntu_shaped(root, 'train', 128, 0)
    ntu_shaped(root, 'val', 60, 1)
    (tmp_path / 'pretext.yaml').write_text(PRETEXT.format(root=root))
    (tmp_path / 'linear.yaml').write_text(LINEAR.format(root=root))
    common = ['--num_worker', '0', '--progress_bar', 'false']
    assert main(['pretrain_skeletonclr', '--config', str(tmp_path / 'pretext.yaml'), '--num_epoch', '1', *common]) == 0
    ckpt = torch.load(tmp_path / 'skeletonclr_joint/pretext/epoch1_model.pt', weights_only=True)
    assert ckpt['queue'].shape == (128, 32768) and 'encoder_k.fc.2.weight' in ckpt
    assert main(['linear_evaluation', '--config', str(tmp_path / 'linear.yaml'), '--num_epoch', '2', *common]) == 0
    out = capsys.readouterr().out
    assert "config key 'pavi_log' is ignored" in out
    assert 'Best top1' in out
    log = open(tmp_path / 'skeletonclr_joint/linear_eval/log.txt').read()
    assert 'Missing keys (2, left at their initial values): encoder_q.fc.weight, encoder_q.fc.bias' in log
    # the test phase evaluates the saved best model and writes sample name -> scores
    best = str(tmp_path / 'skeletonclr_joint/linear_eval/best_model.pt')
    assert main(['linear_evaluation', '--config', str(tmp_path / 'linear.yaml'), '--phase', 'test',
                 '--weights', best, '--work_dir', str(tmp_path / 'test_phase'), *common]) == 0
    with open(tmp_path / 'test_phase/test_result.pkl', 'rb') as f:
        result = pickle.load(f)
    assert len(result) == 60 and next(iter(result.values())).shape == (60,)
