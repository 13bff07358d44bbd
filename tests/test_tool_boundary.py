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

from conftest import ROOT, one_line
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


def snapshot(folder):
    """{relative path: bytes} of every file under ``folder``."""
    out = {}
    for root, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            with open(path, 'rb') as f:
                out[os.path.relpath(path, folder)] = f.read()
    return out


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


def argv_for(prefix, parser, values, skip=()):
    """The command line: every input option (file / folder) from ``values``, the other required
    options and positionals from their type's example; ``values`` may give any option by dest."""
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
        tried += 1
        before = snapshot(tmp_path)
        with guard(60):
            rc, err = run(tool, argv_for(prefix, parser, values), values['work'])
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
