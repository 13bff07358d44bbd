"""The pretraining monitor in a run (processor/monitor.py; its rules on measured curves: test_monitor.py):
it fires on a collapsing run (identical samples: one embedding, uniform logits), records it in
metrics.jsonl, can stop the run keeping the epoch's encoder, and stays silent on a healthy run."""
import json

import numpy as np
import pytest

from conftest import write_config
from processor.pretrain import PretrainProcessor
from torchlight.io import UserError


def identical_samples(tmp_path):
    data = np.load(tmp_path / 'data.npy')
    data[:] = data[0]                      # every sample the same: nothing to tell apart
    np.save(tmp_path / 'data.npy', data)


def run(tmp_path, *extra, collapse=False):
    cfg = write_config(tmp_path)
    if collapse:
        identical_samples(tmp_path)
    proc = PretrainProcessor(['--config', cfg, '--num_epoch', '6', '--collapse_patience', '2', '--base_lr', '0.1',
                              '--model_args', 'queue_size=8,Temperature=0.2,hidden_channels=8,hidden_dim=16,'
                              'feature_dim=16,dropout=0',
                              '--train_feeder_args', 'shear_amplitude=-1,temperal_padding_ratio=-1', *extra])
    return proc


def test_detector_fires_on_a_collapsing_run(tmp_path):
    proc = run(tmp_path, collapse=True)
    proc.start()
    assert 'collapsed' in proc.monitor.active
    assert 'WARNING: collapsed at epoch' in open(tmp_path / 'run' / 'log.txt').read()
    records = [json.loads(line) for line in open(tmp_path / 'run' / 'metrics.jsonl')]
    assert 'collapsed' in records[-1]['warnings']


def test_detector_can_stop_the_run_and_keeps_the_checkpoint(tmp_path):
    proc = run(tmp_path, '--collapse_stop', 'true', collapse=True)
    with pytest.raises(UserError, match='collapse_stop') as stop:
        proc.start()
    assert (tmp_path / 'run' / 'latest.pt').exists()
    stopped_at = len(open(tmp_path / 'run' / 'metrics.jsonl').readlines())
    assert stopped_at < 6 and f'epoch{stopped_at}_model.pt' in str(stop.value)
    assert (tmp_path / 'run' / f'epoch{stopped_at}_model.pt').exists()


def test_detector_is_silent_on_a_healthy_run(tmp_path):
    proc = run(tmp_path)          # the same recipe on distinct samples
    proc.start()
    assert proc.monitor.active == {}, proc.epoch_info


def test_a_kNN_fall_warns_but_does_not_stop_the_run(tmp_path):
    proc = run(tmp_path, '--collapse_stop', 'true')
    proc.watch(dict(epoch=15, embed_std=0.014, loss_over_uniform=0.77, knn_top1=0.466))
    record = dict(epoch=20, embed_std=0.014, loss_over_uniform=0.77, knn_top1=0.302)
    proc.watch(record)
    assert record['warnings'] == ['knn_fall'] and proc.halt is None
    assert 'WARNING: knn_fall at epoch 20: kNN top-1 30.2%, 16.4 points below its best, 46.6% at epoch 15' in \
        open(tmp_path / 'run' / 'log.txt').read()
