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


def test_benchmark_bad_config_is_one_line_error():
    proc = subprocess.run([sys.executable, 'tools/benchmark.py', '--config', 'config/nope.yaml'], cwd=ROOT,
                          capture_output=True, text=True)
    assert proc.returncode != 0 and 'config/nope.yaml' in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
