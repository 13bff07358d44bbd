"""End-to-end on NW-UCLA: supervised recognition through the shipped configs (CTR-GCN's NW-UCLA pipeline),
with the CSRE train-time head."""
import os

from conftest import ROOT
from e2e_support import COMMON, check_outputs, feeder_args


def test_ucla_supervised_recognition_with_csre(tmp_path, ucla_ctrgcn):
    """Supervised ST-GCN + CSRE on NW-UCLA cross-view through the shipped config (CTR-GCN's sampling:
    52-frame windows, random view, batch 16), for the CPU budget one epoch of every clip twice (the
    recipe: 5 times; 2 still gives every class the 128 positive rows CSRE's full sample needs), without
    the warm-up and at width 16 (measured: 23.3%); the saved model is the plain encoder.  The path
    without the head is tested on synthetic data (tests/test_recognition.py, which also builds every
    shipped recognition config); results/supervised_ucla/ has both on this data, 3 seeds."""
    from processor.recognition import Recognition
    name = 'recognition_stgcn_csre.yaml'
    work_dir = str(tmp_path / 'run')
    proc = Recognition(['--config', os.path.join(ROOT, 'config/ucla', name), '--work_dir', work_dir,
                        '--num_epoch', '1', '--warm_up_epoch', '0', '--eval_interval', '1',
                        '--model_args', 'hidden_channels=16',
                        '--train_feeder_args', feeder_args(ucla_ctrgcn, 'train') + ',repeat=2',
                        '--test_feeder_args', feeder_args(ucla_ctrgcn, 'val'), *COMMON])
    proc.start()
    top1 = proc.best['top1']
    print(f'NW-UCLA supervised top-1: ST-GCN(16) + CSRE 1 epoch (x2 repeat) {100 * top1:.2f}%')
    assert top1 > 0.18, top1                 # chance is 10%
    check_outputs(proc, work_dir, 464)
    assert 'loss_s' in proc.epoch_info and 'loss_t' in proc.epoch_info
    assert proc.head.bank_copies == 2                 # the override reached the feeder and the head's banks
