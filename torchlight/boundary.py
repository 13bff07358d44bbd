"""The error boundary of ``main.py`` and every tool: an expected failure (bad user input) ends as one
line ``error: <file or key>: <what is wrong and what to do>`` and exit status 2; anything else (a bug)
keeps its traceback.

Expected: ``UserError`` (the project's own checks), ``ValueError`` (``UnicodeError`` and JSON errors
included), ``OSError`` (missing file, a folder where a file is expected, permissions, full disk),
``KeyError`` / ``IndexError`` / ``EOFError`` / pickle and zip errors (a malformed or truncated file).
``reading(path)`` names the file for failures inside the block; a failure that reaches the boundary
without a name gets the place in the code that raised it.  ``TORCHLIGHT_TRACEBACK=1`` re-raises
instead (to debug)."""
import argparse
import contextlib
import os
import pickle
import sys
import traceback
import zipfile

EXIT_BAD_INPUT = 2


class UserError(ValueError):
    """A problem with the user's input (config, data, paths): reported in one line, no traceback."""


EXPECTED_ERRORS = (ValueError, OSError, KeyError, IndexError, EOFError, pickle.UnpicklingError,
                   zipfile.BadZipFile)

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
        return f'error: {text}'
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
    except (*EXPECTED_ERRORS, TypeError, AttributeError) as e:
        detail = describe(e)
        if isinstance(e, OSError) and e.filename and str(e.filename) == str(path):
            detail = detail.split(': ', 1)[-1]           # the path is named once
        raise UserError(f"{what} '{path}': {detail}{hint}") from e


def debugging():
    return os.environ.get('TORCHLIGHT_TRACEBACK', '') not in ('', '0')


@contextlib.contextmanager
def one_line_argparse_errors():
    """argparse's usage + error (three lines) as one ``UserError`` line while a tool parses its options."""
    original = argparse.ArgumentParser.error

    def error(self, message):
        raise UserError(f"command line: {message} (see {self.prog} --help)")
    argparse.ArgumentParser.error = error
    try:
        yield
    finally:
        argparse.ArgumentParser.error = original


def run_tool(main):
    """Run a command-line tool's ``main`` inside the boundary: bad input exits 2 with one line."""
    try:
        with one_line_argparse_errors():
            status = main()
    except EXPECTED_ERRORS as e:
        if debugging():
            raise
        raise SystemExit(report(e)) from None
    except KeyboardInterrupt:
        print('error: interrupted (SIGINT)', file=sys.stderr)
        raise SystemExit(130) from None
    if isinstance(status, int) and status:
        raise SystemExit(status)
