"""tools/benchmark.py runs every kind of step and reports the documented fields (no timing asserted)."""
import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT


@pytest.mark.parametrize('config, mode', [('config/demo/pretrain_skeletonclr.yaml', 'pretrain'),
                                          ('config/demo/pretrain_mica.yaml', 'pretrain'),
                                          ('config/ucla/recognition_hcn.yaml', 'supervised'),
                                          ('config/demo/linear_eval_skeletonclr.yaml', 'linear'),
                                          ('config/demo/linear_eval_skeletonclr.yaml', 'inference')])
def test_benchmark_reports(tmp_path, config, mode):
    out = tmp_path / 'bench.json'
    proc = subprocess.run([sys.executable, 'tools/benchmark.py', '--config', config, '--mode', mode,
                           '--batch-size', '4', '--warmup', '1', '--iters', '2', '--num-samples', '8',
                           '--frames', '16', '--threads', '1', '--json', str(out)],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    (result,) = json.loads(out.read_text())
    assert result['mode'] == mode and result['batch_size'] == 4
    assert result['samples_per_second'] > 0 and 0 <= result['data_fraction'] <= 1
    assert set(result['seconds_per_iteration']) == {'median', 'min', 'max'}
    assert result['torch'] and result['device'] == 'cpu' and result['peak_memory_gib'] > 0
    assert result['peak_rss_gib'] == result['peak_memory_gib'] and result['peak_rss_scope'] == 'this config'


def test_benchmark_bad_config_is_one_line_error():
    proc = subprocess.run([sys.executable, 'tools/benchmark.py', '--config', 'config/nope.yaml'], cwd=ROOT,
                          capture_output=True, text=True)
    assert proc.returncode != 0 and 'config/nope.yaml' in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_benchmark_profile_and_implementation(tmp_path):
    """--profile lists the top operators (with real ST-GCN ops among them); --implementation reaches
    the encoder; a non-ST-GCN config refuses it in one line."""
    out = tmp_path / 'bench.json'
    proc = subprocess.run([sys.executable, 'tools/benchmark.py', '--config', 'config/demo/pretrain_skeletonclr.yaml',
                           '--batch-size', '4', '--warmup', '1', '--iters', '1', '--num-samples', '8', '--frames', '16',
                           '--threads', '1', '--implementation', 'fast', '--profile', '8', '--json', str(out)],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    (result,) = json.loads(out.read_text())
    assert result['implementation'] == 'fast'
    ops = result['top_ops']
    assert 1 <= len(ops) <= 8 and all(op['self_ms'] >= 0 for op in ops)
    assert [op['self_ms'] for op in ops] == sorted((op['self_ms'] for op in ops), reverse=True)
    assert any('conv' in op['name'] or 'mm' in op['name'] or 'batch_norm' in op['name'] for op in ops), ops
    assert '% ' in proc.stdout and 'ms/step' in proc.stdout
    bad = subprocess.run([sys.executable, 'tools/benchmark.py', '--config', 'config/ucla/recognition_hcn.yaml',
                          '--implementation', 'fast', '--iters', '1', '--warmup', '0', '--batch-size', '2',
                          '--num-samples', '4', '--frames', '16'], cwd=ROOT, capture_output=True, text=True)
    assert bad.returncode != 0 and '--implementation' in bad.stderr and 'net.hcn' in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1


def test_op_counter_sees_copies_and_host_synchronisations():
    sys.path.insert(0, os.path.join(ROOT, 'tools'))
    from benchmark import OpCounter
    import torch
    counter = OpCounter()
    x = torch.randn(4, 3)
    with counter.patched_host_calls(), counter:
        x.t().contiguous()
        x.to(torch.float64)
        float(x.sum())
        if x.max() > 0:
            x.nonzero()
        x.cpu()
    counts = counter.summary(1)
    assert counts['copies'] == {'clone': 1, '_to_copy': 1}
    assert counts['host_syncs'] == {'_local_scalar_dense': 2, 'nonzero': 1, 'Tensor.cpu': 1}


def test_count_ops_skeletonclr_step_meets_the_targets(tmp_path):
    """--count-ops: a SkeletonCLR training step (the GPU's channels-last path) makes no host
    synchronisation and at most 40 copies (issue 32's targets)."""
    sys.path.insert(0, os.path.join(ROOT, 'tools'))
    import benchmark
    out = tmp_path / 'counts.json'
    (r,) = benchmark.main(['--count-ops', '--config', os.path.join(ROOT, 'config/demo/pretrain_skeletonclr.yaml'), '--batch-size', '4',
                           '--warmup', '1', '--iters', '1', '--num-samples', '8', '--frames', '16',
                           '--json', str(out)])
    assert json.loads(out.read_text())[0]['ops_per_step'] == r['ops_per_step'] > 500
    assert r['implementation'] == 'fast' and r['host_syncs_per_step'] == 0, r['host_syncs']
    assert r['copies_per_step'] <= 40, r['copies']


def test_count_ops_skelemixclr_and_mica_steps_make_no_host_synchronisation(tmp_path):
    """--count-ops on the paper configs (issue 44): SkeleMixCLR's and MICA's steps read nothing back to the
    host (the mixing draws on the device, no range checks), so both are capture-safe."""
    sys.path.insert(0, os.path.join(ROOT, 'tools'))
    import benchmark
    results = benchmark.main(['--count-ops', '--config', os.path.join(ROOT, 'config/ntu60/xsub/pretrain_skelemixclr.yaml'),
                              os.path.join(ROOT, 'config/ntu60/xsub.yaml'), '--batch-size', '4', '--warmup', '1',
                              '--iters', '1', '--num-samples', '8', '--frames', '64', '--threads', '1'])
    for r in results:
        assert r['host_syncs_per_step'] == 0, (r['config'], r['host_syncs'])


def test_several_configs_get_their_own_peak_and_ratios_to_the_first(tmp_path):
    sys.path.insert(0, os.path.join(ROOT, 'tools'))
    import benchmark
    out = tmp_path / 'results' / 'bench.json'                     # the folder is made
    first, second = benchmark.main(['--config', os.path.join(ROOT, 'config/demo/pretrain_skeletonclr.yaml'),
                                    os.path.join(ROOT, 'config/demo/pretrain_skeletonclr.yaml'), '--batch-size', '4',
                                    '--warmup', '0', '--iters', '1', '--num-samples', '8', '--frames', '16',
                                    '--threads', '1', '--model-args', 'checkpoint_blocks=true', '--json', str(out)])
    assert 'relative_to' not in first and second['relative_to']['config'] == first['config']
    assert first['cpu_seconds_per_iteration'] > 0 and len(first['load_average']) == 3
    assert second['relative_to']['peak_memory'] == pytest.approx(second['peak_memory_gib'] / first['peak_memory_gib'])
    assert second['model_args'] == {'checkpoint_blocks': True}
    assert json.loads(out.read_text())[1]['relative_to'] == second['relative_to']
