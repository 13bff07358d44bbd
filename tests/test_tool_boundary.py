"""Every tool behind the same boundary (issue 42), by generation: the entry points are found, not listed
(every ``tools/*.py`` with a ``__main__`` block, each sub-command of one), their options are read from
their own parsers, and the same hostile inputs are thrown at each:

* every option is declared with a checked type (``torchlight.options``), with ``choices`` or as a flag;
* a missing file, a folder for a file (a file for a folder), non-UTF-8 text, a crafted pickle (it would
  create a marker file), duplicate-key YAML and a YAML anchor bomb for every input option at once;
* every value outside a numeric option's range (and a 5000-character value for every option with
  choices), and an unwritable path for every output option;
* a Ctrl-C during the start-up imports (a subprocess per tool);

each asserting the contract: exit status 2 (130 after a Ctrl-C), one line ``error: ...`` naming the
input or option, no traceback, the files that were there byte-identical, nothing new on disk.  The tools
run in-process (as ``python tools/<tool>.py`` runs them: ``run_tool(main)``) in a folder of their own,
so their default outputs land there too.  A tool added later is covered without anyone writing its cases.
The focused tests after them close each failure class of issue 42 by its mechanism."""
import argparse
import contextlib
import glob
import importlib
import io
import os
import pickle
import signal
import subprocess
import sys
import warnings
from unittest import mock

import numpy as np
import pytest
import yaml

from conftest import ROOT, one_line, snapshot
from torchlight import options
from torchlight.boundary import EXIT_INTERRUPTED, MAX_LINE, run_tool

ENV = dict(os.environ, OMP_NUM_THREADS='1', PYTHONWARNINGS='ignore')
TOOL_FILES = sorted(p for p in glob.glob(os.path.join(ROOT, 'tools', '*.py'))
                    if "__name__ == '__main__'" in open(p, encoding='utf-8').read())
TOOLS = [os.path.splitext(os.path.basename(p))[0] for p in TOOL_FILES]
FLAG_ACTIONS = (argparse._HelpAction, argparse._StoreTrueAction, argparse._StoreFalseAction,
                argparse._StoreConstAction, argparse._SubParsersAction, argparse._VersionAction,
                argparse._AppendConstAction, argparse._CountAction)


def test_the_tools_are_found():
    assert {'ntu_gendata', 'floor', 'reproduce', 'ensemble', 'tsne', 'early_dynamics'} <= set(TOOLS)


# ---------------------------------------------------------------------------------------------- running

class Captured(Exception):
    def __init__(self, parser):
        super().__init__('parser captured')
        self.parser = parser


def tool_main(tool):
    return importlib.import_module(f'tools.{tool}').main


def entry_points(tool):
    """[(argv prefix, parser)]: the tool's parser, or one per sub-command; read from the tool itself (its
    ``main`` runs until it parses its command line)."""
    def capture(self, args=None, namespace=None):
        raise Captured(self)
    with mock.patch.object(argparse.ArgumentParser, 'parse_args', capture):
        try:
            tool_main(tool)([])
        except Captured as c:
            parser = c.parser
        else:
            raise AssertionError(f'tools/{tool}.py: main() did not parse a command line')
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        return [([], parser)]
    return [([name], sub) for name, sub in subs[0].choices.items()]


def run(tool, argv, cwd):
    """``python tools/<tool>.py argv`` in-process in ``cwd`` -> (exit status, stderr)."""
    err = io.StringIO()
    with contextlib.chdir(cwd), contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()), \
            warnings.catch_warnings():
        warnings.simplefilter('ignore')
        try:
            run_tool(lambda: tool_main(tool)(list(argv)))
        except SystemExit as e:
            return e.code, err.getvalue()
    return 0, err.getvalue()


def assert_contract(rc, err, needles, before, after, status=2):
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert rc == status, (rc, err[-3000:])
    assert 'Traceback' not in err, err[-3000:]
    assert len(lines) == 1 and lines[0].startswith('error: '), err[-3000:]
    assert len(lines[0]) <= MAX_LINE, len(lines[0])
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    assert after == before, sorted(set(after) ^ set(before)) or [k for k in after if after[k] != before.get(k)]
    return lines[0]


# ---------------------------------------------------------------------------------------------- inputs

