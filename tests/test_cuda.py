"""GPU-only checks (skipped without CUDA): the channels-last ST-GCN against the reference on the GPU in
float32 and bf16, and a pretraining run on the device-resident path.  `tools/gpu_check.sh` runs these
and the benchmark matrix on a GPU machine."""
import math

import pytest
import torch

from conftest import write_config
from test_st_gcn import train_step_outputs_and_grads

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')

NTU_GRAPH = {'layout': 'ntu-rgb+d', 'strategy': 'spatial'}


def twin_models():
    from net.st_gcn import Model
    torch.manual_seed(0)
    fast = Model(3, 16, 256, 60, NTU_GRAPH, True, implementation='fast').cuda()
    reference = Model(3, 16, 256, 60, NTU_GRAPH, True, implementation='reference').cuda()
    reference.load_state_dict(fast.state_dict())
    return fast, reference


def test_auto_is_fast_on_cuda_and_equals_reference_in_float32():
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    fast, reference = twin_models()
    assert fast.implementation == 'fast'
    outs, grads = train_step_outputs_and_grads((fast, reference), torch.randn(32, 3, 50, 25, 2, device='cuda'))
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-4, atol=1e-4)
    for k in grads[1]:
        a, b = grads[0][k], grads[1][k]
        assert (a - b).norm() <= 1e-3 * b.norm() + 1e-6, k


def test_fast_path_under_bf16_autocast_on_cuda():
    fast, reference = twin_models()
    fast.eval(), reference.eval()
    x = torch.randn(32, 3, 50, 25, 2, device='cuda')
    expected = reference(x)
    with torch.autocast('cuda', dtype=torch.bfloat16):
        out = fast(x)
    assert torch.isfinite(out).all()
    assert (out.float() - expected).norm() / expected.norm() < 0.03


def test_pretraining_on_cuda_with_device_resident_data_and_bf16(tmp_path):
    from processor.pretrain import PretrainProcessor
    from processor.processor import DeviceLoader
    cfg = write_config(tmp_path)
    proc = PretrainProcessor(['--config', cfg, '--device', '0', '--amp', 'bf16', '--num_epoch', '2'])
    assert isinstance(proc.data_loader['train'], DeviceLoader)           # data_on_device: auto
    proc.start()
    assert math.isfinite(proc.epoch_info['loss'])
    assert proc.model.queue.dtype == torch.float32 and proc.model.queue.is_cuda
