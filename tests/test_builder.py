"""processor/build.py: the one builder the processors and the tools use (config, model, feeder with its
stream, features), the benchmark timing the processors' own train step, the progress bar on rank 0 only."""
import os

import numpy as np
import pytest
import torch
import yaml

from conftest import ROOT, tiny_dataset, write_config
from feeder.tools import to_stream
from processor import build
from torchlight.io import UserError

MODEL_ARGS = {'base_encoder': 'net.st_gcn.Model', 'pretrain': False, 'in_channels': 3, 'hidden_channels': 4,
              'hidden_dim': 8, 'num_class': 4, 'dropout': 0.5,
              'graph_args': {'layout': 'nw-ucla', 'strategy': 'spatial'}, 'edge_importance_weighting': True}


def eval_cfg(tmp_path, **overrides):
    data, label = tiny_dataset(str(tmp_path), n=16, V=20, T=12, num_class=4)
    cfg = {'model': 'net.skeletonclr.SkeletonCLR', 'model_args': dict(MODEL_ARGS),
           'train_feeder': 'feeder.ntu_feeder.Feeder_dual',
           'train_feeder_args': {'data_path': data, 'label_path': label, 'shear_amplitude': 0.5,
                                 'temperal_padding_ratio': 6},
           'test_feeder': 'feeder.ntu_feeder.Feeder_single',
           'test_feeder_args': {'data_path': data, 'label_path': label, 'shear_amplitude': -1,
                                'temperal_padding_ratio': -1}}
    cfg.update(overrides)
    return cfg


def test_build_model_for_inference_keeps_only_the_query_encoder():
    cfg = {'model': 'net.skeletonclr.SkeletonCLR',
           'model_args': dict(MODEL_ARGS, pretrain=True, feature_dim=8, queue_size=16)}
    assert hasattr(build.build_model(cfg), 'encoder_k')
    model = build.build_model(cfg, for_inference=True)
    assert not hasattr(model, 'encoder_k') and build.inference_encoder(model) is model.encoder_q
    supervised = build.build_model({'model': 'net.st_gcn.Model', 'model_args': {
        k: v for k, v in MODEL_ARGS.items() if k not in ('base_encoder', 'pretrain')}}, for_inference=True)
    assert build.inference_encoder(supervised) is supervised
    with pytest.raises(UserError, match="model_args: unknown key 'nope'"):
        build.build_model({'model': 'net.st_gcn.Model', 'model_args': {'nope': 1}})
    with pytest.raises(UserError, match="model 'torch.nn.Linear' is neither a method .* nor an encoder"):
        build.build_model({'model': 'torch.nn.Linear', 'model_args': {}})
    with pytest.raises(UserError, match='no model given'):
        build.build_model({})


def test_feeder_without_augmentation_takes_the_test_preprocessing(tmp_path):
    cfg = eval_cfg(tmp_path)
    name, args = build.feeder_spec(cfg, 'train', augment=False)
    assert name.endswith('Feeder_single') and args['shear_amplitude'] == -1
    assert args['data_path'] == cfg['train_feeder_args']['data_path']
    name, args = build.feeder_spec(dict(cfg, test_feeder_args={}), 'train', augment=False)
    assert name.endswith('Feeder_dual') and args['shear_amplitude'] == -1 and args['temperal_padding_ratio'] == -1
    assert build.feeder_spec(cfg, 'train')[1] == cfg['train_feeder_args']
    with pytest.raises(UserError, match="unknown key 'shear_amplitud'.*shear_amplitude"):
        build.build_feeder(dict(cfg, test_feeder_args=dict(cfg['test_feeder_args'], shear_amplitud=1)), 'test')


@pytest.mark.parametrize('stream', ['joint', 'bone', 'motion'])
def test_the_stream_conversion_lives_with_the_feeder(tmp_path, stream):
    cfg = eval_cfg(tmp_path, stream=stream)
    feeder = build.build_feeder(cfg, 'test')
    assert feeder.stream == stream
    raw = torch.from_numpy(np.array(feeder.data[:4], dtype=np.float32))
    expected = to_stream(feeder.views(raw)[0], stream, feeder.layout.parents)
    torch.testing.assert_close(build.stream_views(feeder, raw)[0], expected)
    assert build.build_feeder(dict(cfg, view='motion'), 'test').stream == 'motion'      # CrosSCLR's key
    with pytest.raises(UserError, match="stream/view 'edges' is unknown"):
        build.build_feeder(cfg, 'test', stream='edges')


def test_extract_features_is_what_linear_evaluation_caches(tmp_path):
    from processor.linear_evaluation import LinearEvaluation
    cfg = eval_cfg(tmp_path, work_dir=str(tmp_path / 'run'), batch_size=4, test_batch_size=4, num_epoch=1,
                   num_worker=0, progress_bar=False, stream='bone')
    cfg['train_feeder'] = 'feeder.ntu_feeder.Feeder_single'
    cfg['train_feeder_args'] = dict(cfg['test_feeder_args'])
    path = tmp_path / 'linear.yaml'
    path.write_text(yaml.safe_dump(cfg))
    proc = LinearEvaluation(['--config', str(path)])
    feats, labels, indices = proc.split_features('test')
    feeder = build.build_feeder(cfg, 'test', batch_augment=True)
    loader = torch.utils.data.DataLoader(feeder, batch_size=5)
    again = build.extract_features(proc.model, loader)
    torch.testing.assert_close(again[0], feats)
    assert again[1].tolist() == labels.tolist() and again[2].tolist() == indices.tolist() == list(range(16))
    assert feats.shape == (16, 8)


def test_benchmark_times_the_processors_own_train_step(tmp_path, monkeypatch):
    from processor.pretrain import PretrainProcessor
    from tools import benchmark
    calls = []
    own = PretrainProcessor.train_epoch

    def spy(self, epoch):
        calls.append(type(self.data_loader['train']).__name__)
        return own(self, epoch)
    monkeypatch.setattr(PretrainProcessor, 'train_epoch', spy)
    (result,) = benchmark.main(['--config', write_config(tmp_path), '--batch-size', '4', '--warmup', '1',
                                '--iters', '2', '--num-samples', '8', '--frames', '12', '--threads', '1'])
    assert calls == ['TimedLoader'] and result['processor'] == 'processor.pretrain.PretrainProcessor'
    assert result['mode'] == 'pretrain' and result['samples_per_second'] > 0 and result['shape'][1] == 12


def test_progress_bar_only_on_rank_zero(tmp_path):
    from processor.pretrain import PretrainProcessor
    proc = PretrainProcessor(['--config', write_config(tmp_path), '--progress_bar', 'true'])
    assert proc.iterate([1, 2], 'x').enabled
    proc.is_main = False                       # a torchrun rank other than 0
    assert not proc.iterate([1, 2], 'x').enabled


def test_the_tools_read_composed_configs():
    from tools import complexity
    path = os.path.join(ROOT, 'config', 'ntu60', 'xsub', 'linear_eval_skeletonclr.yaml')
    model, encoder = complexity.build_inference_model(complexity.load_config(path))
    assert encoder is model.encoder_q and encoder.fc.out_features == 60
