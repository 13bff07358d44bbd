"""Bad input by generation (hypothesis, an optional test dependency: skipped when absent): settings drawn
outside their schema and corrupted files (truncated, empty, garbage, not UTF-8, NaN, wrong dtype or
shape, a folder where a file is expected, missing) for ``main.py`` and the tools.  Every case must end
as one line ``error: ...`` with exit status 2 that names the key or file, leave the files that were
there byte-identical and leave no temporary file behind.  Fixed seed (``derandomize``) and bounded
example counts keep the run short and the same on every machine."""
import contextlib
import io
import os
import pickle
import tempfile

import numpy as np
import pytest
import yaml

hypothesis = pytest.importorskip('hypothesis')
from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

import main as main_module  # noqa: E402
from conftest import snapshot, tiny_dataset, write_config  # noqa: E402
from processor import schema  # noqa: E402
from torchlight.io import run_tool  # noqa: E402

SETTINGS = settings(max_examples=12, derandomize=True, deadline=None, database=None,
                    suppress_health_check=list(HealthCheck))


def assert_contract(rc, err, needle, before, after):
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert rc == 2, (rc, err)
    assert len(lines) == 1 and lines[0].startswith('error: '), err
    assert 'Traceback' not in err
    assert needle in lines[0], (needle, lines[0])
    for name, content in before.items():
        assert after.get(name) == content, f'{name} changed'
    assert not [n for n in after if '.tmp' in n], sorted(after)


def run_main(argv):
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        rc = main_module.main(argv)
    return rc, err.getvalue()


def run_a_tool(main, argv):
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            run_tool(lambda: main(argv))
        except SystemExit as e:
            return e.code, err.getvalue()
    return 0, err.getvalue()


# ------------------------------------------------------------------ values outside the schema

def bad_value(rule):
    """A strategy of values that ``rule`` refuses."""
    choices = [st.sampled_from(['', 'abc', [], {}, [1, 'x']])]
    if rule.kind in ('int', 'float'):
        if rule.low is not None:
            choices.append(st.floats(-1e6, rule.low, exclude_max=not rule.open_low).map(
                lambda x, r=rule: int(x) - 1 if r.kind == 'int' else x))
        if rule.high is not None:
            choices.append(st.floats(rule.high, 1e6, exclude_min=not rule.open_high).map(
                lambda x, r=rule: int(x) + 1 if r.kind == 'int' else x))
        if rule.kind == 'float':
            choices.append(st.sampled_from([float('nan'), float('inf')]))
        else:
            choices.append(st.sampled_from([0.5, True]))
    elif rule.kind == 'enum':
        choices.append(st.text(min_size=1, max_size=6).filter(lambda s, r=rule: s not in r.choices))
    elif rule.kind == 'bool':
        choices.append(st.sampled_from([2, 'maybe', 0.5]))
    return st.one_of(choices).filter(lambda v, r=rule: r.problem(v) is not None)


MODEL_KEYS = ['queue_size', 'Temperature', 'momentum', 'feature_dim', 'hidden_channels', 'hidden_dim',
              'dropout', 'num_class', 'mlp', 'in_channels']
PROCESSOR_KEYS = ['num_epoch', 'batch_size', 'test_batch_size', 'base_lr', 'weight_decay', 'lr_decay_rate',
                  'warm_up_epoch', 'log_interval', 'num_worker', 'momentum', 'seed']


@st.composite
def bad_setting(draw):
    where = draw(st.sampled_from(['model_args', 'processor', 'feeder']))
    if where == 'model_args':
        key = draw(st.sampled_from(MODEL_KEYS))
        return where, key, draw(bad_value(schema.rules()[key]))
    if where == 'feeder':
        key = draw(st.sampled_from(['jitter_std', 'mmap', 'temperal_padding_ratio', 'check_finite']))
        return where, key, draw(bad_value(schema.rules()[key]))
    key = draw(st.sampled_from(PROCESSOR_KEYS))
    return where, key, draw(bad_value(schema.PROCESSOR_RULES[key]))


@SETTINGS
@given(setting=bad_setting())
def test_main_refuses_every_setting_outside_its_schema_in_one_line(setting):
    where, key, value = setting
    with tempfile.TemporaryDirectory() as tmp:
        from pathlib import Path
        tmp = Path(tmp)
        config = write_config(tmp)
        cfg = yaml.safe_load(open(config))
        if where == 'model_args':
            cfg['model_args'][key] = value
        elif where == 'feeder':
            cfg['train_feeder_args'][key] = value
        else:
            cfg[key] = value
        try:
            text = yaml.safe_dump(cfg)
        except yaml.YAMLError:
            return
        (tmp / 'config.yaml').write_text(text)
        before = snapshot(tmp)
        rc, err = run_main(['pretrain_skeletonclr', '--config', config])
        assert_contract(rc, err, key, before, snapshot(tmp))
        assert not (tmp / 'run' / 'log.txt').exists()


# ------------------------------------------------------------------ corrupted files

CORRUPTIONS = ['truncate', 'empty', 'garbage', 'not_utf8', 'folder', 'missing', 'nan', 'wrong_dtype',
               'wrong_shape']