class Exploit:
    """Unpickling this runs ``touch <marker>``: the attack a crafted pickle makes."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f'touch {self.marker}',))


def anchor_bomb(levels=9, width=9):
    """A "billion laughs" YAML: ``width ** levels`` values once the aliases are expanded."""
    lines = ['l0: &l0 [' + ', '.join(['lol'] * width) + ']']
    for i in range(1, levels):
        lines.append(f'l{i}: &l{i} [' + ', '.join([f'*l{i - 1}'] * width) + ']')
    return ('\n'.join(lines) + '\n').encode()


def hostile_content(kind, marker):
    return {'non_utf8': b'\xff\xfe\x00not \x80 text\xc3\x28\n',
            'crafted_pickle': pickle.dumps(Exploit(marker), protocol=2),
            'duplicate_yaml': b'work_dir: first\nbatch_size: 8\nwork_dir: second\n',
            'anchor_bomb': anchor_bomb()}[kind]


# names the tools look for in a folder they read (every one holds the hostile content)
FOLDER_FILES = ('S001C001P001R001A001.skeleton', 'a01_s01_e01_v01.json', 'train_position.npy', 'train_label.pkl',
                'val_position.npy', 'val_label.pkl', 'train_data.npy', 'clip.txt', '0002-L.txt')


def kind_of(action):
    return getattr(action.type, 'kind', None)


def fill(action, value):
    n = action.nargs
    return [value] * n if isinstance(n, int) else [value]


def input_modes(parser):
    """[dests to leave out]: one entry per input mode of a tool whose parser names alternatives
    (``parser.input_modes``: tuples of dests, one mode each, e.g. clips + labels or recordings + segments)."""
    modes = getattr(parser, 'input_modes', None)
    if not modes:
        return [()]
    return [tuple(d for other in modes if other is not mode for d in other) for mode in modes]


def argv_for(prefix, parser, values, skip=None):
    """The command line: every input option (file / folder) from ``values``, the other required
    options and positionals from their type's example; ``values`` may give any option by dest; ``skip``:
    dests left out (default: those of all but the first input mode)."""
    skip = input_modes(parser)[0] if skip is None else skip
    positional, optional = [], []
    for action in parser._actions:
        if isinstance(action, FLAG_ACTIONS) or action.dest in skip:
            continue
        kind = kind_of(action)
        if action.dest in values:
            value = values[action.dest]
        elif kind in ('input', 'input-folder'):
            value = values[kind]
        elif action.required or (not action.option_strings and action.nargs not in ('?', '*')):
            if action.choices is not None:
                value = str(next(iter(action.choices)))
            elif kind in ('output', 'output-folder'):
                value = os.path.join(values['out'], action.dest)
            else:
                value = getattr(action.type, 'example', None) or 'x'
        else:
            continue
        if action.option_strings:
            optional += [action.option_strings[0]] + fill(action, value)
        else:
            positional += fill(action, value)
    return list(prefix) + positional + optional


def sandbox(tmp_path, content=b'', marker=None):
    """``tmp_path/in`` (a hostile file and a folder of hostile files), ``tmp_path/work`` (the tool's current
    folder, where its default outputs go) and an earlier output; -> the values for ``argv_for``."""
    inputs = tmp_path / 'in'
    folder = inputs / 'folder'
    folder.mkdir(parents=True)
    (inputs / 'hostile').write_bytes(content)
    for name in FOLDER_FILES:
        (folder / name).write_bytes(content)
    work = tmp_path / 'work'
    work.mkdir()
    (work / 'earlier_output.npy').write_bytes(b'an earlier result')
    return {'input': str(inputs / 'hostile'), 'input-folder': str(folder), 'out': str(work / 'new'),
            'inputs': str(inputs), 'work': str(work)}


# ---------------------------------------------------------------------------------------------- the contract

@pytest.mark.parametrize('tool', TOOLS)
def test_every_option_is_declared_with_its_rule(tool):
    for prefix, parser in entry_points(tool):
        for action in parser._actions:
            if isinstance(action, FLAG_ACTIONS) or action.choices is not None or getattr(type(action), 'checked', False):
                continue
            assert isinstance(action.type, options.Checked), \
                (f"tools/{tool}.py {' '.join(prefix)}: option {action.option_strings or action.dest} has no checked "
                 'type: declare it with a type of torchlight/options.py (its range stated once)')


@pytest.mark.parametrize('tool', TOOLS)
@pytest.mark.parametrize('case', ['missing', 'wrong_kind'])
def test_a_missing_input_or_one_of_the_wrong_kind_is_one_line(tool, case, tmp_path):
    values = sandbox(tmp_path)
    for prefix, parser in entry_points(tool):
        if not any(kind_of(a) in ('input', 'input-folder') for a in parser._actions):
            continue
        if case == 'missing':
            bad = {'input': str(tmp_path / 'in' / 'nothing.yaml'), 'input-folder': str(tmp_path / 'in' / 'nowhere')}
        else:                                   # a folder where a file is expected, and the reverse
            bad = {'input': values['input-folder'], 'input-folder': values['input']}
        before = snapshot(tmp_path)
        rc, err = run(tool, argv_for(prefix, parser, dict(values, **bad)), values['work'])
        assert_contract(rc, err, [], before, snapshot(tmp_path))
        assert any(path in err for path in bad.values()), err


@pytest.mark.parametrize('tool', TOOLS)
@pytest.mark.parametrize('kind', ['non_utf8', 'crafted_pickle', 'duplicate_yaml', 'anchor_bomb'])
def test_hostile_file_content_is_one_line_naming_the_file(tool, kind, tmp_path):
    marker = tmp_path / 'pwned'
    values = sandbox(tmp_path, hostile_content(kind, marker))
    tried = 0
    for prefix, parser in entry_points(tool):
        if not any(kind_of(a) in ('input', 'input-folder') for a in parser._actions):
            continue
        for skip in input_modes(parser):
            tried += 1
            before = snapshot(tmp_path)
            with guard(60):
                rc, err = run(tool, argv_for(prefix, parser, values, skip), values['work'])
            line = assert_contract(rc, err, [values['inputs']], before, snapshot(tmp_path))
            assert not marker.exists(), 'a crafted pickle ran code'
            if kind == 'duplicate_yaml' and 'YAML' in line:
                assert 'duplicate key' in line, line
            if kind == 'anchor_bomb' and 'YAML' in line:
                assert 'YAML bomb' in line, line
    if tried == 0:
        pytest.skip(f'tools/{tool}.py reads no input file')


@contextlib.contextmanager
def guard(seconds):
    """A hang is a failure (SIGALRM), not a stuck suite; not a speed assertion."""
    def alarm(signum, frame):
        raise AssertionError(f'still running after {seconds} s')
    previous = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.mark.parametrize('tool', TOOLS)
def test_every_value_outside_an_options_range_is_one_bounded_line(tool, tmp_path):
    values = sandbox(tmp_path)
    for prefix, parser in entry_points(tool):
        for action in parser._actions:
            if not action.option_strings or isinstance(action, FLAG_ACTIONS):
                continue
            bad = list(getattr(action.type, 'bad', ()))
            if action.choices is not None:
                bad.append('x' * 5000)
            for value in bad:
                argv = argv_for(prefix, parser, values, skip=(action.dest,))
                argv += [action.option_strings[0]] + fill(action, value)
                before = snapshot(tmp_path)
                rc, err = run(tool, argv, values['work'])
                line = assert_contract(rc, err, [action.option_strings[0]], before, snapshot(tmp_path))
                assert len(line) < 600, line


@pytest.mark.parametrize('tool', TOOLS)
def test_an_unwritable_output_is_one_line(tool, tmp_path):
    values = sandbox(tmp_path)
    blocker = tmp_path / 'work' / 'a_file'
    blocker.write_bytes(b'not a folder')
    for prefix, parser in entry_points(tool):
        for action in parser._actions:
            if kind_of(action) not in ('output', 'output-folder'):
                continue
            path = str(blocker / 'out')                       # under a file: no user can write there
            before = snapshot(tmp_path)
            rc, err = run(tool, argv_for(prefix, parser, dict(values, **{action.dest: path})), values['work'])
            assert_contract(rc, err, [action.option_strings[0] if action.option_strings else path], before,
                            snapshot(tmp_path))


INTERRUPT_AT_FIRST_HEAVY_IMPORT = r'''
import builtins, os, runpy, signal, sys
real = builtins.__import__
def hooked(name, *args, **kwargs):
    if name.split('.')[0] in ('numpy', 'torch', 'yaml'):
        builtins.__import__ = real
        os.kill(os.getpid(), signal.SIGINT)
    return real(name, *args, **kwargs)
builtins.__import__ = hooked
sys.argv = [sys.argv[1], '--help']
runpy.run_path(sys.argv[0], run_name='__main__')
'''


@pytest.mark.parametrize('script', [os.path.join('tools', f'{t}.py') for t in TOOLS] + ['main.py'])
def test_a_ctrl_c_during_the_imports_is_one_line(script):
    proc = subprocess.run([sys.executable, '-c', INTERRUPT_AT_FIRST_HEAVY_IMPORT, script], cwd=ROOT, env=ENV,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == EXIT_INTERRUPTED, (proc.returncode, proc.stderr[-2000:])
    one_line(proc.stderr, 'error: interrupted')


# ================================================================================================
# The six failure classes of issue 42, each closed by a mechanism (docs/RELIABILITY.md says which)

def run_main(*argv, status=2):
    """``python main.py argv`` in-process -> stderr (asserts the exit status)."""
    import main as main_module
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        rc = main_module.main([str(a) for a in argv])
    assert rc == status, (rc, err.getvalue()[-3000:])
    return err.getvalue()


def write(path, content):
    path = str(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'wb' if isinstance(content, bytes) else 'w') as f:
        f.write(content)
    return path


def save_labels(path, labels, names=None):
    names = names if names is not None else [f's{i}' for i in range(len(labels))]
    with open(path, 'wb') as f:
        pickle.dump((names, list(labels)), f)
    return str(path)


def converted(folder, n=(6, 3), shape=(3, 8, 20, 1), labels=None):
    """A converted dataset folder ({train,val}_position.npy, _label.pkl), 3 classes."""
    os.makedirs(folder, exist_ok=True)
    for split, count in zip(('train', 'val'), n):
        np.save(os.path.join(folder, f'{split}_position.npy'),
                np.random.RandomState(count).randn(count, *shape).astype(np.float32))
        save_labels(os.path.join(folder, f'{split}_label.pkl'),
                    labels if labels is not None and split == 'train' else [i % 3 for i in range(count)])
    return str(folder)


def tool_error(tool, *argv, cwd=None, status=2, needles=()):
    """The tool's one line (contract asserted, the folder ``cwd`` unchanged)."""
    cwd = str(cwd or os.getcwd())
    before = snapshot(cwd)
    rc, err = run(tool, [str(a) for a in argv], cwd)
    return assert_contract(rc, err, [str(n) for n in needles], before, snapshot(cwd), status=status)


