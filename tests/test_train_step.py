"""processor/train_step.py: the capture-safe step (``--cuda_graph true``) computes what the eager one
does, on the CPU without the graph, in float64; on CUDA, captured and replayed (skipped without a GPU)."""
import os

import numpy as np
import pytest
import torch

from conftest import ROOT, write_config
from processor.pretrain import PretrainProcessor
from processor.train_step import TrainStep
from torchlight.io import UserError

QUIET = ['--print_log', 'false', '--save_log', 'false']
METHODS = {
    'SkeletonCLR': {},
    # mining from the second epoch and a ramped divergence: the epoch-dependent branches a graph bakes in
    'AimCLR': dict(model='net.aimclr.AimCLR', train_feeder='feeder.ntu_feeder.Feeder_triple'),
    'MsMCLR': dict(model='net.msmclr.MsMCLR', train_feeder='feeder.ntu_feeder.Feeder_triple'),
}
TINY_SWAP = {'swap_params': [[2, 3, 1, 2, 2, 0.5]]}          # 12 frames: 3 time units
MODEL_ARGS = {
    # the mixing draws on the device (partner, groups, window), a fixed number of mixed views
    'SkeleMixCLR': dict(swap_cfg=TINY_SWAP),
    # Table 3's reading on SkeleMixCLR: FreST (depthwise), part-wise FM through the shared head on a z_q
    # narrower than the text (principal basis), the narrow harmonizer, the labels of the text teacher
    'MICA': dict(swap_cfg=TINY_SWAP, base_method='skelemixclr', num_frames=12, decoupling='depthwise',
                 text_features='config/text/features/ucla.minilm.npz', descriptions='config/text/descriptions/ucla.yaml',
                 fm_objective='part_pooled', part_head='shared', harmonizer_width=4),
}
METHODS.update({'SkeleMixCLR': dict(model='net.skelemixclr.SkeleMixCLR'),
                'MICA': dict(model='net.mica.MICA', text_class_subset=True)})
EPOCH_KEYS = {'AimCLR': 'mining_epoch=1,divergence_ramp_epochs=2', 'MsMCLR': 'mining_epoch=1,divergence_ramp_epochs=2'}


def processor(cfg, work_dir, method, *extra):
    args = ['--config', cfg, '--work_dir', str(work_dir), '--num_epoch', '2', '--lr_schedule', 'cosine',
            '--weight_decay', '1e-4', '--nesterov', 'true', *QUIET, *extra]
    if method in EPOCH_KEYS:
        args += ['--model_args', EPOCH_KEYS[method]]
    return PretrainProcessor(args)


def method_config(tmp_path, method):
    """``write_config``'s tiny run of ``method`` (its model and model_args)."""
    import yaml
    cfg = write_config(tmp_path, **METHODS[method])
    content = yaml.safe_load(open(cfg))
    for key, value in MODEL_ARGS.get(method, {}).items():
        content['model_args'][key] = os.path.join(ROOT, value) if key in ('text_features', 'descriptions') else value
    open(cfg, 'w').write(yaml.safe_dump(content))
    return cfg


def float64_data(cfg_path):
    """Rewrite the tiny dataset of ``write_config`` in float64 (the comparison is in float64)."""
    import yaml
    cfg = yaml.safe_load(open(cfg_path))
    path = cfg['train_feeder_args']['data_path']
    np.save(path, np.load(path).astype(np.float64))


