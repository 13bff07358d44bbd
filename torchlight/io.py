"""The small IO layer of the torchlight family: logging, config dumps, import strings, argparse
helpers and weight loading/saving."""
import argparse
import difflib
import errno
import importlib
import json
import os
import pickle
import re
import shutil
import sys
import time
import warnings
from collections import OrderedDict

import torch
import yaml


from torchlight.boundary import UserError, quote, reading, run_tool  # noqa: F401  (the boundary; re-exported)
from torchlight.readers import (RestrictedUnpickler, SafeYamlLoader, check_input, load_yaml, parse_yaml,  # noqa: F401
                                read_pickle, safe_pickle_load, yaml_error_message)


def import_class(name):
    """'net.st_gcn.Model' -> the class."""
    if not isinstance(name, str) or '.' not in name:
        raise UserError(f"expected an import string like 'net.st_gcn.Model', got {name!r}")
    module_name, _, attr = name.rpartition('.')
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        raise UserError(f"cannot import '{name}': module '{module_name}' not found ({e})") from e
    if not hasattr(module, attr):
        raise UserError(f"cannot import '{name}': module '{module_name}' has no '{attr}'")
    return getattr(module, attr)


def str2bool(v):
    if isinstance(v, bool):
        return v
    if not isinstance(v, str):
        raise argparse.ArgumentTypeError(f'boolean value expected, got {v!r}')
    if v.lower() in ('yes', 'true', 't', 'y', '1'):
        return True
    if v.lower() in ('no', 'false', 'f', 'n', '0'):
        return False
    raise argparse.ArgumentTypeError(f'boolean value expected, got {v!r}')


def parse_dict_string(text):
    """'a=1,b.c=x,d=[1,2]' -> {'a': 1, 'b': {'c': 'x'}, 'd': [1, 2]} (values parsed as YAML).
    A full YAML/Python-style mapping ('{a: 1}' or "dict(a=1)") is accepted too."""
    text = text.strip()
    if text.startswith('{'):
        try:
            value = parse_yaml(text, f'the mapping {quote(text)}')
        except UserError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
        if not isinstance(value, dict):
            raise argparse.ArgumentTypeError(f'expected a mapping, got {quote(text)}')
        return value
    if text.startswith('dict(') and text.endswith(')'):
        text = text[5:-1]
    result = {}
    for item in _split_top_level(text):
        if not item.strip():
            continue
        if '=' not in item:
            raise argparse.ArgumentTypeError(f"expected key=value, got {quote(item.strip())} (e.g. hidden_channels=32)")
        key, _, raw = item.partition('=')
        key = key.strip()
        if not key or any(not part for part in key.split('.')):
            raise argparse.ArgumentTypeError(f"expected key=value with a key name, got {quote(item.strip())}")
        try:
            value = parse_yaml(raw, f"the value of '{key}' ({quote(raw.strip())})") if raw.strip() else None
        except UserError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
        target = result
        parts = key.split('.')
        for i, part in enumerate(parts[:-1]):
            target = target.setdefault(part, {})
            if not isinstance(target, dict):
                raise argparse.ArgumentTypeError(f"'{'.'.join(parts[:i + 1])}' is given both a value and "
                                                 f"sub-keys in {text!r}")
        target[parts[-1]] = value
    return result


def _split_top_level(text):
    """Split on commas that are not inside brackets or quotes."""
    items, depth, quote, start = [], 0, None, 0
    for i, ch in enumerate(text):
        if quote:
            if ch == quote:
                quote = None
        elif ch in '\'"':
            quote = ch
        elif ch in '[{(':
            depth += 1
        elif ch in ']})':
            depth -= 1
        elif ch == ',' and depth == 0:
            items.append(text[start:i])
            start = i + 1
    items.append(text[start:])
    return items


def deep_update(base, update):
    out = dict(base)
    for k, v in update.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_update(out[k], v)
        else:
            out[k] = v
    return out


