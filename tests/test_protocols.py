"""Finetune / semi-supervised / kNN evaluation processors and their configs."""
import glob
import json
import os

import numpy as np
import pytest
import torch

from conftest import ROOT, tiny_dataset
from processor.finetune_evaluation import FinetuneEvaluation
from processor.knn_evaluation import KNNEvaluation, knn_predict
from processor.linear_evaluation import LinearEvaluation
from processor.metrics import read_metrics, score_metrics
from torchlight.io import import_class, load_config_file

MODEL_ARGS = 'base_encoder=net.st_gcn.Model,pretrain=False,in_channels=3,hidden_channels=4,hidden_dim=8,' \
             'num_class=3,graph_args.layout=nw-ucla'


def protocol_args(tmp_path, train_feeder='feeder.ntu_feeder.Feeder_single', extra_feeder=''):
    data, label = tiny_dataset(str(tmp_path), n=30, T=12, num_class=3)
    feeder = f'data_path={data},label_path={label},shear_amplitude=-1,temperal_padding_ratio=-1'
    return ['--work_dir', str(tmp_path / 'run'), '--model', 'net.skeletonclr.SkeletonCLR', '--model_args', MODEL_ARGS,
            '--train_feeder', train_feeder, '--train_feeder_args', feeder + extra_feeder,
            '--test_feeder_args', feeder, '--batch_size', '6', '--test_batch_size', '8', '--num_epoch', '2',
            '--warm_up_epoch', '0', '--num_worker', '0', '--progress_bar', 'false']


def encoder_weights(proc):
    return {k: v.clone() for k, v in proc.model.encoder_q.state_dict().items() if not k.startswith('fc.')}


def test_finetune_trains_the_encoder_in_train_mode_while_linear_does_not(tmp_path):
    os.makedirs(tmp_path / 'f')
    fine = FinetuneEvaluation(protocol_args(tmp_path / 'f'))
    modes = []
    fine.model.encoder_q.register_forward_pre_hook(lambda m, x: modes.append(m.training))
    before = encoder_weights(fine)
    fine.start()
    assert True in modes                                 # trained in train() mode
    changed = [k for k, v in encoder_weights(fine).items() if v.dtype.is_floating_point and not torch.equal(v, before[k])]
    assert any('st_gcn_networks.0.gcn' in k for k in changed)
    assert fine.optimizer.param_groups[0]['nesterov']

    os.makedirs(tmp_path / 'l')
    lin = LinearEvaluation(protocol_args(tmp_path / 'l'))
    before = encoder_weights(lin)
    lin.start()
    after = encoder_weights(lin)
    assert all(torch.equal(v, before[k]) for k, v in after.items())          # BN statistics included
    for proc, work_dir in ((fine, tmp_path / 'f'), (lin, tmp_path / 'l')):    # results as data, per test epoch
        records = read_metrics(str(work_dir / 'run' / 'metrics.jsonl'))
        assert records[-1]['epoch'] == 2 and all(set(r) == {'epoch', 'top1', 'top5', 'class_top1', 'loss'}
                                                 for r in records)
        assert records[-1]['top1'] == proc.last_accuracy['top1']


def test_semi_supervised_subset_is_balanced_reproducible_and_logged(tmp_path):
    args = protocol_args(tmp_path, 'feeder.ntu_feeder.Feeder_semi', ',label_percent=0.4,semi_seed=3')
    proc = FinetuneEvaluation(args + ['--num_epoch', '1'])
    feeder = proc.train_feeder
    labels = feeder.label[feeder.index]
    assert sorted(np.bincount(labels).tolist()) == [4, 4, 4]
    proc.start()
    listed = open(tmp_path / 'run' / 'semi_subset.txt').read().split()
    assert listed == [feeder.sample_name[i] for i in feeder.index]
    again = FinetuneEvaluation(args + ['--work_dir', str(tmp_path / 'run2'), '--num_epoch', '1'])
    assert np.array_equal(again.train_feeder.index, feeder.index)
    other = FinetuneEvaluation(args[:-1] + [args[-1]] + ['--work_dir', str(tmp_path / 'run3'),
                               '--train_feeder_args', 'semi_seed=4'])
    assert not np.array_equal(other.train_feeder.index, feeder.index)


def test_knn_on_a_separable_set_is_perfect():
    torch.manual_seed(0)
    centres = torch.eye(4, 16) * 5
    train_labels = torch.arange(4).repeat_interleave(30)
    train = centres[train_labels] + 0.3 * torch.randn(120, 16)
    test_labels = torch.arange(4).repeat_interleave(10)
    test = centres[test_labels] + 0.3 * torch.randn(40, 16)
    for k in (10, 20, 40):
        scores = knn_predict(train, train_labels, test, k, temperature=0.1, num_class=4)
        assert (scores.argmax(1) == test_labels).all()
    # weighted voting: one very close neighbour of class 1 outweighs two far ones of class 0
    votes = knn_predict(torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.1, 1.0]]), torch.tensor([1, 0, 0]),
                        torch.tensor([[1.0, 0.05]]), k=3, temperature=0.1, num_class=2)
    assert votes.argmax(1).item() == 1


