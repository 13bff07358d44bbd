"""GPU-only checks (skipped without CUDA): the channels-last ST-GCN against the reference on the GPU in
float32 and bf16, and a pretraining run on the device-resident path.  `tools/gpu_check.sh` runs these
and the benchmark matrix on a GPU machine."""
import copy
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
    """The two paths are one function (float64 on CUDA: 1e-10); in float32 each path's gradients are within
    2e-2 of the float64 ones relative to the module's gradient norm: the fast path's channels-last
    BatchNorm kernels sum in plain float32, measured up to 8.5e-3 (CPU) and 2e-3 (H200) against float64
    (docs/PERFORMANCE.md, "The float32 GPU test and its bound")."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    fast, reference = twin_models()
    assert fast.implementation == 'fast'
    x = torch.randn(32, 3, 50, 25, 2, device='cuda')
    exact = [copy.deepcopy(m).double() for m in (fast, reference)]
    outs64, grads64 = train_step_outputs_and_grads(exact, x.double())
    torch.testing.assert_close(outs64[0], outs64[1], rtol=1e-10, atol=1e-10)
    for k in grads64[1]:
        torch.testing.assert_close(grads64[0][k], grads64[1][k], rtol=1e-8, atol=1e-10, msg=k)
    outs, grads = train_step_outputs_and_grads((fast, reference), x)
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-4, atol=1e-4)
    bound = 2e-2     # twice the largest measured error of the fast path (docs/PERFORMANCE.md)
    # relative to the module's whole gradient: a bias that feeds a BatchNorm has the exact gradient 0, and
    # its float32 value is the rounding of sums as large as the weight gradient's
    scale = {}
    for k, truth in grads64[1].items():
        module = k.rsplit('.', 1)[0]
        scale[module] = (scale.get(module, 0.0) ** 2 + truth.norm().item() ** 2) ** 0.5
    for k, truth in grads64[1].items():
        for g in (grads[0][k], grads[1][k]):
            assert (g.double() - truth).norm() <= bound * scale[k.rsplit('.', 1)[0]] + 1e-6, k


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