# ---------------------------------------------------------------- 1. every expected exception is one line

@pytest.mark.parametrize('error', [MemoryError(), OverflowError('cannot convert float infinity to integer')])
def test_memory_and_overflow_errors_reach_the_boundary_as_one_line(error):
    err = io.StringIO()
    with contextlib.redirect_stderr(err), pytest.raises(SystemExit) as info:
        def main():
            raise error
        run_tool(main)
    assert info.value.code == 2
    one_line(err.getvalue(), 'error: ')


def test_a_skeleton_header_declaring_a_billion_frames_is_refused_before_allocating(tmp_path):
    raw = tmp_path / 'raw'
    write(raw / 'S001C001P001R001A001.skeleton', '1000000000\n1\n')
    tool_error('ntu_gendata', '--data-path', raw, '--out-folder', tmp_path / 'out', '--ignored-sample-path',
               '--no-progress', cwd=tmp_path, needles=['S001C001P001R001A001.skeleton', '1000000000 frames'])


def test_an_npy_header_declaring_more_than_the_file_holds_is_refused_before_allocating(tmp_path):
    from torchlight.readers import load_npy
    path = tmp_path / 'data.npy'
    np.save(path, np.zeros((2, 3, 4, 20, 1), dtype=np.float32))
    blob = path.read_bytes().replace(b"'shape': (2, 3, 4, 20, 1)", b"'shape': (2000000000, 3, 4, 20, 1)")
    path.write_bytes(blob)
    with pytest.raises(ValueError, match='header declares shape .2000000000.* truncated or a lying header'):
        load_npy(str(path), 'data file', dims='N, C, T, V, M')