class DictAction(argparse.Action):
    """``--model_args "hidden_channels=32,graph_args.layout=nw-ucla"`` merges into the dict from YAML."""
    checked = True             # its values are read by ``parse_dict_string`` (the bounded YAML reader)

    def __call__(self, parser, namespace, values, option_string=None):
        try:
            update = parse_dict_string(values)
        except argparse.ArgumentTypeError as e:          # argparse turns this into parser.error: one line
            raise argparse.ArgumentError(self, f'{e}') from None
        current = getattr(namespace, self.dest) or {}
        setattr(namespace, self.dest, deep_update(current, update))


def load_yaml_file(path, what='config file'):
    """Parse a YAML file (``torchlight.readers.load_yaml``: duplicate keys refused, aliases bounded) or
    raise a one-line UserError naming the file, line and column."""
    return load_yaml(path, what)


def check_key_names(value, where, prefix=''):
    """Every key of every mapping in a config is a name (a string): one line naming the key's place."""
    stack = [(value, prefix)]
    while stack:
        v, place = stack.pop()
        items = v.items() if isinstance(v, dict) else enumerate(v) if isinstance(v, list) else ()
        for k, x in items:
            if isinstance(v, dict) and not isinstance(k, str):
                raise UserError(f"{where}: key {quote(k)}{' under ' + repr(place) if place else ''} is not a name; "
                                'write keys as names (e.g. batch_size)')
            stack.append((x, f'{place}.{k}' if isinstance(v, dict) and place else
                          (str(k) if isinstance(v, dict) else f'{place}[{k}]')))


def load_config_file(path, what='config file', _chain=()):
    """A config YAML with its ``base:`` files merged under it: ``base`` is a path or a list of paths,
    relative to the file; the bases are merged in order (later ones win), each composed the same way,
    then the file's own keys over them (``deep_update``: mappings merge, everything else replaces).
    A file without ``base`` is read as it is (the reference family's flat YAMLs). A missing base or a
    cycle is a one-line UserError naming the file."""
    if not os.path.isfile(path):
        raise UserError(f"{what} '{path}' does not exist")
    real = os.path.realpath(path)
    if real in _chain:
        cycle = ' -> '.join(list(_chain[_chain.index(real):]) + [real])
        raise UserError(f"config file '{path}' includes itself through its base keys ({cycle})")
    cfg = load_yaml_file(path, what)
    if cfg is None:
        cfg = {}
    if not isinstance(cfg, dict):
        raise UserError(f"{what} '{path}' must be a mapping of keys to values")
    check_key_names(cfg, f"{what} '{path}'")
    bases = cfg.pop('base', None)
    if bases is None:
        return cfg
    bases = [bases] if isinstance(bases, str) else bases
    if not isinstance(bases, list) or not all(isinstance(b, str) and b for b in bases):
        raise UserError(f"key 'base' in {path} must be a path or a list of paths (relative to the file), "
                        f"got {bases!r}")
    merged = {}
    for base in bases:
        base_path = os.path.normpath(os.path.join(os.path.dirname(path), base))
        if not os.path.isfile(base_path):
            raise UserError(f"base '{base}' of config file '{path}' does not exist ({base_path})")
        merged = deep_update(merged, load_config_file(base_path, 'base config file', _chain + (real,)))
    return deep_update(merged, cfg)


def closest_keys(key, valid, n=3):
    matches = difflib.get_close_matches(key, list(valid), n=n, cutoff=0.5)
    return ', '.join(matches) if matches else 'none'


# temporaries of this code's writes (atomic_torch_save, save_pkl, save_arg): <file>.tmp<pid>
TMP_PATTERN = re.compile(r'^(latest(\.prev)?\.pt|.+_model\.pt|test_result\.pkl|config\.yaml)\.tmp\d*$')


def _remove_quietly(path):
    try:
        os.remove(path)
    except OSError:
        pass


