"""End-to-end: the README's first command (tools/demo.sh) on a fresh synthetic set."""
import json
import os
import re
import subprocess
import sys

from conftest import ROOT


def test_demo_script_on_synthetic_data(tmp_path):
    """The README's first command (tools/demo.sh) on a fresh synthetic set: the last line compares the
    pretrained encoder with the untrained encoder its pretraining started from (PyTorch's init, as
    small_data_pretrain.yaml starts; same probe and seed) and says whether pretraining added or lost, with
    the ridge floor and chance beside them; the small-data probe's training loss stays small."""
    data, run = tmp_path / 'synthetic', tmp_path / 'run'
    env = dict(os.environ, DATA=str(data), RUN=str(run), PYTHON=sys.executable, EPOCHS='2')   # CI budget
    out = subprocess.run(['bash', os.path.join(ROOT, 'tools', 'demo.sh')], env=env, check=True,
                         capture_output=True, text=True).stdout
    learned = json.load(open(run / 'linear_eval' / 'result.json'))
    verdict = learned['verdict']
    line = next(line for line in out.splitlines() if line.startswith('SkeletonCLR on the synthetic demo set'))
    gain = learned['top1_last'] - verdict['untrained_top1']
    assert (f"top-1 {learned['top1_last']:.1f}% at the last epoch" in line and 'chance 10.0%' in line
            and f"untrained encoder it started from (PyTorch's init) {verdict['untrained_top1']:.1f}%" in line
            and f"ridge floor {verdict['floor_top1']:.1f}%" in line), line
    assert f"pretraining {'added' if gain > 0 else 'lost'} {abs(gain):.1f} points" in line, line
    print(f"synthetic linear top-1 (last): SkeletonCLR 2 epochs {learned['top1_last']:.2f}%, untrained (its init) "
          f"{verdict['untrained_top1']:.2f}%, floor {verdict['floor_top1']:.2f}%")
    assert learned['top1_last'] > 20.0                                   # chance is 10%
    losses = [float(x) for x in re.findall(r'mean_loss: ([\d.]+) \| lr',
                                           open(run / 'linear_eval' / 'log.txt').read())]
    assert losses and max(losses) < 5.0, max(losses)        # the family probe's reached 200 on this set
