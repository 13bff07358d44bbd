"""The error boundary of ``main.py`` and every tool: an expected failure (bad user input) ends as one
line ``error: <file or key>: <what is wrong and what to do>`` and exit status 2; anything else (a bug)
keeps its traceback.

Expected: ``UserError`` (the project's own checks), ``ValueError`` (``UnicodeError`` and JSON errors
included), ``OSError`` (missing file, a folder where a file is expected, permissions, full disk),
``KeyError`` / ``IndexError`` / ``EOFError`` / pickle and zip errors (a malformed or truncated file),
``MemoryError`` and ``OverflowError`` (a size or number in the input beyond what the machine holds).
``reading(path)`` names the file for failures inside the block; a failure that reaches the boundary
without a name gets the place in the code that raised it.  The line is bounded (``MAX_LINE``
characters; values are quoted with ``quote``).  ``early(__name__)``, called by every entry point before
its heavy imports, makes a Ctrl-C during start-up one line (exit 130) too.  ``TORCHLIGHT_TRACEBACK=1``
re-raises instead (to debug).

This module imports nothing heavy (no numpy, torch or yaml): the entry points import it first."""
import argparse
import contextlib
import os
import pickle
import re
import reprlib
import signal
import sys
import traceback
import zipfile

EXIT_BAD_INPUT = 2


class UserError(ValueError):
    """A problem with the user's input (config, data, paths): reported in one line, no traceback."""


EXPECTED_ERRORS = (ValueError, OSError, KeyError, IndexError, EOFError, pickle.UnpicklingError,
                   zipfile.BadZipFile, MemoryError, OverflowError)
EXIT_INTERRUPTED = 128 + signal.SIGINT
MAX_LINE = 1000              # characters of an error line: the head and the tail of a longer one are kept

OS_HINTS = {
    'FileNotFoundError': 'no such file or folder; check the path',
    'IsADirectoryError': 'is a folder; give a file',
    'NotADirectoryError': 'a part of the path is a file, not a folder',
    'PermissionError': 'permission denied; choose a path you can read/write',
    'FileExistsError': 'already exists',
}


def _squash(text, limit=400):
    """One line; a library's message is cut at ``limit`` characters (None: the project's own, whole)."""
    text = ' '.join(str(text).split())
    return text if limit is None or len(text) <= limit else text[:limit - 3] + '...'


def bounded(text, limit=MAX_LINE):
    """``text`` if it has at most ``limit`` characters, else its head and tail around a count of the cut."""
    if len(text) <= limit:
        return text
    tail = limit // 4
    return f'{text[:limit - tail - 40]} ...[{len(text) - limit + 40} characters cut]... {text[-tail:]}'


_REPR = reprlib.Repr()
_REPR.maxstring, _REPR.maxother, _REPR.maxlist, _REPR.maxtuple, _REPR.maxdict = 60, 60, 6, 6, 6
_REPR.maxset = _REPR.maxfrozenset = _REPR.maxdeque = _REPR.maxarray = 6
_REPR.maxlevel = 3


def quote(value, limit=80):
    """``repr(value)`` for an error message, bounded: at most ``limit`` characters however long the
    string or however large (or self-referencing) the structure."""
    try:
        text = repr(value) if isinstance(value, (str, bytes)) and len(value) <= limit else _REPR.repr(value)
    except Exception:
        text = f'<{type(value).__name__}>'
    if len(text) > limit:
        size = f' ({len(value)} characters)' if isinstance(value, (str, bytes)) else ''
        text = text[:limit - 3] + '...' + size
    return text


PROJECT_PACKAGES = ('feeder', 'net', 'processor', 'torchlight', 'tools', '__main__', 'main')


def own_error(e):
    """Whether ``e`` is one of the project's own error classes (they name the file or key themselves)."""
    return isinstance(e, UserError) or type(e).__module__.split('.')[0] in PROJECT_PACKAGES


def describe(e):
    """One line saying what ``e`` is about (no location); never raises."""
    try:
        if own_error(e):
            return _squash(e, None) or type(e).__name__
        if isinstance(e, UnicodeDecodeError):
            return (f'not {e.encoding} text (byte 0x{e.object[e.start]:02x} at position {e.start}); '
                    'save it as UTF-8')
        if isinstance(e, OSError):
            name = type(e).__name__
            what = OS_HINTS.get(name) or _squash(e.strerror or e) or name
            names = [n for n in (e.filename, e.filename2) if n]
            return f"{' -> '.join(map(str, names))}: {what}" if names else what
        if isinstance(e, KeyError):
            return f'missing key {e.args[0]!r}' if e.args else 'missing key'
        if isinstance(e, (EOFError, pickle.UnpicklingError)):
            return f'truncated or not a pickle file ({type(e).__name__}: {_squash(e) or "ran out of input"})'
        if isinstance(e, zipfile.BadZipFile):
            return f'not a valid zip/.npz archive ({_squash(e)})'
        if isinstance(e, MemoryError):
            return ('out of memory: a size given or declared in the input is larger than this machine holds'
                    + (f' ({_squash(e)})' if str(e) else ''))
        if isinstance(e, OverflowError):
            return f'a number is too large or not finite ({_squash(e)})'
        if isinstance(e, RecursionError):
            return 'nested too deeply'
        text = _squash(e)
        return f'{type(e).__name__}: {text}' if text else type(e).__name__
    except Exception:                                   # the handler itself never fails
        return type(e).__name__


