"""The processor's work_dir and checkpoints: the work_dir lock, the refusal to overwrite a run,
``latest.pt`` written atomically with its predecessor kept, and an exact resume (weights, optimizer,
method state, random streams) that is checked against the config first."""
import fcntl
import json
import os
import random
import re

import numpy as np
import torch

from torchlight.boundary import quote
from torchlight.io import UserError, atomic_torch_save, atomic_write, load_resume_file, remove_stale_temporaries, to_cpu_state_dict
from torchlight.readers import load_yaml_mapping


# work_dir -> file descriptor of its exclusive lock (flock on the folder, held for the process's life)
_WORK_DIR_LOCKS = {}


def lock_work_dir(work_dir):
    """Take an exclusive, non-blocking lock on ``work_dir`` (released when the process ends, a kill
    included); a second process in the same work_dir gets a one-line error."""
    key = os.path.realpath(work_dir)
    if key in _WORK_DIR_LOCKS:              # this process holds it already (in-process reruns, tests)
        return
    try:
        fd = os.open(key, os.O_RDONLY | getattr(os, 'O_DIRECTORY', 0) | getattr(os, 'O_CLOEXEC', 0))
    except OSError as e:
        raise UserError(f"cannot open work_dir '{work_dir}' to lock it ({e.strerror})") from e
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        os.close(fd)
        raise UserError(f"work_dir '{work_dir}' is in use by another running process (it holds the work_dir "
                        "lock): wait for it to finish or choose another --work_dir") from e
    _WORK_DIR_LOCKS[key] = fd


# files whose presence means that a work_dir holds (part of) a run: a new run there would overwrite them
RUN_FILE_PATTERNS = ('log.txt', 'latest*', '*.pt', '*.pth', 'test_result.pkl')


def run_files(work_dir):
    import fnmatch
    try:
        names = sorted(os.listdir(work_dir))
    except OSError:
        return []
    return [n for n in names if any(fnmatch.fnmatch(n, p) for p in RUN_FILE_PATTERNS)
            and os.path.isfile(os.path.join(work_dir, n))]


def _as_tuple(value):
    """Lists back to tuples, recursively (random.setstate needs tuples)."""
    return tuple(_as_tuple(v) for v in value) if isinstance(value, (list, tuple)) else value


def portable_optimizer_state(optimizer):
    """``optimizer.state_dict()`` with a captured step's tensor learning rates as floats and its
    implementation flags as the optimizer's defaults (processor/train_step.py), so any run resumes it."""
    state = optimizer.state_dict()
    for group in state['param_groups']:
        if torch.is_tensor(group['lr']):
            group['lr'] = float(group['lr'])
            group.update({k: optimizer.defaults[k] for k in ('fused', 'foreach', 'capturable') if k in group})
    return state


def _is_int(value, low=0):
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def check_resume_state(state):
    """The form of a resume state (``Checkpoints.state``), checked before anything is taken from it: a
    ValueError naming the first key that is missing or of the wrong type or range."""
    def need(ok, key, rule):
        if not ok:
            value = state.get(key.split('.')[0], '<missing>') if isinstance(state, dict) else state
            raise ValueError(f"key '{key}' must be {rule}, got {quote(value, 60)}")
    need(isinstance(state, dict), 'state', 'a mapping (not a resume checkpoint)')
    need(isinstance(state.get('model'), dict) and all(isinstance(k, str) and torch.is_tensor(v)
                                                      for k, v in state['model'].items()),
         'model', 'a state dict of tensors')
    need(_is_int(state.get('epoch')), 'epoch', 'an integer >= 0 (the next epoch)')
    need(isinstance(state.get('optimizer', {}), dict), 'optimizer', 'an optimizer state dict')
    need(isinstance(state.get('meta_info'), dict) and all(isinstance(k, str) and _is_int(v)
                                                          for k, v in state['meta_info'].items()),
         'meta_info', 'a mapping of counters (integers >= 0)')
    best = state.get('best')
    need(isinstance(best, dict) and isinstance(best.get('top1'), (int, float)) and not isinstance(best.get('top1'), bool)
         and _is_int(best.get('epoch'), -1), 'best', "a mapping with 'top1' (a number) and 'epoch' (an integer)")
    rng = state.get('rng')
    need(isinstance(rng, dict) and isinstance(rng.get('python'), (tuple, list)) and torch.is_tensor(rng.get('torch'))
         and isinstance(rng.get('cuda', []), (list, tuple)) and isinstance(rng.get('numpy'), (dict, tuple, list)),
         'rng', 'the random states (python, numpy, torch, cuda)')
    numpy_state = rng['numpy']
    if isinstance(numpy_state, dict):
        need(isinstance(numpy_state.get('name'), str) and torch.is_tensor(numpy_state.get('keys'))
             and _is_int(numpy_state.get('pos')) and _is_int(numpy_state.get('has_gauss'))
             and isinstance(numpy_state.get('cached_gaussian'), float), 'rng.numpy',
             'a NumPy random state (name, keys, pos, has_gauss, cached_gaussian)')
    need(isinstance(state.get('extra', {}), dict), 'extra', 'a mapping of method state')
    need(isinstance(state.get('run', {}), dict), 'run', 'a mapping (model, optimizer, train_head)')


