"""SIGKILL at a random point, then ``--resume true``: bit-identical to the uninterrupted run, with the
shipped configs and their default ``num_worker`` (2 DataLoader workers), for SkeletonCLR and AimCLR
pretraining, linear evaluation (augmenting feeder) and recognition with the CSRE head (issue 14).
Also: the weights do not depend on the worker count, and SIGTERM / SIGINT stop with 128 + signal
after saving and resume exactly.

Small and fast: the embedded synthetic set (``tools/gen_synthetic.py``, 3 samples per class, 12
frames) or ``conftest.tiny_dataset``, ``hidden_channels=4``, batch 8, 3-4 epochs of 3 iterations;
the uninterrupted and the interrupted run of a case run side by side (one thread each)."""
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import ROOT, tiny_dataset

ENV = dict(os.environ, OMP_NUM_THREADS='1', MKL_NUM_THREADS='1', PYTHONWARNINGS='ignore')


@pytest.fixture(scope='module')
def synthetic(tmp_path_factory):
    folder = tmp_path_factory.mktemp('synthetic')
    subprocess.run([sys.executable, os.path.join('tools', 'gen_synthetic.py'), '--out-folder', str(folder),
                    '--num-train-per-class', '3', '--num-val-per-class', '2', '--length', '12'],
                   cwd=ROOT, env=ENV, check=True, capture_output=True)
    train = f"data_path={folder / 'train_position.npy'},label_path={folder / 'train_label.pkl'}"
    val = f"data_path={folder / 'val_position.npy'},label_path={folder / 'val_label.pkl'}"
    return train, val