@pytest.mark.parametrize('method', list(METHODS))
def test_capture_safe_step_equals_the_eager_step_in_float64(tmp_path, method):
    """Two epochs of 2 steps each (cosine lr per iteration, Nesterov, weight decay, the epoch keywords):
    the capture-safe step (tensor lr, fused SGD, static-buffer inputs, no host reads) leaves every
    parameter and buffer (queue included) where the eager step does."""
    cfg = method_config(tmp_path, method)
    float64_data(cfg)
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        states, losses = [], []
        for name, graph_form in (('eager', False), ('safe', True)):
            p = processor(cfg, tmp_path / name, method)
            p.model.double()                  # in place: the optimizer keeps the same parameters
            views = p.make_views
            p.make_views = lambda raw, views=views: [v.double() for v in views(raw.double())]
            initial = {k: v.clone() for k, v in p.model.state_dict().items()}
            p.train_step = TrainStep(p, cuda_graph=graph_form, capture=False)
            if graph_form:
                assert all(torch.is_tensor(g['lr']) and g['fused'] for g in p.optimizer.param_groups)
            address = p.model.queue.data_ptr()
            torch.manual_seed(7)
            for epoch in range(2):
                p.train_epoch(epoch)
            assert (p.model.queue.data_ptr() == address) == graph_form      # in place: what a graph reads
            states.append({k: v.clone() for k, v in p.model.state_dict().items()})
            losses.append(p.epoch_info)
    finally:
        torch.set_default_dtype(default)
    eager, safe = states
    assert eager.keys() == safe.keys()
    for key in eager:
        if eager[key].is_floating_point():
            assert torch.allclose(eager[key], safe[key], rtol=0, atol=1e-12), (key, (eager[key] - safe[key]).abs().max().item(), (eager[key] - safe[key]).abs().gt(1e-12).nonzero()[:5].tolist())
        else:
            assert torch.equal(eager[key], safe[key]), key
    assert losses[0] == pytest.approx(losses[1], rel=1e-12)
    moved = [k for k in eager if eager[k].is_floating_point() and not torch.equal(eager[k], initial[k])]
    assert 'queue' in moved and any(k.startswith('encoder_q.') for k in moved)


def test_the_captured_learning_rate_follows_the_schedule_and_resumes_as_a_float(tmp_path):
    cfg = write_config(tmp_path)
    p = processor(cfg, tmp_path / 'run', 'SkeletonCLR')
    p.train_step = TrainStep(p, cuda_graph=True, capture=False)
    lr = p.optimizer.param_groups[0]['lr']
    assert float(lr) == pytest.approx(0.1) and p.adjust_lr(1, 0.5) == pytest.approx(float(lr), rel=1e-6)
    assert float(lr) == pytest.approx(0.1 * 0.5 * (1 + np.cos(0.75 * np.pi)), rel=1e-6)    # cosine, 2 epochs
    assert p.optimizer.param_groups[0]['lr'] is lr                # filled in place: a graph reads it
    from processor.checkpoint import portable_optimizer_state
    group = portable_optimizer_state(p.optimizer)['param_groups'][0]
    assert isinstance(group['lr'], float) and group['fused'] is None and group['foreach'] is None


@pytest.mark.parametrize('overrides, message', [
    ({}, 'cuda_graph: true needs a CUDA device'),
    ({'model': 'extending.symmetric_clr.SymmetricCLR'}, 'cuda_graph: true needs a capture-safe method'),
])
def test_cuda_graph_where_it_cannot_run_is_a_one_line_error(tmp_path, overrides, message):
    if torch.cuda.is_available():
        pytest.skip('a CUDA device is present')
    cfg = write_config(tmp_path, **overrides)
    with pytest.raises(UserError, match=message):
        PretrainProcessor(['--config', cfg, '--cuda_graph', 'true', *QUIET])


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
@pytest.mark.parametrize('method', list(METHODS))
def test_captured_step_trains_as_the_eager_one_on_cuda(tmp_path, method):
    """Captured and replayed: finite losses, the weights move, and after the same steps the loss is
    close to the eager run's (the random draws differ: the graph's generator offsets are its own)."""
    cfg = method_config(tmp_path, method)
    means = []
    for name, graph in (('eager', 'false'), ('graph', 'true')):
        p = processor(cfg, tmp_path / name, method, '--cuda_graph', graph, '--device', '0')
        before = {k: v.clone() for k, v in p.model.state_dict().items()}
        for epoch in range(2):
            p.train_epoch(epoch)
        after = p.model.state_dict()
        assert any(not torch.equal(before[k], after[k]) for k in before if before[k].is_floating_point())
        means.append(p.epoch_info['loss'])
    assert all(np.isfinite(means)) and means[1] == pytest.approx(means[0], rel=0.2)
