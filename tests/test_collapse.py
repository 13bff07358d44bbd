"""The collapse detector (InfoNCE loss vs ln(K+1), embedding std) fires on a collapsing run (identical samples: one embedding, uniform logits)
and stays silent on a healthy one."""
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
    assert proc.collapse_warnings >= 1
    assert 'WARNING: representation collapse' in open(tmp_path / 'run' / 'log.txt').read()


def test_detector_can_stop_the_run_and_keeps_the_checkpoint(tmp_path):
    proc = run(tmp_path, '--collapse_stop', 'true', collapse=True)
    with pytest.raises(UserError, match='collapse'):
        proc.start()
    assert (tmp_path / 'run' / 'latest.pt').exists()


def test_detector_is_silent_on_a_healthy_run(tmp_path):
    proc = run(tmp_path)          # the same recipe on distinct samples
    proc.start()
    assert getattr(proc, 'collapse_warnings', 0) == 0, proc.epoch_info