def pku_input(tmp_path, label_line):
    skeletons, labels = tmp_path / 'skeleton', tmp_path / 'label'
    row = ' '.join(['0.5'] * 150)
    write(skeletons / '0002-L.txt', '\n'.join([row] * 10) + '\n')
    write(labels / '0002-L.txt', label_line + '\n')
    split = write(tmp_path / 'split.txt', 'Training videos: 0002-L\nValidataion videos: 0002-L\n')
    return ['--skeleton-path', skeletons, '--label-path', labels, '--split-file', split,
            '--out-folder', tmp_path / 'out', '--no-progress']


def test_an_infinite_frame_number_in_a_label_file_is_one_line_naming_it(tmp_path):
    tool_error('pku_gendata', *pku_input(tmp_path, '1,0,inf,1'), cwd=tmp_path,
               needles=[os.path.join('label', '0002-L.txt'), 'line 1', 'not a finite number'])


@pytest.fixture(scope='module')
def finished(tmp_path_factory):
    """A finished 2-epoch pretraining run: (config, work_dir); tests resume copies of it."""
    from conftest import write_config
    tmp_path = tmp_path_factory.mktemp('finished')
    cfg = write_config(tmp_path, num_epoch=2, save_interval=2)
    run_main('pretrain_skeletonclr', '--config', cfg, status=0)
    return cfg, tmp_path / 'run'


