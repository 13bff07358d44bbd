"""Work on disk is never lost (issue 14): latest.pt is written before it is rotated, a work_dir with any
part of a run is not reused, interrupted writes are cleaned up, one process per work_dir, a full disk
or an unwritable log is a one-line error that keeps the last good checkpoint, a failed resume changes
nothing; files a user may be handed (latest.pt, label / result pickles) cannot run code; a non-finite
loss stops every training loop with the last good checkpoint kept.

Tiny runs in-process (``main.main``) on ``conftest.write_config`` (16 samples, hidden_channels 4)."""
import errno
import os
import pickle
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
import yaml

import main as main_module
import torchlight.io
from conftest import ROOT, one_line, tiny_dataset, write_config
from torchlight.io import UserError, read_pickle

ENV = dict(os.environ, OMP_NUM_THREADS='1', PYTHONWARNINGS='ignore')




def run_main(capsys, *argv, status=2):
    capsys.readouterr()
    rc = main_module.main([str(a) for a in argv])
    captured = capsys.readouterr()
    assert rc == status, f'exit status {rc}, stderr:\n{captured.err}'
    return captured.err


def snapshot(folder):
    return {name: open(os.path.join(folder, name), 'rb').read() for name in sorted(os.listdir(folder))
            if os.path.isfile(os.path.join(folder, name))}


def finished_run(tmp_path, capsys, epochs=2, **overrides):
    cfg = write_config(tmp_path, num_epoch=epochs, save_interval=epochs, **overrides)
    run_main(capsys, 'pretrain_skeletonclr', '--config', cfg, status=0)
    return cfg, str(tmp_path / 'run')