def _raised_at(e):
    """'file.py:line' of the innermost frame of the project (not a library) that ``e`` passed."""
    try:
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        where = None
        for frame in traceback.extract_tb(e.__traceback__):
            path = os.path.abspath(frame.filename)
            if path.startswith(root + os.sep) and f'{os.sep}site-packages{os.sep}' not in path:
                where = f'{os.path.relpath(path, root)}:{frame.lineno}'
        return where
    except Exception:
        return None


def error_line(e):
    """The one line ``error: ...`` for an expected failure ``e``; never raises."""
    try:
        text = describe(e)
        if not own_error(e):
            where = _raised_at(e)
            named = isinstance(e, OSError) and (e.filename or e.filename2)
            if where and not named:
                text += f' (raised at {where})'
        return bounded(f'error: {text}')
    except Exception:
        return f'error: {type(e).__name__}'


def report(e, stream=None):
    """Print ``error_line(e)`` to stderr (a closed stream is ignored); returns exit status 2."""
    try:
        print(error_line(e), file=stream or sys.stderr, flush=True)
    except Exception:
        pass
    return EXIT_BAD_INPUT


@contextlib.contextmanager
def reading(path, what='file', hint=''):
    """Failures while reading or interpreting the user's ``path`` become one ``UserError`` naming it:
    ``<what> '<path>': <what is wrong><hint>``.  Inside the block a ``TypeError`` / ``AttributeError``
    also means a malformed file (a value of the wrong kind)."""
    try:
        yield
    except UserError:
        raise
    except (*EXPECTED_ERRORS, TypeError, AttributeError, RecursionError) as e:
        detail = describe(e)
        if isinstance(e, OSError) and e.filename and str(e.filename) == str(path):
            detail = detail.split(': ', 1)[-1]           # the path is named once
        raise UserError(f"{what} '{path}': {detail}{hint}") from e


def debugging():
    return os.environ.get('TORCHLIGHT_TRACEBACK', '') not in ('', '0')


_LONG_QUOTED = re.compile(r"'([^']{500,})'")           # a value argparse quotes whole (paths are shorter)


@contextlib.contextmanager
def one_line_argparse_errors():
    """argparse's usage + error (three lines) as one ``UserError`` line while a tool parses its options."""
    original = argparse.ArgumentParser.error

    def error(self, message):
        message = _LONG_QUOTED.sub(lambda m: quote(m.group(1)), message)      # argparse quotes whole values
        raise UserError(f"command line: {message} (see {self.prog} --help)")
    argparse.ArgumentParser.error = error
    try:
        yield
    finally:
        argparse.ArgumentParser.error = original


def _interrupted_while_starting(signum, frame):
    try:
        print('error: interrupted (SIGINT) while starting; nothing was written', file=sys.stderr, flush=True)
    finally:
        os._exit(EXIT_INTERRUPTED)


def early(name):
    """The first line of an entry point (``early(__name__)``), before its heavy imports: when it runs as
    the program, a Ctrl-C from here until ``run_tool`` (or ``main.py``'s ``main``) takes over ends as one
    line with exit status 130 (nothing has been written yet)."""
    if name == '__main__':
        try:
            signal.signal(signal.SIGINT, _interrupted_while_starting)
        except ValueError:                              # not the main thread
            pass


def take_over_interrupts():
    """From now on a Ctrl-C raises ``KeyboardInterrupt`` (the boundary reports it; staged and atomic
    writes remove their temporaries on the way out)."""
    try:
        if signal.getsignal(signal.SIGINT) is _interrupted_while_starting:
            signal.signal(signal.SIGINT, signal.default_int_handler)
    except ValueError:
        pass


def run_guarded(body, cleanup=None, interrupted='interrupted (SIGINT); earlier outputs are kept as they were'):
    """``body()`` inside the boundary -> the exit status: its own (an int, else 0), 2 after bad input
    (one line), 130 after a Ctrl-C (one line); ``cleanup()`` runs after either failure (it may not
    raise).  A bug keeps its traceback."""
    take_over_interrupts()
    try:
        with one_line_argparse_errors():
            status = body()
    except EXPECTED_ERRORS as e:
        if debugging():
            raise
        if cleanup is not None:
            cleanup()
        return report(e)
    except KeyboardInterrupt:
        if cleanup is not None:
            cleanup()
        try:
            print(f'error: {interrupted}', file=sys.stderr, flush=True)
        except Exception:
            pass
        return EXIT_INTERRUPTED
    return status if isinstance(status, int) and not isinstance(status, bool) else 0


def run_tool(main):
    """Run a command-line tool's ``main`` inside the boundary (``run_guarded``) and exit with its status."""
    status = run_guarded(main)
    if status:
        raise SystemExit(status)