def resumed_copy(finished, tmp_path, change=None):
    import shutil
    import torch
    cfg, source = finished
    work_dir = tmp_path / 'run'
    shutil.copytree(source, work_dir)
    for name in ('latest.pt', 'latest.prev.pt'):
        if change is not None:
            state = torch.load(work_dir / name, weights_only=True)
            change(state)
            torch.save(state, work_dir / name)
    return cfg, work_dir


@pytest.mark.parametrize('change, key', [(lambda state: state.update(epoch='2'), 'epoch'),
                                         (lambda state: state.pop('meta_info'), 'meta_info'),
                                         (lambda state: state['best'].update(top1=None), 'best')])
def test_a_resume_file_of_the_wrong_form_is_one_line_naming_file_and_key(finished, tmp_path, change, key):
    cfg, work_dir = resumed_copy(finished, tmp_path, change)
    before = snapshot(work_dir)
    err = run_main('pretrain_skeletonclr', '--config', cfg, '--work_dir', work_dir, '--resume', 'true',
                   '--num_epoch', '3')
    one_line(err, 'error: ', str(work_dir / 'latest.pt'), f"key '{key}'")
    assert snapshot(work_dir) == before                       # config.yaml and log.txt included


DEMO = os.path.join(ROOT, 'config', 'demo')


@pytest.mark.parametrize('tool, argv, option', [
    ('gen_text_features', ['--encoder', 'minilm', '--device', 'cuda:x'], '--device'),
    ('gen_text_features', ['--encoder', 'minilm', '--device', 'gpu'], '--device'),
    ('benchmark', ['--config', os.path.join(DEMO, 'pretrain_skeletonclr.yaml'), '--threads', '-1'], '--threads'),
    ('tsne', ['--config', os.path.join(DEMO, 'linear_eval_skeletonclr.yaml'), '--device', 'cuda:99'], '--device'),
])
def test_bad_torch_settings_are_refused_with_the_option_named(tool, argv, option, tmp_path):
    tool_error(tool, *argv, cwd=tmp_path, needles=[option])


def eval_files(tmp_path, data=None, labels=None, suffix='.npy'):
    from test_bad_inputs import eval_config
    data = np.random.RandomState(0).randn(16, 3, 12, 20, 1).astype(np.float32) if data is None else data
    path = str(tmp_path / f'data{suffix}')
    (np.savez if suffix == '.npz' else np.save)(path, data)
    label = save_labels(tmp_path / 'label.pkl', [i % 4 for i in range(len(data))] if labels is None else labels)
    return eval_config(tmp_path, path, label), path, label


def test_an_npz_given_where_an_npy_is_expected_is_one_line(tmp_path):
    cfg, path, _ = eval_files(tmp_path, suffix='.npz')
    one_line(run_main('recognition', '--config', cfg), path, 'is an .npz archive')


def test_a_config_key_that_is_not_a_name_is_one_line(tmp_path):
    cfg, _, _ = eval_files(tmp_path)
    with open(cfg, 'a') as f:
        f.write('1: 2\n')
    one_line(run_main('recognition', '--config', cfg), cfg, 'key 1 is not a name')


# ---------------------------------------------------------------- 2. the file is named

def test_a_class_names_file_that_is_not_utf8_is_named(tmp_path):
    label = save_labels(tmp_path / 'label.pkl', [0, 1, 2])
    result = tmp_path / 'result.pkl'
    with open(result, 'wb') as f:
        pickle.dump({f's{i}': np.eye(3)[i] for i in range(3)}, f)
    names = write(tmp_path / 'names.txt', b'walk\n\xff\xfe\nrun\n')
    tool_error('class_report', '--label', label, '--result', result, '--class-names', names,
               '--out-folder', tmp_path / 'report', cwd=tmp_path, needles=[names, 'not UTF-8', 'line 2'])


