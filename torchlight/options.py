"""The one checker of the tools' command-line options: every option of every tool is declared with one of
these types (or with ``choices``, or as a flag), so its range is stated once, next to the option, and a
value outside it is refused while the command line is parsed, before anything is read or written:
``error: command line: argument --batch-size: expected an integer >= 1, got '0'``.  Values are quoted
bounded in length (``torchlight.boundary.quote``).  ``tests/test_tool_boundary.py`` refuses an option
declared without one of them.

Each type is a callable for ``argparse``'s ``type=`` with ``kind`` (what it is: 'number', 'text',
'input', 'output', 'device') and ``rule`` (the sentence of the error), and for numbers ``bad``: values
outside the rule (the generated test throws them)."""
import argparse
import math
import os

from torchlight.boundary import quote

MAX_TEXT = 4096        # characters of a free-text option (a name, a KEY=VALUE, a command-line string)


class Checked:
    """An ``argparse`` type with its rule stated once (module docstring)."""
    kind = 'text'
    bad = ()

    def __init__(self, rule, convert, example, bad=(), kind=None):
        self.rule, self.convert, self.example, self.bad = rule, convert, example, tuple(bad)
        self.kind = kind or self.kind
        self.__name__ = rule                  # what argparse says in its own messages

    def __call__(self, text):
        try:
            value = self.convert(text)
        except (ValueError, TypeError, OverflowError) as e:
            detail = ' '.join(str(e).split())[:200]
            limit = 500 if self.kind.startswith(('input', 'output')) else 80      # a path is named whole
            raise argparse.ArgumentTypeError(f'expected {self.rule}, got {quote(text, limit)}'
                                             + (f' ({detail})' if detail else '')) from None
        return value

    def __repr__(self):
        return f'<option type: {self.rule}>'


def _fail(detail=''):
    raise ValueError(detail)


def integer(low=None, high=None):
    """An integer in ``[low, high]`` (either bound optional)."""
    rule = ('an integer' + (f' >= {low}' if low is not None and high is None else '')
            + (f' <= {high}' if high is not None and low is None else '')
            + (f' in {low}..{high}' if low is not None and high is not None else ''))

    def convert(text):
        text = str(text).strip()
        if len(text) > 40 or not text.lstrip('+-').isdigit():
            _fail()
        value = int(text)
        if (low is not None and value < low) or (high is not None and value > high):
            _fail()
        return value
    bad = ['1.5', 'x' * 5000, 'nan']
    if low is not None:
        bad.append(str(low - 1))
    if high is not None:
        bad.append(str(high + 1))
    return Checked(rule, convert, str(low if low is not None else 0), bad, kind='number')


def number(low=None, high=None, low_open=False, high_open=False):
    """A finite float in the interval (bounds optional; ``*_open`` excludes the bound)."""
    left = f"{'>' if low_open else '>='} {low:g}" if low is not None else ''
    right = f"{'<' if high_open else '<='} {high:g}" if high is not None else ''
    rule = 'a finite number' + (f' {left}' if left else '') + (' and' if left and right else '') + \
        (f' {right}' if right else '')

    def convert(text):
        text = str(text).strip()
        if len(text) > 60:
            _fail()
        value = float(text)
        if not math.isfinite(value):
            _fail()
        if low is not None and (value < low or (low_open and value == low)):
            _fail()
        if high is not None and (value > high or (high_open and value == high)):
            _fail()
        return value
    bad = ['nan', 'inf', 'x' * 5000]
    if low is not None:
        bad.append(repr(low - 1.0) if not low_open else repr(float(low)))
    if high is not None:
        bad.append(repr(high + 1.0) if not high_open else repr(float(high)))
    example = low if low is not None and not low_open else (high if high is not None and not high_open else 0.5)
    return Checked(rule, convert, repr(float(example)), bad, kind='number')


positive_int = integer(1)
nonnegative_int = integer(0)
seed = integer(0, 2 ** 32 - 1)
finite_float = number()
positive_float = number(0, low_open=True)
nonnegative_float = number(0)
fraction = number(0, 1)                     # [0, 1]
open_fraction = number(0, 1, low_open=True, high_open=True)    # (0, 1)


def _text(text):
    text = str(text)
    if not text.strip():
        _fail('empty')
    if len(text) > MAX_TEXT:
        _fail(f'{len(text)} characters, at most {MAX_TEXT}')
    if '\x00' in text:
        _fail('a NUL character')
    return text


text = Checked('a non-empty text', _text, 'x')


def _existing(kind):
    def convert(value):
        path = _text(value)
        if not os.path.exists(path):
            _fail('no such file or folder')
        if kind == 'file' and os.path.isdir(path):
            _fail('a folder; give a file')
        if kind == 'folder' and not os.path.isdir(path):
            _fail('not a folder')
        return path
    return convert


input_file = Checked('an existing file', _existing('file'), None, kind='input')
input_folder = Checked('an existing folder', _existing('folder'), None, kind='input-folder')
input_path = Checked('an existing file or folder', _existing('any'), None, kind='input')


def input_file_or_name(names):
    """A file path, or one of ``names`` (e.g. a layout name or a layout file)."""
    names = tuple(names)

    def convert(value):
        value = _text(value)
        return value if value in names else _existing('file')(value)
    return Checked(f"one of {', '.join(names)} or an existing file", convert, None, kind='input')


def _first_existing(path):
    current = os.path.abspath(path)
    while not os.path.exists(current):
        parent = os.path.dirname(current)
        if parent == current:
            break
        current = parent
    return current


def _writable(kind):
    def convert(value):
        path = _text(value)
        if kind == 'file' and os.path.isdir(path):
            _fail('a folder; give a file name')
        if kind == 'folder' and os.path.exists(path) and not os.path.isdir(path):
            _fail('a file, not a folder')
        start = path if kind == 'folder' or os.path.exists(path) else os.path.dirname(os.path.abspath(path))
        anchor = _first_existing(start)
        if not os.path.isdir(anchor) and anchor != os.path.abspath(path):
            _fail(f"'{anchor}' is a file, not a folder")
        folder = anchor if os.path.isdir(anchor) else os.path.dirname(anchor)
        if not os.access(folder, os.W_OK | os.X_OK):
            _fail(f"'{folder}' is not writable")
        return path
    return convert


output_file = Checked('a file path that can be written', _writable('file'), None, kind='output')
output_folder = Checked('a folder that can be written', _writable('folder'), None, kind='output-folder')


def _device(value):
    value = _text(value)
    import torch                               # only when a device is given
    try:
        device = torch.device(value)
    except (RuntimeError, ValueError) as e:
        raise ValueError(' '.join(str(e).split())[:120]) from None
    if device.type not in ('cpu', 'cuda'):
        _fail(f'device type {device.type}')
    if device.type == 'cuda':
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if (device.index or 0) >= count:
            _fail(f'{count} CUDA device(s) visible')
    return value


device = Checked("a torch device ('cpu', 'cuda' or 'cuda:<index>')", _device, 'cpu', ['gpu0', 'cuda:x', 'cuda:99'],
                 kind='device')


def key_value(value):
    """``KEY=VALUE`` (a command-line override of main.py)."""
    value = _text(value)
    key, sep, _ = value.partition('=')
    if not sep or not key.strip():
        _fail()
    return value


key_value = Checked('KEY=VALUE', key_value, 'num_epoch=1', ['novalue', '=x'], kind='text')