class Checkpoints:
    """Part of ``Processor``: the work_dir claim, ``latest.pt`` and ``maybe_resume``."""

    def check_work_dir(self):
        """work_dir must be a writable folder (whether it may be used is decided in ``claim_work_dir``)."""
        try:
            os.makedirs(self.arg.work_dir, exist_ok=True)
            probe = os.path.join(self.arg.work_dir, f'.write_test{os.getpid()}')
            open(probe, 'w').close()
            os.remove(probe)
        except OSError as e:
            raise UserError(f"work_dir '{self.arg.work_dir}' is not writable ({e.strerror})") from e

    def claim_work_dir(self):
        """The run is known to start: lock work_dir, refuse to overwrite an earlier run, remove the
        temporaries of interrupted writes, then write config.yaml and the held-back log lines."""
        if self.trains() and self.arg.num_epoch <= 0:
            raise UserError(f"key 'num_epoch' must be a positive number of epochs, got {self.arg.num_epoch!r}")
        if not self.is_main:
            self.io.open_log()
            return
        work_dir = self.arg.work_dir
        lock_work_dir(work_dir)
        if self.trains() and not self.resumed:
            found = run_files(work_dir)
            if found:
                listed = ', '.join(found[:4]) + (', ...' if len(found) > 4 else '')
                if self.arg.resume == 'auto':
                    raise UserError(f"work_dir '{work_dir}' already holds a run ({listed}) but no latest.pt or "
                                    "latest.prev.pt to resume it from: it is not overwritten; choose another --work_dir")
                raise UserError(f"work_dir '{work_dir}' already holds a run ({listed}); pass --resume true (or "
                                "auto) to continue it or choose another --work_dir")
        removed = remove_stale_temporaries(work_dir)
        self.io.open_log()                   # a log.txt that cannot be written stops the run here
        self.io.save_arg(self.arg, notes=self.config_notes)
        if self.label_use:
            atomic_write(os.path.join(work_dir, LABEL_FILE), lambda f: f.write(json.dumps(self.label_use) + '\n'),
                         mode='w')
        if removed:
            self.print_log(f'Removed {len(removed)} temporary file(s) of an interrupted write: {", ".join(removed)}')

    def state(self, next_epoch):
        """The resume state: tensors and plain Python data only (it is read back with
        ``torch.load(weights_only=True)``), the NumPy RNG state as a tensor."""
        name, keys, pos, has_gauss, cached = np.random.get_state()
        return {
            'model': to_cpu_state_dict(self.model.state_dict()),
            'optimizer': portable_optimizer_state(self.optimizer),
            'epoch': next_epoch,
            'meta_info': dict(self.meta_info),
            'best': dict(self.best),
            'rng': {
                'python': random.getstate(),
                'numpy': {'name': str(name), 'keys': torch.from_numpy(np.asarray(keys, dtype=np.int64)),
                          'pos': int(pos), 'has_gauss': int(has_gauss), 'cached_gaussian': float(cached)},
                'torch': torch.get_rng_state(),
                'cuda': torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            },
            'extra': self.extra_state(),
            'run': {'model': self.arg.model, 'optimizer': type(self.optimizer).__name__,
                    'train_head': getattr(self.arg, 'train_head', None)},
        }

    def extra_state(self):
        return {}

    def load_extra_state(self, extra):
        pass

    def save_latest(self, next_epoch):
        """Write the new latest.pt completely (temporary file, fsync) and only then rotate: the old one
        becomes latest.prev.pt (used if the newer file turns out unreadable) and the new one is renamed
        over latest.pt. At no moment is there no complete latest.pt."""
        if not self.is_main:
            return
        path = os.path.join(self.arg.work_dir, 'latest.pt')
        atomic_torch_save(self.state(next_epoch), path, keep_previous=os.path.join(self.arg.work_dir, 'latest.prev.pt'))

    def read_resume_state(self):
        """latest.pt, or latest.prev.pt with a warning saying whether latest.pt is missing or unreadable.
        Both are read with ``weights_only=True``: a crafted file cannot run code."""
        path = os.path.join(self.arg.work_dir, 'latest.pt')
        previous = os.path.join(self.arg.work_dir, 'latest.prev.pt')
        errors, problem = [], {}
        for candidate in (path, previous):
            if not os.path.exists(candidate):
                problem[candidate] = 'missing'
                continue
            try:
                state = load_resume_file(candidate)
                check_resume_state(state)
            except Exception as e:
                detail = ' '.join(str(e).split())[:160]
                errors.append(f"'{candidate}' ({type(e).__name__}: {detail})")
                problem[candidate] = 'unreadable (truncated?)'
                continue
            if candidate == previous:
                self.print_log(f"WARNING: '{path}' is {problem[path]}: resuming from '{previous}' "
                               f"(epoch {state['epoch']}).")
            return candidate, state
        if errors:
            raise UserError(f"cannot read the resume files {', '.join(errors)}; they may be truncated or not "
                            "written by this code")
        return None, None

    def check_resume_fits(self, path, state):
        """The resume file must come from a run of the same method, optimizer and shapes."""
        run = state.get('run', {})
        mine = {'model': self.arg.model, 'optimizer': type(self.optimizer).__name__,
                'train_head': getattr(self.arg, 'train_head', None)}
        for key, value in mine.items():
            if key in run and run[key] != value:
                raise UserError(f"cannot resume from '{path}': it was written with {key} {run[key]!r}, this config "
                                f"has {value!r}; resume with the run's config ({os.path.join(self.arg.work_dir, 'config.yaml')}) "
                                "or choose another --work_dir")
        own = self.model.state_dict()
        saved = state['model']
        missing = [k for k in own if k not in saved]
        unexpected = [k for k in saved if k not in own]
        shapes = [f'{k}: file {tuple(saved[k].shape)} vs model {tuple(own[k].shape)}'
                  for k in own if k in saved and tuple(saved[k].shape) != tuple(own[k].shape)]
        if missing or unexpected or shapes:
            detail = '; '.join(shapes[:2]) if shapes else (f'missing keys {missing[:3]}' if missing else
                                                           f'unexpected keys {unexpected[:3]}')
            raise UserError(f"cannot resume from '{path}': it does not fit the model of this config ({detail}); "
                            f"resume with the run's config ({os.path.join(self.arg.work_dir, 'config.yaml')}) "
                            "or choose another --work_dir")

    def maybe_resume(self):
        self.start_epoch = 0
        self.resumed = False
        if not self.arg.resume or self.arg.phase != 'train':
            return
        path, state = self.read_resume_state()
        if state is None:
            if self.arg.resume == 'auto':
                return
            raise UserError(f"--resume given but '{os.path.join(self.arg.work_dir, 'latest.pt')}' does not exist")
        if state['epoch'] > self.arg.num_epoch:
            raise UserError(f"cannot resume from '{path}': it is at epoch {state['epoch']}, past num_epoch "
                            f"{self.arg.num_epoch} of this run: give --num_epoch {state['epoch']} or more to continue "
                            "training it, or choose another --work_dir")
        self.check_resume_fits(path, state)
        try:
            self.model.load_state_dict(state['model'])
            self.optimizer.load_state_dict(state['optimizer'])
            self.load_extra_state(state.get('extra', {}))
        except (RuntimeError, ValueError, KeyError, TypeError) as e:
            raise UserError(f"cannot resume from '{path}': its optimizer or method state does not fit this config "
                            f"({type(e).__name__}: {' '.join(str(e).split())[:200]}); resume with the run's config "
                            f"({os.path.join(self.arg.work_dir, 'config.yaml')})") from e
        self.start_epoch = state['epoch']
        self.meta_info.update(state['meta_info'])
        self.best.update(state['best'])
        rng = state['rng']
        try:
            random.setstate(_as_tuple(rng['python']))
            numpy_state = rng['numpy']
            if isinstance(numpy_state, dict):
                numpy_state = (numpy_state['name'], numpy_state['keys'].numpy().astype(np.uint32), numpy_state['pos'],
                               numpy_state['has_gauss'], numpy_state['cached_gaussian'])
            np.random.set_state(numpy_state)
            torch.set_rng_state(rng['torch'])
            if rng['cuda'] and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(rng['cuda'])
        except (TypeError, ValueError, RuntimeError, KeyError, IndexError) as e:
            raise UserError(f"cannot resume from '{path}': its random states are malformed ({type(e).__name__}: "
                            f"{' '.join(str(e).split())[:120]}); it was not written by this code") from None
        self.resumed = True
        self.print_log(f'Resumed from {path} at epoch {self.start_epoch}.')