def test_a_clip_that_is_not_utf8_is_named(tmp_path):
    from tools.custom_gendata import make_example
    with contextlib.redirect_stdout(io.StringIO()):
        raw = make_example(str(tmp_path / 'raw'))
    clip = next(p for p in sorted(glob.glob(os.path.join(raw, 'clips', '*.txt'))))
    with open(clip, 'ab') as f:
        f.write(b'\xff 1 2 3\n')
    tool_error('custom_gendata', '--clips', os.path.join(raw, 'clips'), '--labels', os.path.join(raw, 'labels.csv'),
               '--layout', os.path.join(raw, 'layout.yaml'), '--out', tmp_path / 'out', '--text-rows', 'joint',
               '--no-progress', cwd=tmp_path, needles=[clip, 'not UTF-8'])


def test_an_empty_split_is_named(tmp_path):
    folder = converted(tmp_path / 'data', n=(6, 0))
    tool_error('floor', folder, cwd=tmp_path, needles=[os.path.join(folder, 'val_position.npy'), 'no clips'])


def test_a_foreign_result_file_is_named_with_its_missing_key(tmp_path):
    results = tmp_path / 'results'
    path = write(results / 'a__seed1.json', '{"row": "a", "seed": 1}')
    tool_error('reproduce', 'aggregate', '--results', results, cwd=tmp_path, needles=[path, "'spec'"])


# ---------------------------------------------------------------- 3. one reader for every file

def test_the_floor_reads_labels_with_the_restricted_unpickler(tmp_path):
    folder = converted(tmp_path / 'data')
    marker = tmp_path / 'pwned'
    with open(os.path.join(folder, 'train_label.pkl'), 'wb') as f:
        pickle.dump(Exploit(str(marker)), f, protocol=2)
    tool_error('floor', folder, cwd=tmp_path, needles=['train_label.pkl', 'refusing to load'])
    assert not marker.exists()


@pytest.mark.parametrize('case, needle', [
    ('negative', 'negative label -1'),
    ('fewer', 'has 5 labels but data file'),
    ('rank4', 'expected 5 dimensions'),
])
def test_the_floor_checks_labels_and_shapes(tmp_path, case, needle):
    if case == 'rank4':
        folder = converted(tmp_path / 'data', shape=(3, 8, 20))
    else:
        folder = converted(tmp_path / 'data', labels=[0, 1, 2, -1, 0, 1] if case == 'negative' else [0, 1, 2, 0, 1])
    tool_error('floor', folder, cwd=tmp_path, needles=[folder, needle])


DUPLICATE_ROWS = '''rows:
  a: {processor: untrained, evaluations: {linear: config/demo/linear_eval_skeletonclr.yaml}}
  a: {processor: untrained, evaluations: {knn: config/demo/knn_skeletonclr.yaml}}
'''


def every_yaml_reader():
    """(what, read(path)) for every kind of YAML file the project reads."""
    from net.text_features import load_descriptions, read_dataset_info
    from net.utils.layouts import get_layout
    from tools.class_report import load_class_names
    from tools.reproduction.plan import load_plan
    from torchlight.io import load_config_file
    return [('config', load_config_file), ('layout', get_layout), ('plan', load_plan),
            ('descriptions', load_descriptions), ('class names', load_class_names),
            ('dataset info', lambda path: read_dataset_info(os.path.join(os.path.dirname(path), 'label.pkl')))]


@pytest.mark.parametrize('content, needle', [(DUPLICATE_ROWS, "duplicate key 'a' (first on line 2, again on line 3)"),
                                             (anchor_bomb().decode(), 'YAML bomb')])
def test_every_yaml_reader_refuses_duplicate_keys_and_alias_bombs(tmp_path, content, needle):
    for what, read in every_yaml_reader():
        path = write(tmp_path / what.replace(' ', '_') / 'dataset.yaml', content)
        with guard(30), pytest.raises(ValueError) as info:
            read(path)
        assert needle in str(info.value) and path in str(info.value) and len(str(info.value)) < 400, (what, info.value)