def launch(processor, config, work_dir, *extra):
    """``python main.py <processor> -c <shipped config>`` (its num_worker: the default, 2)."""
    return subprocess.Popen([sys.executable, 'main.py', processor, '-c', config, '--work_dir', str(work_dir),
                             '--progress_bar', 'false', *extra], cwd=ROOT, env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def finish(proc, status=0):
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == status, (proc.returncode, err)
    return err


def wait_for(proc, log, text, timeout=300):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if os.path.exists(log) and text in open(log).read():
            return
        assert proc.poll() is None, f'the run ended before {text!r}: {proc.stderr.read()}'
        time.sleep(0.005)
    raise AssertionError(f'{text!r} not in {log} after {timeout} s')


def kill_at_random_point(proc, work_dir, epochs, rng):
    """SIGKILL (no chance to save) at a random moment of a random epoch from the second to the last
    but one (killed in epoch 1, a run resumes from the state before anything was drawn, which would
    hide an RNG draw that differs between a fresh and a resumed process)."""
    epoch = rng.randint(2, epochs - 1)
    wait_for(proc, os.path.join(work_dir, 'log.txt'), f'Training epoch: {epoch}')
    time.sleep(rng.uniform(0.0, 0.25))
    assert proc.poll() is None, 'the run ended before it could be killed'
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return f'killed in epoch {epoch}'


def assert_same_weights(a, b):
    sa, sb = torch.load(a, weights_only=True), torch.load(b, weights_only=True)
    assert sa.keys() == sb.keys()
    different = [k for k in sa if not torch.equal(sa[k], sb[k])]
    assert not different, f'{len(different)} of {len(sa)} tensors differ, e.g. {different[:3]}'


def kill_resume_compare(tmp_path, processor, config, epochs, final, *args, reference=None, extra_runs=()):
    """Uninterrupted run || run killed at a random point; resume the killed one; same ``final`` file.
    ``reference``: the work_dir of an uninterrupted run started elsewhere (else one is started here);
    ``extra_runs``: (name, extra args) of further uninterrupted runs compared with it."""
    rng = random.Random(os.getpid() + int(time.time() * 1000))
    common = [*args, '--num_epoch', str(epochs)]
    full = None if reference is not None else launch(processor, config, tmp_path / 'full', *common)
    others = [(name, launch(processor, config, tmp_path / name, *common, *more)) for name, more in extra_runs]
    killed = launch(processor, config, tmp_path / 'killed', *common)
    where = kill_at_random_point(killed, tmp_path / 'killed', epochs, rng)
    resumed = launch(processor, config, tmp_path / 'killed', *common, '--resume', 'true')
    reference = reference() if reference is not None else (finish(full), tmp_path / 'full')[1]
    finish(resumed)
    log = open(tmp_path / 'killed' / 'log.txt').read()
    assert 'Resumed from' in log, where
    assert_same_weights(reference / final, tmp_path / 'killed' / final)
    for name, proc in others:
        finish(proc)
        assert_same_weights(reference / final, tmp_path / name / final)
    assert not [n for n in os.listdir(tmp_path / 'killed') if '.tmp' in n]      # no leftovers of the kill
    return where


SKELETONCLR = 'config/demo/pretrain_skeletonclr.yaml'


def skeletonclr_args(train):
    return ['--model_args', 'hidden_channels=4,hidden_dim=16', '--batch_size', '8', '--train_feeder_args', train,
            '--save_interval', '3', '--num_epoch', '3']


@pytest.fixture(scope='module')
def skeletonclr_full(synthetic, tmp_path_factory):
    """One uninterrupted SkeletonCLR run (3 epochs, default workers), started once, shared by the tests
    that compare with it; returns a function that waits for it and gives its work_dir."""
    work_dir = tmp_path_factory.mktemp('skeletonclr') / 'full'
    proc = launch('pretrain_skeletonclr', SKELETONCLR, work_dir, *skeletonclr_args(synthetic[0]))

    def done():
        if proc.returncode is None:
            finish(proc)
        return work_dir
    yield done
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def test_skeletonclr_sigkill_resume_is_bit_identical_with_workers_and_worker_count_free(tmp_path, synthetic,
                                                                                        skeletonclr_full):
    kill_resume_compare(tmp_path, 'pretrain_skeletonclr', SKELETONCLR, 3, 'epoch3_model.pt',
                        *skeletonclr_args(synthetic[0])[:-2], reference=skeletonclr_full,
                        extra_runs=[('no_workers', ['--num_worker', '0'])])


def test_aimclr_sigkill_resume_is_bit_identical_with_workers(tmp_path, synthetic):
    train, _ = synthetic
    kill_resume_compare(tmp_path, 'pretrain_aimclr', 'config/demo/pretrain_aimclr.yaml', 3, 'epoch3_model.pt',
                        '--model_args', 'hidden_channels=4,hidden_dim=16', '--batch_size', '8',
                        '--train_feeder_args', train, '--save_interval', '3', '--mining_epoch', '1')        # mining (nnm) from epoch 2


def test_linear_evaluation_sigkill_resume_is_bit_identical_with_an_augmenting_feeder(tmp_path, synthetic):
    train, val = synthetic
    kill_resume_compare(tmp_path, 'linear_evaluation', 'config/demo/linear_eval_skeletonclr.yaml', 4,
                        'epoch4_model.pt', '--weights', 'random', '--model_args', 'hidden_channels=4,hidden_dim=16',
                        '--batch_size', '8', '--train_feeder_args',
                        f'{train},shear_amplitude=0.5,temperal_padding_ratio=6', '--test_feeder_args', val,
                        '--eval_interval', '2')


def test_recognition_with_csre_sigkill_resume_is_bit_identical(tmp_path):
    data, label = tiny_dataset(str(tmp_path), n=24, V=20, T=12, num_class=4)
    feed = f'data_path={data},label_path={label}'
    kill_resume_compare(tmp_path, 'recognition', 'config/ucla/recognition_stgcn_csre.yaml', 4, 'epoch4_model.pt',
                        '--model_args', 'hidden_channels=4,hidden_dim=16', '--train_feeder_args', feed,
                        '--test_feeder_args', feed, '--batch_size', '8', '--test_batch_size', '32',
                        '--train_head_args', 'min_candidates=any')    # 24 clips: the banks' contents matter
    full = torch.load(tmp_path / 'full' / 'latest.pt', weights_only=True)
    resumed = torch.load(tmp_path / 'killed' / 'latest.pt', weights_only=True)
    banks = [k for k in full['extra']['train_head'] if 'bank' in k]
    assert banks and all(torch.equal(full['extra']['train_head'][k], resumed['extra']['train_head'][k])
                         for k in banks)


def test_sigterm_saves_exits_143_and_resumes_exactly(tmp_path, synthetic, skeletonclr_full):
    args = skeletonclr_args(synthetic[0])
    stopped = launch('pretrain_skeletonclr', SKELETONCLR, tmp_path / 'stopped', *args)
    log = tmp_path / 'stopped' / 'log.txt'
    wait_for(stopped, log, 'Training epoch: 2')
    time.sleep(0.1)
    stopped.send_signal(signal.SIGTERM)
    err = finish(stopped, 128 + signal.SIGTERM)       # non-zero: a `set -e` script does not go on
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and 'signal 15' in lines[0] and '--resume true' in lines[0], err
    assert 'Stopped by signal 15 during epoch 2' in open(log).read()
    assert torch.load(tmp_path / 'stopped' / 'latest.pt', weights_only=True)['epoch'] == 1
    finish(launch('pretrain_skeletonclr', SKELETONCLR, tmp_path / 'stopped', *args, '--resume', 'true'))
    assert_same_weights(skeletonclr_full() / 'epoch3_model.pt', tmp_path / 'stopped' / 'epoch3_model.pt')


def test_sigint_is_handled_like_sigterm_without_a_traceback(tmp_path, synthetic):
    stopped = launch('pretrain_skeletonclr', SKELETONCLR, tmp_path / 'stopped', *skeletonclr_args(synthetic[0]))
    log = tmp_path / 'stopped' / 'log.txt'
    wait_for(stopped, log, 'Training epoch: 2')
    time.sleep(0.1)
    stopped.send_signal(signal.SIGINT)
    err = finish(stopped, 128 + signal.SIGINT)
    assert 'Traceback' not in err and 'KeyboardInterrupt' not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and 'signal 2' in lines[0], err
    assert 'Stopped by signal 2 during epoch 2' in open(log).read()
    assert torch.load(tmp_path / 'stopped' / 'latest.pt', weights_only=True)['epoch'] == 1