EPOCH_MODEL = re.compile(r'epoch(\d+)_model\.pt$')


def resolve_weights(path):
    """``--weights``: a state-dict file as it is, or a pretraining work_dir: its last epoch's
    ``epoch{N}_model.pt`` (a schedule of any length; a one-line error when it holds none)."""
    if not isinstance(path, str) or not os.path.isdir(path):
        return path
    epochs = [(int(m.group(1)), name) for name in os.listdir(path) for m in [EPOCH_MODEL.match(name)] if m]
    if not epochs:
        raise UserError(f"--weights '{path}' is a folder without epoch<N>_model.pt files: give a pretraining "
                        'work_dir after its first saved epoch, or a checkpoint file')
    return os.path.join(path, max(epochs)[1])


LABEL_RECORD = 'pretrain_labels'       # a method's checkpoint record of label use in pretraining (MICA)
LABEL_FILE = 'label_use.json'


def pretraining_label_use(model, weights_path):
    """Whether the pretraining of the loaded weights read the training labels: the checkpoint's
    ``pretrain_labels`` record (0 no, 1 yes), or for a checkpoint made before the record (255) the
    ``model_args`` of the run's config.yaml next to it (MICA: FM with fm_target text / label, the class
    defaults); None for a method without the record or when nothing tells."""
    state = model.state_dict()
    if LABEL_RECORD not in state:
        return None
    value = int(state[LABEL_RECORD])
    if value != 255:
        return bool(value)
    try:
        args = load_yaml_mapping(os.path.join(os.path.dirname(os.path.abspath(weights_path)), 'config.yaml'),
                                 'config file').get('model_args') or {}
    except UserError:
        return None
    if not isinstance(args, dict):
        return None
    return bool(args.get('feature_modulation', True)) and args.get('fm_target', 'text') in ('text', 'label')


