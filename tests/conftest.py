import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

# Under pytest-xdist (the README's `-n 2`) the workers share the cores: each worker and every process it
# starts uses its share of threads, so that a test and its subprocesses run with one thread count.
if os.environ.get('PYTEST_XDIST_WORKER'):
    _threads = str(max(1, (os.cpu_count() or 1) // int(os.environ.get('PYTEST_XDIST_WORKER_COUNT', '1'))))
    os.environ.setdefault('OMP_NUM_THREADS', _threads)
    import torch
    torch.set_num_threads(int(os.environ['OMP_NUM_THREADS']))

# The longest files first: under `-n 2 --dist loadfile` (the README's test command) a worker takes whole
# files in this order, so the end-to-end trainings start at once and the short files fill in around them.
LONGEST_FIRST = ('test_e2e_methods.py', 'test_e2e_skeletonclr.py', 'test_e2e_demo.py', 'test_e2e_supervised.py',
                 'test_reliability_resume.py', 'test_own_dataset.py', 'test_reliability.py', 'test_benchmark.py',
                 'test_performance.py')


def pytest_configure(config):
    # pytest-xdist (>= 3.8) reorders files by their number of tests unless told not to, which would put the
    # few-test end-to-end files last and leave one worker training alone at the end: keep LONGEST_FIRST.
    if getattr(config.option, 'loadscopereorder', None) is not None:
        config.option.loadscopereorder = False


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(os.path.basename(str(item.fspath)), len(rank)))   # stable


SHARED = os.path.join(os.path.dirname(ROOT), 'shared')
REALDATA = os.path.join(SHARED, 'realdata')


def require_realdata(*parts):
    """Path under ../shared/realdata, or skip the test with a message when it is absent."""
    path = os.path.join(REALDATA, *parts)
    if not os.path.exists(path):
        pytest.skip(f'real data not found at {path} (../shared/realdata is needed for this test)')
    return path


def one_line(text, *needles):
    """``text`` is exactly one non-empty line holding every needle; returns that line."""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    assert len(lines) == 1, f'expected one line, got:\n{text}'
    for needle in needles:
        assert str(needle) in lines[0], f'{needle!r} not in {lines[0]!r}'
    return lines[0]


def snapshot(folder):
    """{relative path: bytes} of every file under ``folder``."""
    out = {}
    for root, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            with open(path, 'rb') as f:
                out[os.path.relpath(path, folder)] = f.read()
    return out


def tiny_dataset(folder, n=16, V=20, T=12, num_class=4, seed=0):
    rng = np.random.RandomState(seed)
    data = rng.randn(n, 3, T, V, 1).astype(np.float32)
    labels = [i % num_class for i in range(n)]
    np.save(os.path.join(folder, 'data.npy'), data)
    with open(os.path.join(folder, 'label.pkl'), 'wb') as f:
        pickle.dump(([f's{i}' for i in range(n)], labels), f)
    return os.path.join(folder, 'data.npy'), os.path.join(folder, 'label.pkl')


def write_config(tmp_path, **overrides):
    data, label = tiny_dataset(str(tmp_path))
    cfg = {
        'work_dir': str(tmp_path / 'run'),
        'train_feeder': 'feeder.ntu_feeder.Feeder_dual',
        'train_feeder_args': {'data_path': data, 'label_path': label, 'shear_amplitude': 0.5,
                              'temperal_padding_ratio': 6, 'mmap': True},
        'model': 'net.skeletonclr.SkeletonCLR',
        'model_args': {'base_encoder': 'net.st_gcn.Model', 'pretrain': True, 'feature_dim': 8,
                       'queue_size': 16, 'momentum': 0.999, 'Temperature': 0.07, 'mlp': True,
                       'in_channels': 3, 'hidden_channels': 4, 'hidden_dim': 8, 'num_class': 4,
                       'dropout': 0.5, 'graph_args': {'layout': 'nw-ucla', 'strategy': 'spatial'},
                       'edge_importance_weighting': True},
        'base_lr': 0.1, 'step': [250], 'batch_size': 8, 'num_epoch': 1, 'num_worker': 0,
        'device': [0], 'progress_bar': False,
        'weights_init': False,      # a small-data recipe, as config/demo (the family's init collapses it)
    }
    cfg.update(overrides)
    path = tmp_path / 'config.yaml'
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


# ------------------------------------------------------------------ real NW-UCLA arrays of the e2e tests

def once_for_all_workers(tmp_path_factory, name, make):
    """``make(folder)`` run once per test session, not once per pytest-xdist worker: the first worker to ask
    runs it in a folder of the session's shared temporary root while holding a file lock; the others wait
    on the lock and read the JSON result it left.  A ``make`` that fails leaves no result (the next asks
    again)."""
    import fcntl
    import json
    root = tmp_path_factory.getbasetemp()
    if os.environ.get('PYTEST_XDIST_WORKER'):
        root = root.parent                           # popen-gw<N>'s parent: one per session
    folder, result = root / name, root / f'{name}.json'
    with open(root / f'{name}.lock', 'w') as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)             # released when the file closes
        if not result.exists():
            folder.mkdir(exist_ok=True)
            value = make(folder)
            result.write_text(json.dumps(value))
        return json.loads(result.read_text())


def ucla_gendata(src, folder, *extra):
    subprocess.run([sys.executable, os.path.join(ROOT, 'tools', 'ucla_gendata.py'), '--data-path', src,
                    '--out-folder', str(folder), '--no-progress', '--no-floor', *extra], check=True, capture_output=True)
    return str(folder / 'ucla')


@pytest.fixture(scope='session')
def ucla(tmp_path_factory):
    """NW-UCLA cross-view arrays made by the data tool from the real recordings (once for all workers)."""
    src = require_realdata('nw_ucla', 'all_sqe')
    return once_for_all_workers(tmp_path_factory, 'ucla_data', lambda folder: ucla_gendata(src, folder))


@pytest.fixture(scope='session')
def ucla_ctrgcn(tmp_path_factory):
    """NW-UCLA in CTR-GCN's preprocessing (native lengths), what the recognition configs read."""
    src = require_realdata('nw_ucla', 'all_sqe')
    return once_for_all_workers(tmp_path_factory, 'ucla_ctrgcn',
                                lambda folder: ucla_gendata(src, folder, '--preprocess', 'ctrgcn'))


@pytest.fixture(scope='session')
def ucla_random_floor(ucla, tmp_path_factory):
    """Linear top-1 of the untrained encoder: what pretraining must beat (once for all workers)."""
    cfg = os.path.join(ROOT, 'config/ucla/linear_eval_skeletonclr.yaml')
    from e2e_support import linear
    return once_for_all_workers(tmp_path_factory, 'linear_random',
                                lambda folder: linear(cfg, ucla, str(folder), 'random').best['top1'])
