"""End-to-end on NW-UCLA: the data tool, SkeletonCLR pretraining through the shipped config, then
linear evaluation, finetuning and semi-supervised training from the same weights (one pretraining)."""
import json
import os

import pytest

from conftest import ROOT
from e2e_support import COMMON, check_outputs, feeder_args, linear, pretrain


PRETRAIN_EPOCHS = 2     # the CI budget; results/ucla_short has the 6-epoch runs, 3 seeds


@pytest.fixture(scope='module')
def ucla_skeletonclr(ucla, tmp_path_factory):
    """PRETRAIN_EPOCHS of SkeletonCLR on NW-UCLA through the shipped config (shared by the protocol tests)."""
    pre, weights = pretrain(os.path.join(ROOT, 'config/ucla/pretrain_skeletonclr.yaml'), ucla,
                            str(tmp_path_factory.mktemp('skeletonclr') / 'pretext'), epochs=PRETRAIN_EPOCHS)
    return pre, weights


def test_ucla_skeletonclr_pretrain_then_linear(tmp_path, ucla, ucla_random_floor, ucla_skeletonclr):
    """NW-UCLA cross-view (real Kinect data): 2 epochs of SkeletonCLR beat a random encoder by far.

    Thresholds: short runs of the small-data recipes land far apart from one random stream to another
    (SkeletonCLR 23-50% at 6 epochs over 3 seeds in results/ucla_short; the narrow-cone phase of issue
    20, which deepens after epoch 2: kNN 35-39% at epoch 2 in each of those seeds), so the bars are
    "learned well beyond the untrained encoder", not the README numbers.  Measured at 2 epochs: 45.9%."""
    pre, weights = ucla_skeletonclr
    assert pre.epoch_info['loss_info'] < 0.98 * pre.model.uniform_loss       # not collapsed
    cfg = os.path.join(ROOT, 'config/ucla/linear_eval_skeletonclr.yaml')
    trained = linear(cfg, ucla, str(tmp_path / 'linear'), weights)
    top1, floor = trained.best['top1'], ucla_random_floor
    print(f'NW-UCLA linear top-1: SkeletonCLR {PRETRAIN_EPOCHS} epochs {100 * top1:.2f}%, random encoder {100 * floor:.2f}%')
    assert top1 > 0.30, top1                 # chance is 10%, the untrained encoder ~11%
    assert top1 > floor + 0.15, (top1, floor)
    check_outputs(trained, str(tmp_path / 'linear'), 464)


# CI budget, evaluated once at the end: finetune at batch 32 (the recipe: 128, 8 iterations per epoch here)
# for 32 updates per epoch, no lr step; semi10 (batch 32 as shipped, 4 updates per epoch), x0.1 for its
# last epoch (30.4%; 23.1% at epoch 9).
# The finetune's test top-1 after 2 epochs at lr 0.1 is a lottery ticket (seed 1 here: 26.5% at 1 thread,
# 13.4% with x0.1 for epoch 2; 12.1% on an AMD EPYC with the same seed), so its bars are the ones that hold
# on every machine: the mean training top-1 of its last epoch and a test top-1 above chance.  Measured over
# finetune seeds 1-3 at 1 and 2 threads (tests/fixtures/measure_finetune_bar.py,
# results/e2e_bars/finetune_sweep.json): training top-1 0.294-0.343 (bar 0.2), test top-1 21.3-31.9% (bar 10%).
@pytest.mark.parametrize('protocol, epochs, schedule, minimum, train_minimum', [
    ('finetune', 2, ['--batch_size', '32', '--step', '2', '--eval_interval', '2'], 0.10, 0.2),
    ('semi10', 12, ['--step', '11', '--eval_interval', '12'], 0.22, None)])
def test_ucla_finetune_and_semi_supervised(tmp_path, ucla, ucla_skeletonclr, protocol, epochs, schedule, minimum,
                                           train_minimum):
    """Finetune (all labels) and 10%-label semi-supervised runs from the SkeletonCLR weights."""
    from processor.finetune_evaluation import FinetuneEvaluation
    _, weights = ucla_skeletonclr
    work_dir = str(tmp_path / protocol)
    proc = FinetuneEvaluation(['--config', os.path.join(ROOT, f'config/ucla/{protocol}_skeletonclr.yaml'),
                               '--work_dir', work_dir, '--weights', weights, '--num_epoch', str(epochs),
                               '--warm_up_epoch', '1', *schedule,
                               '--train_feeder_args', feeder_args(ucla, 'train'),
                               '--test_feeder_args', feeder_args(ucla, 'val'), *COMMON])
    proc.start()
    top1, train_top1 = proc.best['top1'], proc.epoch_info['train_top1']
    print(f'NW-UCLA {protocol} top-1 from SkeletonCLR ({PRETRAIN_EPOCHS} epochs): {epochs} epochs {100 * top1:.2f}% '
          f'(training top-1 of the last epoch {100 * train_top1:.2f}%)')
    assert top1 > minimum, top1
    if train_minimum is not None:
        assert train_top1 > train_minimum, train_top1
    check_outputs(proc, work_dir, 464)
    verdict = json.load(open(os.path.join(work_dir, 'result.json')))['verdict']      # the default path
    assert verdict['untrained_init'] == "PyTorch's init" and verdict['learned_top1'] == round(100 * proc.report.last[1], 4)
    assert verdict['gain_over_untrained'] == round(verdict['learned_top1'] - verdict['untrained_top1'], 2)