class Marker:
    """Unpickling this object writes ``path``: the attack a crafted pickle makes."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, 'w'))


# ---------------------------------------------------------------- latest.pt: write, then rotate

def failing_save(after=0, error=errno.ENOSPC):
    """torch.save that writes part of the file and then fails like a full disk, from call ``after`` on."""
    real = torch.save
    calls = {'n': 0}

    def save(obj, f, *args, **kwargs):
        calls['n'] += 1
        if calls['n'] > after:
            f.write(b'\x80\x02partial')
            raise OSError(error, os.strerror(error))
        return real(obj, f, *args, **kwargs)
    return save


def test_a_failed_latest_write_leaves_the_previous_latest_in_place(tmp_path, capsys, monkeypatch):
    """The new file is written (and fsynced) before latest.pt is touched: a kill or a full disk while
    writing leaves latest.pt as it was (the old code renamed it away first)."""
    _, work_dir = finished_run(tmp_path, capsys)
    from processor.pretrain import PretrainProcessor
    proc = PretrainProcessor(['--config', write_config(tmp_path, num_epoch=3), '--resume', 'true'])
    before = snapshot(work_dir)
    monkeypatch.setattr(torch, 'save', failing_save())
    with pytest.raises(UserError) as info:
        proc.save_latest(3)
    one_line(str(info.value), os.path.join(work_dir, 'latest.pt'), 'No space left on device', 'is kept')
    after = snapshot(work_dir)
    assert after['latest.pt'] == before['latest.pt'] and after['latest.prev.pt'] == before['latest.prev.pt']
    assert not [n for n in os.listdir(work_dir) if '.tmp' in n]


def test_full_disk_during_training_is_one_line_and_keeps_the_last_good_checkpoint(tmp_path, capsys, monkeypatch):
    cfg = write_config(tmp_path, num_epoch=3, save_interval=3)
    monkeypatch.setattr(torch, 'save', failing_save(after=2))       # latest.pt of epochs 0 and 1 fit
    err = run_main(capsys, 'pretrain_skeletonclr', '--config', cfg)
    one_line(err, 'No space left on device', '--resume true')
    work_dir = str(tmp_path / 'run')
    assert not [n for n in os.listdir(work_dir) if '.tmp' in n]          # nothing keeps the disk full
    assert torch.load(os.path.join(work_dir, 'latest.pt'), weights_only=True)['epoch'] == 1
    monkeypatch.undo()                                                   # space freed: resume finishes
    run_main(capsys, 'pretrain_skeletonclr', '--config', cfg, '--resume', 'true', status=0)
    assert os.path.exists(os.path.join(work_dir, 'epoch3_model.pt'))


def test_resume_falls_back_to_the_previous_checkpoint_saying_latest_is_missing(tmp_path, capsys):
    cfg, work_dir = finished_run(tmp_path, capsys)
    os.remove(os.path.join(work_dir, 'latest.pt'))
    run_main(capsys, 'pretrain_skeletonclr', '--config', cfg, '--resume', 'true', status=0)
    log = open(os.path.join(work_dir, 'log.txt')).read()
    assert f"WARNING: '{os.path.join(work_dir, 'latest.pt')}' is missing: resuming from" in log
    assert 'unreadable' not in log


def test_temporaries_of_an_interrupted_write_are_removed(tmp_path, capsys):
    cfg, work_dir = finished_run(tmp_path, capsys)
    for name in ('latest.pt.tmp4242', 'latest.prev.pt.tmp4242', 'epoch3_model.pt.tmp77'):
        with open(os.path.join(work_dir, name), 'wb') as f:
            f.write(os.urandom(256))
    run_main(capsys, 'pretrain_skeletonclr', '--config', cfg, '--resume', 'true', '--num_epoch', '3', status=0)
    assert not [n for n in os.listdir(work_dir) if '.tmp' in n]
    assert 'Removed 3 temporary file(s)' in open(os.path.join(work_dir, 'log.txt')).read()


# ---------------------------------------------------------------- work_dir: no reuse, one process

@pytest.mark.parametrize('files', [['epoch50_model.pt'], ['latest.prev.pt'], ['log.txt'],
                                   ['best_model.pt', 'test_result.pkl'], ['latest.pt.tmp99']])
def test_a_new_run_is_refused_in_a_work_dir_with_any_part_of_a_run(tmp_path, capsys, files):
    """Checkpoints without latest.pt (a run of the reference code, a kill in the old rotation window),
    a log or any latest* file: nothing is overwritten."""
    work_dir = tmp_path / 'run'
    work_dir.mkdir()
    for name in files + ['config.yaml']:
        (work_dir / name).write_bytes(os.urandom(64))
    before = snapshot(str(work_dir))
    for resume in ('false', 'auto'):
        err = run_main(capsys, 'pretrain_skeletonclr', '--config', write_config(tmp_path), '--resume', resume)
        line = one_line(err, str(work_dir), files[0])
        # (auto with a garbage latest.prev.pt: it cannot be read, which is said instead)
        assert 'already holds a run' in line or (resume == 'auto' and 'cannot read the resume files' in line), line
        assert snapshot(str(work_dir)) == before


def test_two_processes_in_one_work_dir_the_second_gets_one_line(tmp_path, capsys):
    cfg = write_config(tmp_path, num_epoch=1000, log_interval=1)
    first = subprocess.Popen([sys.executable, 'main.py', 'pretrain_skeletonclr', '--config', cfg], cwd=ROOT, env=ENV,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        log = tmp_path / 'run' / 'log.txt'
        deadline = time.time() + 120
        while not (log.exists() and 'Training epoch: 1' in log.read_text()):
            assert first.poll() is None and time.time() < deadline, first.stderr.read()
            time.sleep(0.02)
        for resume in ('false', 'true'):
            err = run_main(capsys, 'pretrain_skeletonclr', '--config', cfg, '--resume', resume)
            one_line(err, str(tmp_path / 'run'), 'in use by another running process')
        assert first.poll() is None                   # the first run is undisturbed
    finally:
        first.kill()
        first.wait()


@pytest.mark.parametrize('change', [['--model_args', 'hidden_channels=6'], ['--optimizer', 'Adam'],
                                    ['--model', 'net.aimclr.AimCLR', '--train_feeder', 'feeder.ntu_feeder.Feeder_triple']])
def test_a_failed_resume_changes_nothing_on_disk(tmp_path, capsys, change):
    cfg, work_dir = finished_run(tmp_path, capsys)
    before = snapshot(work_dir)
    err = run_main(capsys, 'pretrain_skeletonclr', '--config', cfg, '--resume', 'true', '--num_epoch', '3', *change)
    one_line(err, os.path.join(work_dir, 'latest.pt'), 'cannot resume', 'config.yaml')
    assert snapshot(work_dir) == before                   # config.yaml and log.txt included


def test_an_unwritable_log_is_one_line(tmp_path, capsys, monkeypatch):
    cfg, work_dir = finished_run(tmp_path, capsys)
    log = os.path.join(work_dir, 'log.txt')
    real_open = open

    def read_only_log(path, mode='r', *args, **kwargs):      # what chmod 444 does for a non-root user
        if os.path.abspath(str(path)) == log and mode != 'r':
            raise PermissionError(errno.EACCES, 'Permission denied', str(path))
        return real_open(path, mode, *args, **kwargs)
    monkeypatch.setattr(torchlight.io, 'open', read_only_log, raising=False)
    before = snapshot(work_dir)
    err = run_main(capsys, 'pretrain_skeletonclr', '--config', cfg, '--resume', 'true', '--num_epoch', '3')
    one_line(err, log, 'Permission denied')
    assert snapshot(work_dir) == before


@pytest.mark.skipif(os.geteuid() == 0, reason='root writes into read-only files')
def test_a_read_only_log_is_one_line(tmp_path, capsys):
    cfg, work_dir = finished_run(tmp_path, capsys)
    os.chmod(os.path.join(work_dir, 'log.txt'), 0o444)
    err = run_main(capsys, 'pretrain_skeletonclr', '--config', cfg, '--resume', 'true', '--num_epoch', '3')
    one_line(err, os.path.join(work_dir, 'log.txt'))


# ---------------------------------------------------------------- files a user is handed run no code

def test_a_crafted_latest_checkpoint_does_not_run_code(tmp_path, capsys):
    cfg, work_dir = finished_run(tmp_path, capsys)
    marker = tmp_path / 'pwned'
    state = torch.load(os.path.join(work_dir, 'latest.pt'), weights_only=True)
    state['payload'] = Marker(str(marker))
    for name in ('latest.pt', 'latest.prev.pt'):
        torch.save(state, os.path.join(work_dir, name))
    err = run_main(capsys, 'pretrain_skeletonclr', '--config', cfg, '--resume', 'true', '--num_epoch', '3')
    one_line(err, 'cannot read the resume files', 'latest.pt')
    assert not marker.exists()


def test_the_resume_file_holds_only_tensors_and_plain_data(tmp_path, capsys):
    _, work_dir = finished_run(tmp_path, capsys)
    state = torch.load(os.path.join(work_dir, 'latest.pt'), weights_only=True)      # no allow-list needed
    assert state['epoch'] == 2 and torch.is_tensor(state['rng']['numpy']['keys'])


def test_a_crafted_label_pickle_does_not_run_code(tmp_path, capsys):
    cfg = write_config(tmp_path)
    label = yaml.safe_load(open(cfg))['train_feeder_args']['label_path']
    marker = tmp_path / 'pwned'
    with open(label, 'wb') as f:
        pickle.dump(([f's{i}' for i in range(16)], [Marker(str(marker))] * 16), f)
    err = run_main(capsys, 'pretrain_skeletonclr', '--config', cfg)
    one_line(err, label, 'cannot unpickle', 'refusing to load')
    assert not marker.exists()
    with pytest.raises(UserError, match='refusing'):
        read_pickle(label, 'result', 'evaluation runs write it')       # tools/ensemble.py's reader
    assert not marker.exists()


@pytest.mark.parametrize('protocol', [2, 4, 5])
def test_the_restricted_unpickler_reads_label_and_result_files(tmp_path, protocol):
    content = {'labels': (['a', 'b'], [np.int64(1), 2]), 'scores': {'a': np.arange(3, dtype=np.float32)},
               'array': np.array([1, 2], dtype=np.int32), 'floats': [1.5, np.float64(2.5)]}
    path = tmp_path / 'x.pkl'
    with open(path, 'wb') as f:
        pickle.dump(content, f, protocol=protocol)
    back = read_pickle(str(path), 'label', '')
    assert back['labels'][0] == ['a', 'b'] and int(back['labels'][1][0]) == 1
    np.testing.assert_array_equal(back['scores']['a'], np.arange(3))
    assert back['array'].dtype == np.int32 and back['floats'] == [1.5, 2.5]


# ---------------------------------------------------------------- a non-finite loss stops every loop

def linear_config(tmp_path, **overrides):
    from test_bad_inputs import eval_config
    d, l = tiny_dataset(str(tmp_path))
    return eval_config(tmp_path, d, l, num_epoch=3, eval_interval=1, **overrides)


def test_linear_evaluation_with_nan_weights_is_refused_naming_the_key(tmp_path, capsys):
    from test_bad_inputs import encoder_state
    weights = str(tmp_path / 'nan.pt')
    state = encoder_state()
    key = next(k for k, v in state.items() if v.is_floating_point() and v.dim() == 2)
    state[key] = state[key].clone()
    state[key][1, 2] = float('nan')
    torch.save(state, weights)
    err = run_main(capsys, 'linear_evaluation', '--config', linear_config(tmp_path), '--weights', weights)
    one_line(err, weights, key, 'nan', '[1, 2]')
    assert not (tmp_path / 'run' / 'best_model.pt').exists() and not (tmp_path / 'run' / 'log.txt').exists()


def test_linear_evaluation_with_an_exploding_lr_stops_keeping_the_last_good_checkpoint(tmp_path, capsys):
    err = run_main(capsys, 'linear_evaluation', '--config', linear_config(tmp_path), '--base_lr', '1e38')
    one_line(err, 'loss is', 'training stopped')
    best = tmp_path / 'run' / 'best_model.pt'
    if best.exists():
        assert all(torch.isfinite(v).all() for v in torch.load(best, weights_only=True).values()
                   if v.is_floating_point())
    state = torch.load(tmp_path / 'run' / 'latest.pt', weights_only=True)
    assert all(torch.isfinite(v).all() for v in state['model'].values() if v.is_floating_point())


def test_recognition_stops_on_a_non_finite_loss(tmp_path, capsys):
    err = run_main(capsys, 'recognition', '--config', linear_config(tmp_path), '--base_lr', '1e38')
    one_line(err, 'loss is', 'training stopped')
    state = torch.load(tmp_path / 'run' / 'latest.pt', weights_only=True)
    assert all(torch.isfinite(v).all() for v in state['model'].values() if v.is_floating_point())