def corrupt(path, kind, cut=0.5):
    """Damage ``path`` in place in one of the ``CORRUPTIONS`` ways (nan / wrong_dtype / wrong_shape
    rewrite a .npy's array; elsewhere they fall back to garbage)."""
    data = open(path, 'rb').read()
    if path.endswith('.npy') and kind in ('nan', 'wrong_dtype', 'wrong_shape'):
        array = np.load(path)
        if kind == 'nan':
            array = array.copy()
            array.flat[int(cut * (array.size - 1))] = np.nan
        elif kind == 'wrong_dtype':
            array = array.astype(np.complex64)
        else:
            array = array.reshape(array.shape[0], -1)
        np.save(path, array)
        return
    os.remove(path)
    if kind == 'folder':
        os.makedirs(path)
    elif kind == 'missing':
        pass
    else:
        content = {'truncate': data[:max(1, int(cut * len(data)) - 1)], 'empty': b'',
                   'not_utf8': b'\xff\xfe\x00bad: \xe9\xff\n'}.get(kind, b'\x00garbage\x13\x37' * 7)
        with open(path, 'wb') as f:
            f.write(content)


@SETTINGS
@given(target=st.sampled_from(['data', 'label', 'config']), kind=st.sampled_from(CORRUPTIONS),
       cut=st.floats(0.05, 0.95))
def test_main_refuses_every_corrupted_input_file_in_one_line(target, kind, cut):
    with tempfile.TemporaryDirectory() as tmp:
        from pathlib import Path
        tmp = Path(tmp)
        config = write_config(tmp)
        path = {'data': str(tmp / 'data.npy'), 'label': str(tmp / 'label.pkl'), 'config': config}[target]
        corrupt(path, kind, cut)
        (tmp / 'run').mkdir()
        (tmp / 'run' / 'notes.txt').write_text('an earlier file\n')
        before = snapshot(tmp)
        rc, err = run_main(['pretrain_skeletonclr', '--config', config])
        assert_contract(rc, err, os.path.basename(path), before, snapshot(tmp))


# ------------------------------------------------------------------ tools

def ensemble_inputs(folder):
    names = [f's{i}' for i in range(6)]
    label = os.path.join(folder, 'label.pkl')
    with open(label, 'wb') as f:
        pickle.dump((names, [i % 3 for i in range(6)]), f)
    results = []
    for k in range(2):
        path = os.path.join(folder, f'result{k}.pkl')
        rng = np.random.RandomState(k)
        with open(path, 'wb') as f:
            pickle.dump({n: rng.randn(3).astype(np.float32) for n in names}, f)
        results.append(path)
    out = os.path.join(folder, 'fused.pkl')
    with open(out, 'wb') as f:
        f.write(b'an earlier fused result')
    return label, results, out


@SETTINGS
@given(target=st.sampled_from(['label', 'result0', 'weights']), kind=st.sampled_from(CORRUPTIONS),
       weight=st.sampled_from(['nan', 'inf', '1e999']))
def test_ensemble_refuses_corrupted_inputs_and_non_finite_weights_keeping_its_output(target, kind, weight):
    from tools import ensemble
    with tempfile.TemporaryDirectory() as tmp:
        label, results, out = ensemble_inputs(tmp)
        weights = ['1', '1']
        if target == 'weights':
            weights = ['1', weight]
            needle = '--weights'
        else:
            path = label if target == 'label' else results[0]
            corrupt(path, kind)
            needle = os.path.basename(path)
        before = snapshot(tmp)
        rc, err = run_a_tool(ensemble.main, ['--label', label, '--results', *results, '--weights', *weights,
                                             '--out', out])
        assert_contract(rc, err, needle, before, snapshot(tmp))


def ucla_sample(folder, i, frames=6):
    import json
    rng = np.random.RandomState(i)
    view = 1 + i % 3
    sample = {'file_name': f'a01_s01_e{i:02d}_v{view:02d}', 'label': 1 + i % 10,
              'skeletons': rng.randn(frames, 20, 3).tolist()}
    path = os.path.join(folder, f'a01_s01_e{i:02d}_v{view:02d}.json')
    with open(path, 'w') as f:
        json.dump(sample, f)
    return path


@SETTINGS
@given(index=st.integers(0, 5), kind=st.sampled_from(CORRUPTIONS + ['nan_json']))
def test_ucla_converter_refuses_a_corrupted_clip_and_keeps_both_earlier_splits(index, kind):
    from tools import ucla_gendata
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, 'raw')
        os.makedirs(src)
        paths = [ucla_sample(src, i) for i in range(6)]
        out = os.path.join(tmp, 'out')
        assert run_a_tool(ucla_gendata.main, ['--data-path', src, '--out-folder', out, '--no-progress'])[0] == 0
        path = paths[index]
        if kind == 'missing':
            return                                  # one clip fewer is valid input
        if kind == 'nan_json':
            import json
            sample = json.load(open(path))
            sample['skeletons'][1][3][2] = float('nan')
            with open(path, 'w') as f:
                json.dump(sample, f)
        else:
            corrupt(path, kind)                     # the .npy kinds fall back to garbage for a .json
        before = snapshot(tmp)
        rc, err = run_a_tool(ucla_gendata.main, ['--data-path', src, '--out-folder', out, '--no-progress'])
        assert_contract(rc, err, os.path.basename(path), before, snapshot(tmp))