def pretraining_reads_labels(processor):
    """Why this pretraining reads the training labels (its model's ``pretrain_labels`` record), or None."""
    state = processor.model.state_dict()
    if LABEL_RECORD not in state or int(state[LABEL_RECORD]) != 1:
        return None
    target = (processor.arg.model_args or {}).get('fm_target', 'text')
    return (f"MICA model_args.fm_target: {target}, the paper's reading: the Feature Modulation teacher is the "
            "text of the sample's class")


def announce_label_use(processor):
    """A pretraining that reads the training labels says so at start-up, in the log, in the header of
    config.yaml and in label_use.json (``claim_work_dir``)."""
    why = pretraining_reads_labels(processor)
    if why is None:
        return
    text = (f'this pretraining reads the training labels ({why}); its encoder is not self-supervised, and '
            'its linear / kNN numbers are not comparable with label-free methods; the label-free mode: '
            '--model_args fm_target=teacher')
    processor.print_log(f'LABELS: {text}')
    processor.config_notes.append(f'LABELS: {text}')
    processor.label_use = {'pretraining_reads_labels': True, 'why': why,
                           'label_free': '--model_args fm_target=teacher'}


def check_label_use(processor):
    """A semi-supervised evaluation (``Feeder_semi``) of weights whose pretraining read the labels stops
    with one line unless ``allow_label_pretraining``; any evaluation of such weights says so in the log
    and in ``work_dir/label_use.json`` (and an unknown record of a MICA checkpoint is said too)."""
    p = processor
    used = pretraining_label_use(p.model, p.arg.weights)
    if used is False or (used is None and LABEL_RECORD not in p.model.state_dict()):
        return
    semi = str(p.arg.train_feeder or '').endswith('Feeder_semi')
    if used is None:
        p.print_log(f"Notice: '{p.arg.weights}' does not record whether its pretraining read the training labels "
                    "(a MICA checkpoint made before the record, without its config.yaml beside it): check the "
                    "pretraining run's model_args.fm_target (text / label read them, teacher does not).")
        return
    if semi and not p.arg.allow_label_pretraining:
        raise UserError(f"weights '{p.arg.weights}': their pretraining read the training labels (MICA fm_target: "
                        "text or label), so this semi-supervised evaluation would not be semi-supervised: pretrain "
                        "with --model_args fm_target=teacher (label-free), or pass --allow_label_pretraining true "
                        "to run it anyway (recorded in the log and in label_use.json)")
    what = ('semi-supervised evaluation run with --allow_label_pretraining' if semi else
            'this evaluation is not of a self-supervised (label-free) representation')
    p.print_log(f"WARNING: the pretraining of '{p.arg.weights}' read the training labels (MICA fm_target: text or "
                f"label): {what}.")
    p.label_use = {'weights': p.arg.weights, 'pretraining_used_labels': True, 'semi_supervised': semi,
                   'allow_label_pretraining': bool(p.arg.allow_label_pretraining)}     # written by claim_work_dir
