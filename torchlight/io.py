"""The small IO layer of the torchlight family: logging, config dumps, import strings, argparse
helpers and weight loading/saving."""
import argparse
import difflib
import importlib
import os
import pickle
import sys
import time
from collections import OrderedDict

import torch
import yaml


class UserError(ValueError):
    """A problem with the user's input (config, data, paths): reported in one line, no traceback."""


def run_tool(main):
    """Run a command-line tool's ``main``; bad input (a ValueError, UserError included) exits with a
    one-line ``error: ...`` and no traceback."""
    try:
        main()
    except ValueError as e:
        raise SystemExit(f'error: {e}')


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
        value = yaml.safe_load(text)
        if not isinstance(value, dict):
            raise argparse.ArgumentTypeError(f'expected a mapping, got {text!r}')
        return value
    if text.startswith('dict(') and text.endswith(')'):
        text = text[5:-1]
    result = {}
    for item in _split_top_level(text):
        if not item.strip():
            continue
        if '=' not in item:
            raise argparse.ArgumentTypeError(f"expected key=value in {item!r}")
        key, _, raw = item.partition('=')
        value = yaml.safe_load(raw) if raw.strip() else None
        target = result
        parts = key.strip().split('.')
        for part in parts[:-1]:
            target = target.setdefault(part, {})
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

    def __call__(self, parser, namespace, values, option_string=None):
        update = parse_dict_string(values)
        current = getattr(namespace, self.dest) or {}
        setattr(namespace, self.dest, deep_update(current, update))


def closest_keys(key, valid, n=3):
    matches = difflib.get_close_matches(key, list(valid), n=n, cutoff=0.5)
    return ', '.join(matches) if matches else 'none'


def read_pickle(path, what, made_by):
    """Unpickle ``path`` (a ``what`` file that ``made_by`` writes) or raise a one-line UserError."""
    if not os.path.isfile(path):
        raise UserError(f"{what} file '{path}' does not exist ({made_by})")
    try:
        with open(path, 'rb') as f:
            return pickle.load(f)
    except Exception as e:
        raise UserError(f"cannot unpickle {what} file '{path}': {type(e).__name__}: {e}") from e


def atomic_torch_save(obj, path):
    """Write to a temporary file in the same folder, fsync, then rename over ``path``."""
    tmp = f'{path}.tmp{os.getpid()}'
    with open(tmp, 'wb') as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def to_cpu_state_dict(state_dict):
    """Plain state dict on CPU with any DataParallel/DDP ``module.`` prefix stripped."""
    return OrderedDict((k[7:] if k.startswith('module.') else k, v.detach().cpu())
                       for k, v in state_dict.items())


def load_state_dict_file(path):
    """Read a plain state dict (safe ``weights_only`` loading); also accepts a ``latest.pt`` resume
    file (its 'model' entry)."""
    if not os.path.isfile(path):
        raise UserError(f"weights file '{path}' does not exist")
    try:
        obj = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as e:  # truncated file, not a torch file, pickled objects
        raise UserError(f"cannot read weights file '{path}' as a state dict ({type(e).__name__}: "
                        f"{str(e).splitlines()[0][:200]})") from e
    if isinstance(obj, dict) and 'model' in obj and isinstance(obj['model'], dict):
        obj = obj['model']
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise UserError(f"weights file '{path}' is not a state dict of tensors (got {type(obj).__name__})")
    return OrderedDict((k[7:] if k.startswith('module.') else k, v) for k, v in obj.items())


class IO:
    """Timestamped logging to stdout and ``work_dir/log.txt``, config dumps, pickles, weights."""

    def __init__(self, work_dir, save_log=True, print_log=True):
        self.work_dir = work_dir
        self.save_log = save_log
        self.print_to_screen = print_log
        os.makedirs(work_dir, exist_ok=True)

    def print_log(self, text, print_time=True):
        if print_time:
            text = time.strftime('[%m.%d.%y|%X] ', time.localtime()) + text
        if self.print_to_screen:
            print(text, flush=True)
        if self.save_log:
            with open(os.path.join(self.work_dir, 'log.txt'), 'a') as f:
                print(text, file=f)

    def save_arg(self, arg, filename='config.yaml'):
        arg_dict = vars(arg) if not isinstance(arg, dict) else arg
        path = os.path.join(self.work_dir, filename)
        with open(path, 'w') as f:
            f.write(f"# command line: {' '.join(sys.argv)}\n\n")
            yaml.safe_dump(_plain(arg_dict), f, default_flow_style=False, sort_keys=False)

    def save_pkl(self, result, filename):
        path = os.path.join(self.work_dir, filename)
        tmp = path + '.tmp'
        with open(tmp, 'wb') as f:
            pickle.dump(result, f)
        os.replace(tmp, path)

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
