"""Performance switches: bf16 autocast with float32 losses, and the device-resident data path."""
import math

import pytest
import torch

from conftest import write_config
from processor.pretrain import PretrainProcessor


@pytest.mark.parametrize('amp', ['none', 'bf16'])
def test_pretraining_under_autocast(tmp_path, amp):
    cfg = write_config(tmp_path)
    proc = PretrainProcessor(['--config', cfg, '--amp', amp, '--num_epoch', '2'])
    losses = []
    proc.model.register_forward_hook(lambda m, i, out: losses.append(out['loss']))
    proc.start()
    assert losses and all(l.dtype == torch.float32 and math.isfinite(l.item()) for l in losses)
    assert proc.model.queue.dtype == torch.float32


def test_info_nce_logits_are_float32_under_autocast():
    from net.moco import info_nce_logits
    q = torch.nn.functional.normalize(torch.randn(4, 8), dim=1).bfloat16()
    queue = torch.nn.functional.normalize(torch.randn(8, 16), dim=0)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        logits = info_nce_logits(q, q, queue, 0.07)
    assert logits.dtype == torch.float32


def test_data_on_device_gives_the_same_run_as_the_dataloader(tmp_path):
    """The device-resident path draws the same batches in the same order: identical weights."""
    cfg = write_config(tmp_path)
    runs = []
    for flag in ('false', 'true'):
        proc = PretrainProcessor(['--config', cfg, '--data_on_device', flag, '--num_epoch', '2',
                                  '--work_dir', str(tmp_path / flag)])
        proc.start()
        runs.append(proc.model.state_dict())
    for k in runs[0]:
        assert torch.equal(runs[0][k], runs[1][k]), k