def test_an_anchor_bomb_in_a_config_option_without_a_schema_rule_is_one_line(tmp_path):
    cfg, _, _ = eval_files(tmp_path)
    with open(cfg, 'a') as f:
        f.write('ignore_weights:\n' + ''.join(f'- {line}\n' for line in anchor_bomb().decode().splitlines()))
    with guard(30):
        line = one_line(run_main('recognition', '--config', cfg), cfg, 'YAML bomb')
    assert len(line) < 400 and not os.path.exists(tmp_path / 'run' / 'config.yaml')


def test_an_anchor_bomb_on_the_command_line_is_one_line(tmp_path):
    cfg, _, _ = eval_files(tmp_path)
    bomb = '{' + ', '.join(line.replace(': ', ': ') for line in anchor_bomb().decode().splitlines()) + '}'
    with guard(30):
        one_line(run_main('recognition', '--config', cfg, '--model_args', bomb), '--model_args', 'YAML bomb')


# ---------------------------------------------------------------- 4. one checker for every option

README = os.path.join(ROOT, 'README.md')


@pytest.mark.parametrize('tool, argv, option', [
    ('negatives_probe', ['--config', os.path.join(DEMO, 'pretrain_skeletonclr.yaml'), '--weights', README,
                         '--negatives', '-3'], '--negatives'),
    ('tsne', ['--config', os.path.join(DEMO, 'linear_eval_skeletonclr.yaml'), '--batch-size', '0'], '--batch-size'),
    ('custom_gendata', ['--make-example', 'x', '--num-person', '-1'], '--num-person'),
    ('ucla_gendata', ['--num-person', '-1'], '--num-person'),
    ('ensemble', ['--label', README, '--results', README, '--weights', 'nan'], '--weights'),
    ('reproduce', ['run', '--seeds', '-1', '--dry-run'], '--seeds'),
])
def test_tool_options_outside_their_rule_are_refused(tool, argv, option, tmp_path):
    line = tool_error(tool, *argv, cwd=tmp_path, needles=[option, 'expected'])
    assert 'command line' in line


# ---------------------------------------------------------------- 5. every output written atomically

@contextlib.contextmanager
def interrupted_at_commit():
    """A Ctrl-C at the moment a tool's finished temporaries would be renamed into place (the last moment
    of its writing); yields the destinations it was about to replace."""
    real, fired = os.replace, []

    def replace(src, dst, *args, **kwargs):
        if '.tmp' in os.path.basename(str(src)):
            fired.append(str(dst))
            raise KeyboardInterrupt
        return real(src, dst, *args, **kwargs)
    with mock.patch('os.replace', replace):
        yield fired


def ucla_raw(folder):
    from test_generated_inputs import ucla_sample
    os.makedirs(folder)
    for i in range(6):
        ucla_sample(str(folder), i)
    return str(folder)


def ntu_raw(folder):
    from test_bad_inputs import skeleton_text, write_skeletons
    names = ['S001C001P001R001A001', 'S001C002P003R001A002', 'S001C001P002R001A001', 'S001C002P004R001A002']
    return write_skeletons(folder, {n: skeleton_text(4 + i) for i, n in enumerate(names)})


def writers(tmp_path):
    """(tool, argv, output folder): one run of each tool that writes files, on small valid input."""
    data = converted(tmp_path / 'data')
    result = tmp_path / 'result.pkl'
    with open(result, 'wb') as f:
        pickle.dump({f's{i}': np.eye(3)[i % 3] for i in range(3)}, f)
    out = tmp_path / 'out'
    return [
        ('gen_synthetic', ['--num-train-per-class', '1', '--num-val-per-class', '1', '--length', '8',
                           '--out-folder', out, '--no-progress']),
        ('floor', [data, '--json', out / 'floor.json']),
        ('ensemble', ['--label', os.path.join(data, 'val_label.pkl'), '--results', result, result,
                      '--out', out / 'fused.pkl']),
        ('class_report', ['--label', os.path.join(data, 'val_label.pkl'), '--result', result, '--out-folder', out]),
        ('ucla_gendata', ['--data-path', ucla_raw(tmp_path / 'ucla'), '--out-folder', out, '--no-progress',
                          '--no-floor']),
        ('ntu_gendata', ['--data-path', ntu_raw(tmp_path / 'ntu'), '--out-folder', out, '--dataset', 'ntu60',
                         '--benchmark', 'xsub', '--ignored-sample-path', '--no-progress']),
        ('custom_gendata', ['--make-example', out]),
        ('complexity', ['--config', os.path.join(ROOT, 'config', 'demo', 'linear_eval_skeletonclr.yaml'),
                        '--json', out / 'complexity.json']),
    ]