def test_knn_processor_reports_every_k(tmp_path):
    proc = KNNEvaluation(protocol_args(tmp_path) + ['--knn_k', '1', '5'])
    acc = proc.start()
    assert set(acc) == {1, 5} and all(0 <= v <= 1 for v in acc.values())
    records = read_metrics(str(tmp_path / 'run' / 'metrics.jsonl'))
    assert [(r['epoch'], r['k'], r['top1']) for r in records] == [(0, 1, acc[1]), (0, 5, acc[5])]
    assert all(0 <= r['class_top1'] <= 1 and r['top5'] >= r['top1'] for r in records)


def test_score_metrics_by_hand():
    scores = torch.tensor([[3.0, 1, 0, 0, 0, 0], [0, 3.0, 1, 0, 0, 0], [3.0, 0.5, 1, 0, 0, 0], [0, 0.5, 3.0, 0, 0, 0]])
    labels = torch.tensor([0, 0, 2, 2])        # class 0: 1 of 2 right, class 2: 1 of 2 right
    record = score_metrics(scores, labels)
    assert record['top1'] == 0.5 and record['class_top1'] == 0.5 and record['top5'] == 1.0
    assert record['loss'] == pytest.approx(torch.nn.functional.cross_entropy(scores, labels).item())
    labels = torch.tensor([0, 1, 1, 1])        # class 0 right (1/1), class 1 1 of 3: macro 2/3, micro 1/2
    assert score_metrics(scores, labels, loss=False) == {'top1': 0.5, 'top5': 1.0,
                                                          'class_top1': pytest.approx(2 / 3)}


PROTOCOL_CONFIGS = sorted(p for kind in ('finetune', 'semi10', 'semi1', 'knn')
                          for p in glob.glob(os.path.join(ROOT, 'config', '**', f'{kind}_*.yaml'), recursive=True))


CHECKED_PAIRS = set()


@pytest.mark.parametrize('path', PROTOCOL_CONFIGS, ids=lambda p: os.path.relpath(p, ROOT))
def test_every_protocol_config_loads_its_pretraining_checkpoint(path):
    """The protocol's model is built and accepts the encoder weights of its method's pretraining model."""
    os.chdir(ROOT)
    cfg = load_config_file(path)
    method = os.path.basename(path).split('_', 1)[1]
    pre = load_config_file(os.path.join(os.path.dirname(path), f'pretrain_{method}'))
    pre_args = dict(pre['model_args'], queue_size=pre['batch_size'])
    # a benchmark's knn / finetune / semi leaves of one method build the same pair of models: checked once
    key = json.dumps([pre['model'], pre_args, cfg['model'], cfg['model_args'], cfg['ignore_weights']], sort_keys=True)
    if key not in CHECKED_PAIRS:
        state = import_class(pre['model'])(**pre_args).state_dict()
        model = import_class(cfg['model'])(**cfg['model_args'])
        kept = {k: v for k, v in state.items() if not any(k.startswith(p) for p in cfg['ignore_weights'])}
        result = model.load_state_dict(kept, strict=False)
        assert not result.unexpected_keys and set(result.missing_keys) == {'encoder_q.fc.weight', 'encoder_q.fc.bias'}
        CHECKED_PAIRS.add(key)
    if 'semi' in path:
        assert cfg['train_feeder'].endswith('Feeder_semi')
        assert cfg['train_feeder_args']['label_percent'] == (0.1 if 'semi10' in path else 0.01)


def test_cosine_schedule_after_warm_up(tmp_path):
    """``lr_schedule: cosine``: the warm-up ramp, then base_lr (1 + cos(pi p)) / 2 down to 0 at the end;
    the default stays the reference's step schedule."""
    args = protocol_args(tmp_path) + ['--base_lr', '0.1', '--num_epoch', '12', '--warm_up_epoch', '2']
    lr = LinearEvaluation(args + ['--lr_schedule', 'cosine']).learning_rate      # the base Processor's
    assert lr(1, 0.5) == pytest.approx(0.1 * 1.5 / 2)
    assert lr(2, 0.0) == pytest.approx(0.1)
    assert lr(7, 0.0) == pytest.approx(0.05)                      # half-way through the 10 cosine epochs
    assert lr(11, 1.0) == pytest.approx(0.0, abs=1e-12)
    values = [lr(e, f) for e in range(2, 12) for f in (0.0, 0.5)]
    assert all(a > b for a, b in zip(values, values[1:]))
    os.makedirs(tmp_path / 'step')
    step = LinearEvaluation(protocol_args(tmp_path / 'step') + ['--base_lr', '0.1', '--step', '5']).learning_rate
    assert step(4) == pytest.approx(0.1) and step(5) == pytest.approx(0.01)
