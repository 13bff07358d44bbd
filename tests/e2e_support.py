"""Helpers of the end-to-end tests (tests/test_e2e_*.py): the processors run exactly as `python main.py
...` runs them, on the real NW-UCLA arrays of the session fixtures in conftest.py (a few epochs, CPU).

The e2e tests are split by the pretraining they share, one file each, so that under the README's
``pytest -n 2`` (``--dist loadfile``) one worker runs each file and nothing is trained twice."""
import os
import pickle

from processor.linear_evaluation import LinearEvaluation
from processor.pretrain import PretrainProcessor

# the shipped loader (num_worker 2, seeded per epoch: results do not depend on it) as users run it
COMMON = ['--progress_bar', 'false', '--log_interval', '1000']
# The CI schedules (1-2 pretraining epochs) lie inside the small-data recipe's 10-epoch lr warm-up, where
# the encoder has not moved yet; they run at the full lr from the first step to the last instead, as the
# thresholds were measured (the warm-up and the cosine decay are measured by
# config/reproduce/ucla_stability.yaml and the schedules by tests/test_processor*).
SHORT_SCHEDULE = ['--warm_up_epoch', '0', '--lr_schedule', 'step']


def feeder_args(folder, split):
    return f'data_path={folder}/{split}_position.npy,label_path={folder}/{split}_label.pkl'


def pretrain(config, folder, work_dir, epochs, extra=()):
    p = PretrainProcessor(['--config', config, '--work_dir', work_dir, '--num_epoch', str(epochs),
                           '--save_interval', str(epochs), '--train_feeder_args', feeder_args(folder, 'train'),
                           *COMMON, *SHORT_SCHEDULE, *extra])
    p.start()
    return p, os.path.join(work_dir, f'epoch{epochs}_model.pt')


# the probe of the e2e thresholds (measured with it): the family protocol, for the trained encoder and the
# untrained one alike; the shipped small-data probe is exercised by test_e2e_demo and test_own_dataset
FAMILY_PROBE = ('--feature_norm', 'none', '--base_lr', '3.0')


def linear(config, folder, work_dir, weights, extra=FAMILY_PROBE):
    """The probe of a pretrained encoder; these tests compare it with their own untrained run under the same
    probe (``ucla_random_floor``), so the verdict's untrained run is left out here (``--verdict false``); the
    verdict's default path is tested by test_verdict.py and the demo (test_e2e_demo.py)."""
    p = LinearEvaluation(['--config', config, '--work_dir', work_dir, '--weights', weights, '--verdict', 'false',
                          '--train_feeder_args', feeder_args(folder, 'train'),
                          '--test_feeder_args', feeder_args(folder, 'val'), '--eval_interval', '10',
                          *COMMON, *extra])
    p.start()
    return p


def check_outputs(linear_proc, work_dir, num_val):
    assert os.path.exists(os.path.join(work_dir, 'best_model.pt'))
    with open(os.path.join(work_dir, 'test_result.pkl'), 'rb') as f:
        scores = pickle.load(f)
    assert len(scores) == num_val
    assert 'Best top1' in open(os.path.join(work_dir, 'log.txt')).read()