def test_a_tool_interrupted_while_writing_keeps_every_earlier_output(tmp_path):
    for i, (tool, argv) in enumerate(writers(tmp_path / 'inputs')):
        assert run(tool, [str(a) for a in argv], tmp_path)[0] == 0, tool           # the earlier outputs
        before = snapshot(tmp_path)
        with interrupted_at_commit() as fired:
            line = tool_error(tool, *argv, cwd=tmp_path, status=EXIT_INTERRUPTED, needles=['interrupted'])
        assert fired, f'tools/{tool}.py wrote its output without staging it'
        assert snapshot(tmp_path) == before, tool
        assert line


def test_positions_only_keeps_the_earlier_positions_when_a_split_fails(tmp_path):
    folder = tmp_path / 'out' / 'ntu60' / 'xsub'
    folder.mkdir(parents=True)
    data = np.random.RandomState(0).randn(2, 3, 30, 25, 2).astype(np.float32)
    for split in ('train', 'val'):
        np.save(folder / f'{split}_data.npy', data)
        save_labels(folder / f'{split}_label.pkl', [0, 1])
        np.save(folder / f'{split}_position.npy', np.ones((2, 3, 50, 25, 2), dtype=np.float32))
    bad = data.copy()
    bad[1, 0, 3, 4, 0] = np.nan
    np.save(folder / 'val_data.npy', bad)                # the second split fails after the first was computed
    tool_error('ntu_gendata', '--positions-only', '--out-folder', tmp_path / 'out', '--dataset', 'ntu60',
               '--benchmark', 'xsub', '--no-progress', cwd=tmp_path, needles=['val_data.npy', 'NaN'])


def test_early_dynamics_interrupted_leaves_no_partial_file(tmp_path, monkeypatch):
    from conftest import write_config
    from tools import early_dynamics
    cfg = write_config(tmp_path)
    calls = []

    def step_record(*args):
        calls.append(1)
        if len(calls) > 1:
            raise KeyboardInterrupt
        return real(*args)
    real = early_dynamics.step_record
    monkeypatch.setattr(early_dynamics, 'step_record', step_record)
    out = tmp_path / 'dyn' / 'seed1.jsonl'
    rc, err = run('early_dynamics', ['--config', cfg, '--epochs', '1', '--out', str(out)], str(tmp_path))
    assert rc == EXIT_INTERRUPTED and len(calls) == 2, (rc, err[-2000:])
    one_line(err, 'interrupted')
    assert not out.exists() and not [p for p in snapshot(tmp_path) if '.tmp' in p]


# ---------------------------------------------------------------- 6. computed results are checked

def test_knn_evaluation_of_weights_with_a_negative_variance_is_one_line_naming_them(tmp_path):
    import torch
    from test_bad_inputs import encoder_state
    state = encoder_state()
    key = next(k for k in state if k.endswith('running_var'))
    state[key] = -torch.ones_like(state[key])
    weights = str(tmp_path / 'negative_variance.pt')
    torch.save(state, weights)
    cfg, _, _ = eval_files(tmp_path)
    err = run_main('knn_evaluation', '--config', cfg, '--weights', weights, '--knn_k', '3')
    one_line(err, weights, 'NaN/Inf')
    assert not os.path.exists(tmp_path / 'run' / 'metrics.jsonl')


def test_a_resume_past_the_schedule_is_refused_and_changes_nothing(finished, tmp_path):
    cfg, work_dir = resumed_copy(finished, tmp_path)
    before = snapshot(work_dir)
    err = run_main('pretrain_skeletonclr', '--config', cfg, '--work_dir', work_dir, '--resume', 'true',
                   '--num_epoch', '1')
    one_line(err, 'latest.pt', 'epoch 2, past num_epoch 1')
    assert snapshot(work_dir) == before


def test_a_24_joint_skeleton_file_is_refused(tmp_path):
    from test_bad_inputs import skeleton_text, write_skeletons
    raw = write_skeletons(tmp_path / 'raw', {'S001C001P001R001A001': skeleton_text(3, joints=24)})
    tool_error('ntu_gendata', '--data-path', raw, '--out-folder', tmp_path / 'out', '--ignored-sample-path',
               '--no-progress', cwd=tmp_path, needles=['S001C001P001R001A001.skeleton', '24 joints'])