def _fsync_dir(folder):
    try:
        fd = os.open(folder or '.', os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_error(path, e, kept=None):
    """The one-line UserError for a failed write of ``path`` (disk full, permissions, ...)."""
    reason = e.strerror or str(e) if isinstance(e, OSError) else f'{type(e).__name__}: {e}'
    hint = ' (disk full: free space and resume with --resume true)' if getattr(e, 'errno', None) in (
        errno.ENOSPC, errno.EDQUOT) else ''
    keep = f"; the last good file '{kept}' is kept" if kept and os.path.exists(kept) else ''
    return UserError(f"cannot write '{path}': {reason}{hint}{keep}")


def atomic_torch_save(obj, path, keep_previous=None):
    """Write to a temporary file in the same folder, fsync, then rename over ``path``: ``path`` is at
    every moment either the old or the new complete file. With ``keep_previous``, the old ``path`` is
    first linked (or copied) to that name, after the new file is complete. A failed write (disk full)
    removes its temporary files, leaves ``path`` as it was and raises a one-line UserError."""
    tmp = f'{path}.tmp{os.getpid()}'
    prev_tmp = f'{keep_previous}.tmp{os.getpid()}' if keep_previous else None
    try:
        with open(tmp, 'wb') as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        if keep_previous and os.path.exists(path):
            _remove_quietly(prev_tmp)
            try:
                os.link(path, prev_tmp)                # no copy: the old file keeps its blocks
            except OSError:
                shutil.copyfile(path, prev_tmp)        # file systems without hard links
            os.replace(prev_tmp, keep_previous)
        os.replace(tmp, path)
        _fsync_dir(os.path.dirname(path))
    except (OSError, RuntimeError) as e:               # torch.save reports a full disk as RuntimeError
        _remove_quietly(tmp)
        if prev_tmp:
            _remove_quietly(prev_tmp)
        raise write_error(path, e, kept=path) from e


def atomic_write(path, write, mode='wb'):
    """``write(f)`` into a temporary file beside ``path`` (fsync), then rename it over ``path``: ``path``
    is either the old or the new complete file; on any failure the temporary file is removed and
    ``path`` is left as it was (a failed OS write is a one-line UserError naming the file)."""
    folder = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(folder, f'{os.path.basename(path)}.tmp{os.getpid()}')
    try:
        if os.path.isdir(path):
            raise IsADirectoryError(errno.EISDIR, 'is a folder; give a file name', path)
        os.makedirs(folder, exist_ok=True)
        with open(tmp, mode, **({} if 'b' in mode else {'encoding': 'utf-8'})) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        _remove_quietly(tmp)
        if isinstance(e, OSError):
            raise write_error(path, e, kept=path) from e
        raise


class StagedFiles:
    """Outputs of one tool run, written under temporary names in their destination folders and moved
    into place together at the end: ``with StagedFiles() as staged: write(staged.path(final))``.  On
    success every file is renamed over its final name; on any failure the temporaries are removed and
    the earlier outputs stay as they were."""

    def __init__(self):
        self.staged = []

    def path(self, final):
        """The temporary path to write ``final`` to: same folder (so the rename is atomic) and same
        extension (``np.save`` and ``savefig`` go by it), ``<name>.tmp<pid><ext>``."""
        folder = os.path.dirname(os.path.abspath(final))
        os.makedirs(folder, exist_ok=True)
        if os.path.isdir(final):
            raise IsADirectoryError(errno.EISDIR, 'is a folder; remove it or choose another output folder', final)
        root, ext = os.path.splitext(os.path.basename(final))
        tmp = os.path.join(folder, f'{root}.tmp{os.getpid()}{ext}')
        self.staged.append((tmp, final))
        return tmp

    def commit(self):
        """Rename every temporary over its final name (one never written, an optional output, is skipped)."""
        for tmp, final in self.staged:
            if os.path.exists(tmp):
                os.replace(tmp, final)
        self.staged = []

    def abort(self):
        for tmp, _ in self.staged:
            _remove_quietly(tmp)
        self.staged = []

    def __enter__(self):
        return self

    def __exit__(self, kind, value, tb):
        if kind is None:
            try:
                self.commit()
            except BaseException:
                self.abort()
                raise
        else:
            self.abort()
        return False


def remove_stale_temporaries(folder):
    """Delete the ``*.tmp<pid>`` files of writes that a kill interrupted (the caller holds the lock)."""
    removed = []
    for name in sorted(os.listdir(folder)):
        full = os.path.join(folder, name)
        if TMP_PATTERN.match(name) and os.path.isfile(full):
            _remove_quietly(full)
            removed.append(name)
    return removed


def _numpy_reconstruct_globals():
    """The numpy globals of a pickled ndarray (RNG states in resume files of earlier versions)."""
    import numpy as np
    names = []
    for module in ('numpy._core.multiarray', 'numpy.core.multiarray'):
        try:
            names.append(getattr(importlib.import_module(module), '_reconstruct'))
        except (ImportError, AttributeError):
            pass
    dtypes = [type(np.dtype(t)) for t in ('uint32', 'int64', 'float64')]
    return names + [np.ndarray, np.dtype] + dtypes


def load_resume_file(path):
    """Read a ``latest.pt`` with ``torch.load(weights_only=True)``: tensors and plain Python data only
    (plus the numpy array globals of older resume files), so a crafted file cannot run code."""
    with torch.serialization.safe_globals(_numpy_reconstruct_globals()):
        return quiet_torch_load(path)


def quiet_torch_load(path):
    """``torch.load(weights_only=True)`` on the CPU without torch's warnings about the file's pickle
    protocol (a bad file is one error line, not a warning and an error)."""
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        return torch.load(path, map_location='cpu', weights_only=True)


def to_cpu_state_dict(state_dict):
    """Plain state dict on CPU with any DataParallel/DDP ``module.`` prefix stripped."""
    return OrderedDict((k[7:] if k.startswith('module.') else k, v.detach().cpu())
                       for k, v in state_dict.items())


def load_state_dict_file(path):
    """Read a plain state dict (safe ``weights_only`` loading); also accepts a ``latest.pt`` resume
    file (its 'model' entry)."""
    check_input(path, 'weights file')
    if os.path.getsize(path) == 0:
        raise UserError(f"weights file '{path}' is empty (0 bytes): an interrupted copy? give a complete file")
    try:
        obj = quiet_torch_load(path)
    except Exception as e:  # truncated file, not a torch file, pickled objects
        first = (str(e).strip().splitlines() or [''])[0][:200]
        if isinstance(e, pickle.UnpicklingError):
            first = 'it holds objects other than tensors and plain data, which are not loaded (no code from a file runs)'
        raise UserError(f"cannot read weights file '{path}' as a state dict ({type(e).__name__}"
                        f"{': ' + first if first else ''}); it may be truncated or not a torch file") from e
    if isinstance(obj, dict) and 'model' in obj and isinstance(obj['model'], dict):
        obj = obj['model']
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise UserError(f"weights file '{path}' is not a state dict of tensors (got {type(obj).__name__})")
    for key, value in obj.items():
        check_finite(value, f"weights file '{path}', key '{key}'")
    return OrderedDict((k[7:] if k.startswith('module.') else k, v) for k, v in obj.items())


def first_non_finite(values):
    """The index (a tuple) of the first NaN/Inf in an array or tensor, or None when all are finite."""
    if isinstance(values, torch.Tensor):
        if not values.is_floating_point() and not values.is_complex():
            return None
        bad = ~torch.isfinite(values)
        if not bool(bad.any()):
            return None
        return tuple(int(i) for i in bad.nonzero()[0])
    import numpy as np
    values = np.asarray(values)
    if values.dtype.kind not in 'fc':
        return None
    bad = ~np.isfinite(values)
    if not bad.any():
        return None
    return tuple(int(i) for i in np.unravel_index(int(np.argmax(bad)), values.shape))


def check_finite(values, where, what_to_do='replace or drop it'):
    """Refuse NaN/Inf in ``values`` with one line naming ``where`` and the first bad index."""
    index = first_non_finite(values)
    if index is not None:
        value = values[index] if index else values
        raise UserError(f"{where}: non-finite value {float(value)} at index {list(index)}; {what_to_do}")


class IO:
    """Timestamped logging to stdout and ``work_dir/log.txt``, config dumps, pickles, weights."""

    def __init__(self, work_dir, save_log=True, print_log=True, defer=False):
        self.work_dir = work_dir
        self.save_log = save_log
        self.print_to_screen = print_log
        self.pending = [] if defer else None     # lines held back until ``open_log`` (nothing on disk yet)
        if save_log:
            os.makedirs(work_dir, exist_ok=True)

    @property
    def log_path(self):
        return os.path.join(self.work_dir, 'log.txt')

    def _append(self, lines):
        try:
            with open(self.log_path, 'a') as f:
                for line in lines:
                    print(line, file=f)
        except OSError as e:
            raise UserError(f"cannot write the log file '{self.log_path}': {e.strerror or e}") from e

    def open_log(self):
        """Write the held-back lines to log.txt; from now on every line goes there at once."""
        pending, self.pending = self.pending, None
        if self.save_log:
            self._append(pending or [])

    def print_log(self, text, print_time=True):
        if print_time:
            text = time.strftime('[%m.%d.%y|%X] ', time.localtime()) + text
        if self.print_to_screen:
            print(text, flush=True)
        if self.pending is not None:
            self.pending.append(text)
        elif self.save_log:
            self._append([text])

    def save_arg(self, arg, filename='config.yaml', notes=()):
        """``arg`` as YAML, after comment lines with the command line and ``notes``."""
        arg_dict = vars(arg) if not isinstance(arg, dict) else arg

        def write(f):
            f.write(f"# command line: {' '.join(sys.argv)}\n")
            for note in notes:
                f.write(f'# {note}\n')
            f.write('\n')
            yaml.safe_dump(_plain(arg_dict), f, default_flow_style=False, sort_keys=False)
        atomic_write(os.path.join(self.work_dir, filename), write, mode='w')

    def save_json(self, result, filename):
        """``result`` (plain data) as ``work_dir/filename``, written whole or not at all."""
        path = os.path.join(self.work_dir, filename)
        tmp = f'{path}.tmp{os.getpid()}'
        try:
            with open(tmp, 'w', encoding='utf-8') as f:
                json.dump(result, f, indent=1)
            os.replace(tmp, path)
        except OSError as e:
            _remove_quietly(tmp)
            raise write_error(path, e, kept=path) from e

    def save_pkl(self, result, filename):
        atomic_write(os.path.join(self.work_dir, filename), lambda f: pickle.dump(result, f))

    def save_model(self, model, name):
        atomic_torch_save(to_cpu_state_dict(model.state_dict()), os.path.join(self.work_dir, name))
        self.print_log(f'The model has been saved as {os.path.join(self.work_dir, name)}.')

    def load_weights(self, model, weights_path, ignore_weights=None):
        """Load a state dict into ``model``, dropping keys that start with any ``ignore_weights``
        prefix; report the missing and unexpected keys, and refuse shape mismatches."""
        weights = load_state_dict_file(weights_path)
        ignore_weights = ignore_weights or []
        if isinstance(ignore_weights, str):
            ignore_weights = [ignore_weights]
        dropped = [k for k in weights if any(k.startswith(p) for p in ignore_weights)]
        for k in dropped:
            weights.pop(k)
        self.print_log(f'Load weights from {weights_path}'
                       + (f' (ignored {len(dropped)} keys with prefixes {ignore_weights})' if dropped else ''))
        own = model.state_dict()
        mismatched = [f'{k}: file {tuple(v.shape)} vs model {tuple(own[k].shape)}'
                      for k, v in weights.items() if k in own and own[k].shape != v.shape]
        if mismatched:
            raise UserError(f"weights '{weights_path}' do not fit the model: shape mismatch in "
                            f"{len(mismatched)} keys, e.g. {'; '.join(mismatched[:3])}")
        result = model.load_state_dict(weights, strict=False)
        missing, unexpected = list(result.missing_keys), list(result.unexpected_keys)
        if missing:
            self.print_log(f'Missing keys ({len(missing)}, left at their initial values): '
                           + ', '.join(missing[:20]) + (' ...' if len(missing) > 20 else ''))
        if unexpected:
            self.print_log(f'Unexpected keys ({len(unexpected)}, not used): '
                           + ', '.join(unexpected[:20]) + (' ...' if len(unexpected) > 20 else ''))
        loaded = len(weights) - len(unexpected)
        if loaded == 0:
            raise UserError(f"no parameter of '{weights_path}' matches the model {type(model).__name__}: is it "
                            f"a checkpoint of another method? (unexpected file keys: {sorted(weights)[:3]}; "
                            f"missing model keys: {missing[:3]})")
        return missing, unexpected


def _plain(obj):
    """Make argparse values YAML-safe (tuples -> lists)."""
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj
