"""docs/EXTENDING.md stays true: its code blocks are the files of tests/extending/, and the toy method
on the toy encoder runs through ``python main.py`` (pretraining, then linear evaluation) with one leaf
YAML each, as the guide says."""
import os
import re
import subprocess
import sys

import pytest
import torch

from conftest import ROOT

EXTENDING = os.path.join(ROOT, 'tests', 'extending')


def guide_blocks():
    text = open(os.path.join(ROOT, 'docs', 'EXTENDING.md')).read()
    return dict(re.findall(r'<!-- file: (\S+) -->\n```\w+\n(.*?)```\n', text, flags=re.S))


def test_the_guides_blocks_are_the_example_files():
    blocks = guide_blocks()
    files = sorted(os.path.relpath(os.path.join(EXTENDING, f), ROOT) for f in os.listdir(EXTENDING)
                   if f.endswith(('.py', '.yaml')))
    assert sorted(blocks) == files
    for path, block in blocks.items():
        assert open(os.path.join(ROOT, path)).read() == block, path


def test_the_toy_encoder_fulfils_the_contract(monkeypatch):
    monkeypatch.syspath_prepend(EXTENDING)
    from tiny_tcn import TinyTCN
    enc = TinyTCN(num_class=5, graph_args={'layout': 'nw-ucla'})
    assert enc.feature_map_shape(50) == (64, 13, 20)
    assert enc(torch.randn(2, 3, 50, 20, 2)).shape == (2, 5)
    assert enc.layout.name == 'nw-ucla'
    with pytest.raises(ValueError, match='TinyTCN built for C=3 channels, V=20 joints'):
        enc(torch.randn(2, 3, 50, 25, 1))


def test_a_class_outside_the_contract_is_refused():
    from net.moco import build_encoder
    with pytest.raises(ValueError, match='does not implement the encoder contract'):
        build_encoder(torch.nn.Linear, in_features=2, out_features=2)


def test_the_toy_method_runs_through_main(tmp_path):
    data, run = tmp_path / 'synthetic', tmp_path / 'run'
    subprocess.run([sys.executable, os.path.join(ROOT, 'tools', 'gen_synthetic.py'), '--out-folder', str(data),
                    '--num-train-per-class', '16', '--num-val-per-class', '4'], check=True, capture_output=True)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([EXTENDING, ROOT]))
    feed = f'data_path={data}/train_position.npy,label_path={data}/train_label.pkl'
    test = f'data_path={data}/val_position.npy,label_path={data}/val_label.pkl'
    common = ['--progress_bar', 'false', '--train_feeder_args', feed]
    pre = subprocess.run([sys.executable, 'main.py', 'pretrain', '--config',
                          'tests/extending/pretrain_symmetric_clr.yaml', '--work_dir', str(run / 'pretext'),
                          '--num_epoch', '2', '--save_interval', '2', *common],
                         cwd=ROOT, env=env, capture_output=True, text=True)
    assert pre.returncode == 0, pre.stderr[-2000:]
    state = torch.load(run / 'pretext' / 'epoch2_model.pt', weights_only=True)
    assert 'encoder_q.net.0.weight' in state and 'queue' in state
    lin = subprocess.run([sys.executable, 'main.py', 'linear_evaluation', '--config',
                          'tests/extending/linear_eval_symmetric_clr.yaml', '--work_dir', str(run / 'linear'),
                          '--weights', str(run / 'pretext' / 'epoch2_model.pt'), '--num_epoch', '5',
                          '--test_feeder_args', test, *common],
                         cwd=ROOT, env=env, capture_output=True, text=True)
    assert lin.returncode == 0, lin.stderr[-2000:]
    assert 'Best top1' in open(run / 'linear' / 'log.txt').read()
