"""The generic training processor (torchlight style).

A processor is configured by argparse defaults < the YAML file < the command line, owns the work
directory (log, config dump, tensorboard, checkpoints), the device, seeding, data loaders,
optimiser and learning-rate schedule, and runs ``train``/``test`` for ``phase: train|test``.
Subclasses implement ``train_epoch`` and ``test_epoch`` only.
"""
import argparse
import contextlib
import fcntl
import math
import os
import random
import signal
import sys

import numpy as np
import torch
import yaml

from feeder.tools import STREAMS
from net.utils.init import family_weights_init
from processor.build import build_feeder, build_model, inference_encoder, load_config, model_layout
from torchlight import distributed
from torchlight.io import (IO, DictAction, UserError, atomic_torch_save, closest_keys, load_resume_file,
                           remove_stale_temporaries, str2bool,
                           to_cpu_state_dict)

# Keys of the reference code bases that this project accepts and ignores.
LEGACY_KEYS = {
    'pavi_log': 'PAVI logging does not exist here; tensorboard scalars go to work_dir/runs',
    'use_gpu': 'the device is chosen by `device` (CPU when no GPU is present)',
    'context': 'CrosSCLR cross-view context is not part of this project',
    'cross_epoch': 'CrosSCLR cross-view training is not part of this project',
    'start_epoch': 'use --resume to continue a stopped run (latest.pt holds the epoch)',
}


class EpochSampler(torch.utils.data.Sampler):
    """Shuffled (or ordered) indices, reseeded from ``seed + epoch`` each epoch: reproducible, not
    the same order every epoch, and resumable at any epoch.

    Under torchrun (``world`` > 1) every rank draws the same permutation and takes its contiguous
    ``batch_size / world`` slice of every global batch of ``batch_size`` (incomplete batches dropped)."""

    def __init__(self, num_samples, seed=0, shuffle=True, rank=0, world=1, batch_size=None):
        self.num_samples = num_samples
        self.seed = seed
        self.shuffle = shuffle
        self.rank, self.world, self.batch_size = rank, world, batch_size
        self.epoch = 0

    def set_epoch(self, epoch):
        self.epoch = epoch

    def order(self):
        if not self.shuffle:
            return list(range(self.num_samples))
        g = torch.Generator()
        g.manual_seed(self.seed * 100003 + self.epoch)
        return torch.randperm(self.num_samples, generator=g).tolist()

    def __iter__(self):
        order = self.order()
        if self.world <= 1:
            return iter(order)
        local = self.batch_size // self.world
        batches = self.num_samples // self.batch_size
        return iter([i for b in range(batches) for i in
                     order[b * self.batch_size + self.rank * local: b * self.batch_size + (self.rank + 1) * local]])

    def __len__(self):
        if self.world <= 1:
            return self.num_samples
        return self.num_samples // self.batch_size * (self.batch_size // self.world)


class DeviceLoader:
    """Batches (data, label, index) drawn by index from a split held on the device: the same batches,
    in the same order, as the DataLoader over ``feeder`` with ``sampler`` (``data_on_device: true``)."""

    def __init__(self, feeder, sampler, batch_size, drop_last, device):
        self.dataset, self.sampler, self.batch_size, self.drop_last = feeder, sampler, batch_size, drop_last
        ids = np.asarray(feeder.index)
        self.data = torch.from_numpy(np.asarray(feeder.data[ids], dtype=np.float32)).to(device)
        self.label = torch.as_tensor(np.asarray(feeder.label)[ids], dtype=torch.long, device=device)
        self.ids = torch.as_tensor(ids, dtype=torch.long, device=device)

    def __len__(self):
        n = len(self.sampler)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self):
        order = torch.as_tensor(list(iter(self.sampler)), dtype=torch.long, device=self.data.device)
        for b in range(len(self)):
            pos = order[b * self.batch_size:(b + 1) * self.batch_size]
            yield self.data[pos], self.label[pos], self.ids[pos]


def _as_tuple(value):
    """Lists back to tuples, recursively (random.setstate needs tuples)."""
    return tuple(_as_tuple(v) for v in value) if isinstance(value, (list, tuple)) else value


def bool_or_auto(value):
    """true / false / auto (``resume``, ``data_on_device``)."""
    if isinstance(value, str) and value.lower() == 'auto':
        return 'auto'
    return str2bool(value)


def every(count, interval):
    """True every ``interval`` counts; an interval <= 0 means never (the caller adds the last epoch)."""
    return interval > 0 and count % interval == 0


def seed_worker(worker_id):
    """Per-worker seeds derived from the loader's per-epoch base seed (differ by worker and epoch).
    A worker leaves Ctrl-C to the main process (which stops cleanly) and drops the inherited work_dir
    lock, so that a killed run's orphaned workers never block its resume."""
    worker_seed = torch.initial_seed() % 2 ** 32
    np.random.seed(worker_seed)
    random.seed(worker_seed)
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:
        pass
    for fd in list(_WORK_DIR_LOCKS.values()):
        try:
            os.close(fd)
        except OSError:
            pass


def worker_base_seed(seed, epoch):
    """The base seed of the DataLoader workers of ``epoch`` (a function of the run's seed and epoch only)."""
    return (seed * 1000003 + epoch * 7919 + 12345) % 2 ** 63


class SeededDataLoader(torch.utils.data.DataLoader):
    """A DataLoader whose workers are seeded per epoch from the run's own generator (reseeded from
    ``seed`` and the sampler's epoch before every pass) instead of the global torch RNG: the global RNG,
    which drives the batched augmentations in the main process, sees no draw from the loader, so the
    results depend neither on ``num_worker`` nor on where a run was resumed (``DeviceLoader`` draws
    nothing either). Workers are started per epoch (not persistent) so that their seeds are those of
    the epoch in a resumed process as in an uninterrupted one."""

    def __init__(self, *args, seed=0, **kwargs):
        super().__init__(*args, generator=torch.Generator(), **kwargs)
        self.run_seed = seed

    def __iter__(self):
        self.generator.manual_seed(worker_base_seed(self.run_seed, getattr(self.sampler, 'epoch', 0)))
        return super().__iter__()


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


COMPILE_MODES = ['none', 'default', 'reduce-overhead', 'max-autotune']


class Processor:
    """Base processor: configuration, IO, device, data, optimiser, loop, checkpoints."""
    uses_labels = True      # whether training reads the labels (checked against num_class)

    def __init__(self, argv=None):
        self.load_arg(argv)
        self.init_environment()
        self.load_model()
        self.load_weights()
        self.load_data()
        self.load_optimizer()
        self.maybe_resume()
        self.claim_work_dir()

    # ------------------------------------------------------------------ configuration
    def load_arg(self, argv=None):
        parser = self.get_parser()

        def error(message):              # argparse would print the usage and exit: one line instead
            raise UserError(f'command line: {message}')
        parser.error = error

        def parse(argv):
            args, unknown = parser.parse_known_args(argv)
            if unknown:
                options = [u for u in unknown if u.startswith('-')]
                if options:
                    key = options[0].lstrip('-').split('=')[0]
                    raise UserError(f"unknown option '{options[0]}' on the command line; closest valid keys: "
                                    f"{closest_keys(key, vars(args))}")
                raise UserError(f"unexpected command-line argument '{unknown[0]}' (options are --key value)")
            return args
        p = parse(argv)
        if p.config is not None:
            default_arg = load_config(p.config)          # its base: files merged under it
            valid = vars(p).keys()
            self.ignored_keys = []
            for k in list(default_arg):
                if k in LEGACY_KEYS:
                    self.ignored_keys.append(k)
                    default_arg.pop(k)
                elif k not in valid:
                    raise UserError(f"unknown key '{k}' in {p.config}; closest valid keys: "
                                    f"{closest_keys(k, valid)}")
            self.check_types(default_arg, parser, p.config)
            parser.set_defaults(**default_arg)
        else:
            self.ignored_keys = []
        self.arg = parse(argv)
        if self.arg.view is not None:        # CrosSCLR's name for the stream
            self.arg.stream = self.arg.view
        if self.arg.stream not in STREAMS:
            raise UserError(f"stream/view '{self.arg.stream}' is unknown; use one of {', '.join(STREAMS)}")
        self.check_values(parser, p.config)

    def trains(self):
        """Whether this run trains (phase train with an optimizer; kNN evaluation has none)."""
        return self.arg.phase == 'train' and getattr(self, 'optimizer', None) is not None

    def check_values(self, parser, source):
        """The final values (defaults < YAML < command line) against their choices and ranges."""
        where = f' (from {source} or the command line)' if source else ''
        for action in parser._actions:
            if action.choices is None or not hasattr(self.arg, action.dest):
                continue
            value = getattr(self.arg, action.dest)
            values = value if isinstance(value, list) else [value]
            for v in values:
                if v not in action.choices:
                    raise UserError(f"key '{action.dest}'{where} must be one of "
                                    f"{', '.join(map(str, action.choices))} (case as written), got {v!r}")
        arg = self.arg

        def need(ok, key, rule):
            if not ok:
                raise UserError(f"key '{key}'{where} must be {rule}, got {getattr(arg, key)!r}")
        need(arg.base_lr >= 0 and np.isfinite(arg.base_lr), 'base_lr', 'a finite learning rate >= 0')
        need(0 <= arg.momentum < 1, 'momentum', 'in [0, 1) (SGD momentum)')
        need(arg.weight_decay >= 0, 'weight_decay', '>= 0')
        need(arg.lr_decay_rate > 0, 'lr_decay_rate', '> 0')
        need(arg.batch_size > 0, 'batch_size', 'a positive integer')
        need(arg.test_batch_size > 0, 'test_batch_size', 'a positive integer')
        need(arg.num_worker >= 0, 'num_worker', 'an integer >= 0')
        need(arg.warm_up_epoch >= 0, 'warm_up_epoch', 'an integer >= 0')

    @staticmethod
    def check_types(values, parser, source):
        """YAML values must fit the option's type. Strings that the type converts are accepted and
        converted (YAML reads ``1e-4`` as a string; the reference code relies on argparse for it)."""
        actions = {a.dest: a for a in parser._actions}
        for k, v in values.items():
            action = actions.get(k)
            if action is None or v is None:
                continue
            if isinstance(action, DictAction):
                if not isinstance(v, dict):
                    raise UserError(f"key '{k}' in {source} must be a mapping, got {v!r}")
                continue
            if action.choices is not None:
                for item in (v if isinstance(v, list) else [v]):
                    if item not in action.choices:
                        raise UserError(f"key '{k}' in {source} must be one of "
                                        f"{', '.join(map(str, action.choices))} (case as written), got {item!r}")
            if action.type not in (int, float, str2bool, bool_or_auto):
                continue
            is_list = action.nargs in ('+', '*')
            items = v if (is_list and isinstance(v, list)) else [v]
            converted = []
            for item in items:
                if isinstance(item, bool) and action.type not in (str2bool, bool_or_auto):
                    raise UserError(f"key '{k}' in {source} must be a number, got {item!r}")
                try:
                    converted.append(action.type(item))
                except (TypeError, ValueError, argparse.ArgumentTypeError):
                    kind = {str2bool: 'true or false', bool_or_auto: 'true, false or auto'}.get(
                        action.type, f'a number ({getattr(action.type, "__name__", action.type)})')
                    raise UserError(f"key '{k}' in {source} must be {kind}, got {item!r}") from None
                if action.type is int and isinstance(item, float) and item != int(item):
                    raise UserError(f"key '{k}' in {source} must be an integer, got {item!r}")
            values[k] = converted if (is_list and isinstance(v, list)) else converted[0]

    @staticmethod
    def get_parser(add_help=False):
        parser = argparse.ArgumentParser(add_help=add_help, description='Base Processor')
        parser.add_argument('-w', '--work_dir', default='./work_dir/tmp', help='the work folder for storing results')
        parser.add_argument('-c', '--config', default=None, help='path to the configuration file')
        # processor
        parser.add_argument('--phase', default='train', choices=['train', 'test'], help='train or test')
        parser.add_argument('--save_result', type=str2bool, default=True, help='write test_result.pkl when testing')
        parser.add_argument('--num_epoch', type=int, default=80, help='number of epochs')
        parser.add_argument('--device', type=int, default=[0], nargs='+', help='GPU indexes (CPU when none)')
        parser.add_argument('--seed', type=int, default=1, help='random seed')
        parser.add_argument('--resume', type=bool_or_auto, default=False,
                            help="true: continue the run in work_dir from its latest.pt; auto: continue it when "
                                 "latest.pt exists, start fresh otherwise; false: start fresh")
        parser.add_argument('--cudnn_benchmark', type=str2bool, default=True, help='cuDNN autotuner on GPU')
        parser.add_argument('--amp', default='none', choices=['none', 'bf16', 'fp16'],
                            help='mixed precision for forward passes (FFTs and losses stay float32)')
        parser.add_argument('--compile', default='none', choices=COMPILE_MODES,
                            help="torch.compile the model in place (state dict unchanged): 'default', "
                                 "'reduce-overhead' (CUDA graphs) or 'max-autotune'")
        parser.add_argument('--sync_bn', type=str2bool, default=False,
                            help='under torchrun, BatchNorm statistics over the global batch (SyncBatchNorm, '
                                 'CUDA only); default: per-rank BatchNorm with cross-rank shuffle-BN for MoCo keys')
        # visualize and debug
        parser.add_argument('--log_interval', type=int, default=100, help='iterations between loss logs')
        parser.add_argument('--save_interval', type=int, default=10, help='epochs between epoch{N}_model.pt')
        parser.add_argument('--eval_interval', type=int, default=5, help='epochs between evaluations')
        parser.add_argument('--save_log', type=str2bool, default=True, help='write work_dir/log.txt')
        parser.add_argument('--print_log', type=str2bool, default=True, help='print logs to stdout')
        parser.add_argument('--progress_bar', type=str2bool, default=True, help='show a progress bar per epoch')
        # feeder
        parser.add_argument('--train_feeder', default='feeder.ntu_feeder.Feeder_dual', help='training data loader')
        parser.add_argument('--test_feeder', default='feeder.ntu_feeder.Feeder_single', help='test data loader')
        parser.add_argument('--num_worker', type=int, default=2, help='data loader workers')
        parser.add_argument('--data_on_device', type=bool_or_auto, default='auto',
                            help='load the whole split onto the device once and draw batches by index '
                                 '(no DataLoader); auto: on a GPU when the split takes at most a third of '
                                 'its free memory, never on the CPU')
        parser.add_argument('--train_feeder_args', action=DictAction, default=dict(), help='training feeder arguments')
        parser.add_argument('--test_feeder_args', action=DictAction, default=dict(), help='test feeder arguments')
        parser.add_argument('--batch_size', type=int, default=256, help='training batch size')
        parser.add_argument('--test_batch_size', type=int, default=256, help='test batch size')
        parser.add_argument('--debug', action='store_true', help='use only 100 samples')
        parser.add_argument('--stream', default='joint', help='joint | bone | motion (AimCLR name)')
        parser.add_argument('--view', default=None, help='joint | bone | motion (CrosSCLR name of stream)')
        # model
        parser.add_argument('--model', default=None, help='the model, e.g. net.skeletonclr.SkeletonCLR')
        parser.add_argument('--model_args', action=DictAction, default=dict(), help='model arguments')
        parser.add_argument('--weights_init', type=str2bool, default=True,
                            help="the SkeletonCLR/AimCLR family's initialisation of the whole model before "
                                 "--weights are loaded (Conv/Linear N(0, 0.02), BatchNorm N(1, 0.02), zero "
                                 "biases); false keeps each module's own (PyTorch / CTR-GCN) initialisation")
        parser.add_argument('--weights', default=None, help='initial weights (a state dict)')
        parser.add_argument('--ignore_weights', type=str, default=[], nargs='+',
                            help='key prefixes dropped from the initial weights')
        # optimiser
        parser.add_argument('--show_topk', type=int, default=[1, 5], nargs='+', help='top-k accuracies reported')
        parser.add_argument('--base_lr', type=float, default=0.01, help='initial learning rate')
        parser.add_argument('--step', type=int, default=[], nargs='+', help='epochs where lr is multiplied by lr_decay_rate')
        parser.add_argument('--lr_decay_rate', type=float, default=0.1, help='lr factor at each step')
        parser.add_argument('--lr_schedule', default='step', choices=['step', 'cosine', 'exponential'],
                            help='step: x lr_decay_rate at each epoch in step (the reference); cosine: '
                                 'half-cosine from base_lr to 0 over the epochs after the warm-up; '
                                 'exponential: x lr_decay_rate every epoch (HCN; step is not used)')
        parser.add_argument('--warm_up_epoch', type=int, default=0, help='epochs of linear lr warm-up')
        parser.add_argument('--optimizer', default='SGD', choices=['SGD', 'Adam', 'AdamW'], help='optimiser')
        parser.add_argument('--momentum', type=float, default=0.9, help='SGD momentum')
        parser.add_argument('--nesterov', type=str2bool, default=False, help='Nesterov momentum')
        parser.add_argument('--weight_decay', type=float, default=0.0001, help='weight decay')
        # method-specific keys of the family (used by the methods that need them)
        parser.add_argument('--mining_epoch', type=int, default=1000, help='AimCLR: epoch that starts nearest-neighbour mining')
        parser.add_argument('--topk', type=int, default=1, help='AimCLR: mined positives')
        return parser

    # ------------------------------------------------------------------ environment
    def init_environment(self):
        arg = self.arg
        self.rank, self.world = distributed.init_from_environment()
        self.is_main = self.rank == 0
        if self.is_main:
            self.check_work_dir()
        # nothing is written to work_dir until the run is known to start (claim_work_dir): the log
        # lines of the set-up are held back until then
        self.io = IO(arg.work_dir, save_log=arg.save_log and self.is_main, print_log=arg.print_log and self.is_main,
                     defer=True)
        if self.world > 1:
            self.io.print_log(f'Distributed: {self.world} processes; batch_size {arg.batch_size} is the global batch.')
        for k in self.ignored_keys:
            self.io.print_log(f'Notice: config key {k!r} is ignored ({LEGACY_KEYS[k]}).')
        self.set_seed(arg.seed)
        self.dev = self.select_device(arg.device)
        if self.dev.type == 'cuda':
            torch.backends.cudnn.benchmark = arg.cudnn_benchmark
        self.meta_info = dict(epoch=0, iter=0, global_step=0)
        self.best = dict(top1=0.0, epoch=-1)
        self.writer = None
        self.stop_requested = False

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
        self.io.save_arg(self.arg)
        if removed:
            self.print_log(f'Removed {len(removed)} temporary file(s) of an interrupted write: {", ".join(removed)}')

    def print_log(self, text):
        self.io.print_log(text)

    @staticmethod
    def set_seed(seed):
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)

    def select_device(self, device):
        if torch.cuda.is_available() and self.world > 1 and os.environ.get('DIST_BACKEND') != 'gloo':
            index = distributed.local_rank()            # torchrun: one GPU per process
            torch.cuda.set_device(index)
            return torch.device('cuda', index)
        if torch.cuda.is_available():
            index = device[0] if device else 0
            if index >= torch.cuda.device_count():
                raise UserError(f'device {index} requested but only {torch.cuda.device_count()} GPU(s) exist')
            if len(device) > 1:
                self.print_log(f'Notice: several devices {device} given; one process uses device {index} '
                               '(multi-GPU training runs with torchrun).')
            torch.cuda.set_device(index)
            return torch.device('cuda', index)
        self.print_log(f'Notice: device {list(device)} requested but no GPU found: running on the CPU.'
                       if device else 'No GPU found: running on the CPU.')
        return torch.device('cpu')

    def tensorboard(self):
        if self.writer is None:
            from tensorboardX import SummaryWriter
            # a new event file per run; earlier runs in the folder are kept
            self.writer = SummaryWriter(os.path.join(self.arg.work_dir, 'runs'))
        return self.writer

    # ------------------------------------------------------------------ model and data
    def load_model(self):
        self.model = build_model(vars(self.arg))
        if self.arg.weights_init:
            # the reference order: after the constructor (MoCo's copy of encoder_q into encoder_k), so
            # the key encoder is drawn afresh; before any --weights are loaded
            self.model.apply(family_weights_init)
        self.model = self.model.to(self.dev)
        if self.arg.sync_bn and self.world > 1:
            if self.dev.type != 'cuda':
                raise UserError('sync_bn: true needs CUDA devices (torch.nn.SyncBatchNorm); on CPU processes '
                                'set sync_bn: false (MoCo keys then use cross-rank shuffle-BN)')
            self.model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
        if self.arg.compile != 'none':
            # nn.Module.compile compiles in place: parameter names, checkpoints and hooks stay the same
            self.model.compile(mode=self.arg.compile)

    def load_weights(self):
        if self.arg.weights:
            graphs = {k: v.detach().clone() for k, v in self.model.state_dict().items() if k.split('.')[-1] == 'A'}
            self.io.load_weights(self.model, self.arg.weights, self.arg.ignore_weights)
            own = self.model.state_dict()
            changed = [k for k, v in graphs.items() if not torch.equal(own[k].cpu(), v.cpu())]
            if changed:
                layout = self.model_layout()
                self.print_log(f"Notice: the graph buffer '{changed[0]}' of '{self.arg.weights}' differs from the "
                               f"graph of this config's layout{f' {layout.name!r}' if layout else ''} "
                               "(model_args.graph_args): the checkpoint's adjacency replaces it; the weights were "
                               'trained with another layout or strategy (use the layout of the pretraining run)')

    def build_feeder(self, name, args, split):
        """The feeder ``name`` with ``args`` in this run's stream (``processor.build.build_feeder``), checked
        against the model's input."""
        cfg = dict(vars(self.arg), **{f'{split}_feeder': name, f'{split}_feeder_args': args})
        feeder = build_feeder(cfg, split, stream=self.arg.stream, layout=self.model_layout(),
                              uses_labels=self.uses_labels)
        self.check_magnitude(feeder)
        empty = getattr(feeder, 'empty_samples', None)
        if empty is not None and len(empty):
            self.print_log(f"Notice: {len(empty)} of {len(feeder.data)} samples in '{feeder.data_path}' are all "
                           f"zero (no skeleton), e.g. sample {int(empty[0])} "
                           f"'{feeder.sample_name[int(empty[0])]}'; they are kept")
        # the data must fit the model's input (C, V, and M where the model fixes it) before any training
        check = getattr(inference_encoder(getattr(self, 'model', None)), 'check_input', None)
        shape = getattr(getattr(feeder, 'data', None), 'shape', None)
        if check is not None and shape is not None and len(shape) == 5:
            try:
                check(torch.zeros((1,) + tuple(shape[1:]), device='meta'))
            except ValueError as e:
                raise UserError(f"data file '{feeder.data_path}' ({split}, shape {tuple(shape)}) does not fit "
                                f"{self.arg.model}: {e}") from e
        return feeder

    def model_layout(self):
        """The skeleton layout of the model's graph (``model_args.graph_args.layout``), or None."""
        return model_layout(getattr(self, 'model', None))

    MAX_COORDINATE = 1e6

    @classmethod
    def check_magnitude(cls, feeder):
        """Finite but huge values (|x| > 1e6: no skeleton is measured in such units) overflow float32 to
        Inf in the network; say so at load instead of a 'loss is nan' later."""
        data = getattr(feeder, 'data', None)
        if not isinstance(data, np.ndarray) or data.ndim < 2 or not len(data) \
                or not np.issubdtype(data.dtype, np.floating):
            return
        chunk = max(1, (64 << 20) // max(1, data[0].nbytes))
        for start in range(0, len(data), chunk):
            block = np.abs(np.asarray(data[start:start + chunk]))
            peaks = block.reshape(len(block), -1).max(1)
            if np.nanmax(peaks) > cls.MAX_COORDINATE:
                bad = start + int(np.argmax(peaks > cls.MAX_COORDINATE))
                raise UserError(f"data file '{feeder.data_path}' holds values up to {float(np.nanmax(peaks)):.3g} "
                                f"(first in sample {bad}): skeleton coordinates are metres or pixels; values beyond "
                                f"{cls.MAX_COORDINATE:g} overflow float32 to Inf in the network. Rescale the data")

    def make_loader(self, feeder, batch_size, train):
        feeder.batch_augment = True
        world = self.world if train else 1
        if world > 1 and batch_size % world:
            raise UserError(f'batch_size={batch_size} must be a multiple of the {world} processes (global batch)')
        sampler = EpochSampler(len(feeder), seed=self.arg.seed, shuffle=train, rank=self.rank, world=world,
                               batch_size=batch_size)
        batch_size = batch_size // world
        if train and batch_size > len(feeder):
            raise UserError(f'batch_size={batch_size} is larger than the {len(feeder)} training samples '
                            f"of '{feeder.data_path}' (the last incomplete batch is dropped)")
        if train:
            steps, dropped = divmod(len(feeder), batch_size * world)
            self.print_log(f'Training data: {len(feeder)} samples, batch_size {batch_size * world}: {steps} '
                           f"iteration{'s' if steps != 1 else ''} per epoch, {dropped} samples dropped per epoch "
                           '(drop_last: the last incomplete batch; other samples each epoch, the order is reshuffled)')
        if self.data_on_device(feeder):
            return DeviceLoader(feeder, sampler, batch_size, drop_last=train, device=self.dev)
        return SeededDataLoader(
            feeder, batch_size=batch_size, sampler=sampler, num_workers=self.arg.num_worker,
            drop_last=train, pin_memory=self.dev.type == 'cuda', worker_init_fn=seed_worker, seed=self.arg.seed)

    def data_on_device(self, feeder):
        """``data_on_device``: true/false, or auto: a GPU split that fits in a third of the free memory."""
        if self.arg.data_on_device != 'auto':
            return self.arg.data_on_device
        if self.dev.type != 'cuda':
            return False
        size = 4 * len(feeder.index) * int(np.prod(feeder.data.shape[1:]))      # float32 on the device
        return size <= torch.cuda.mem_get_info(self.dev)[0] / 3

    def load_data(self):
        self.data_loader = {}
        if self.arg.phase == 'train' and self.arg.train_feeder_args:
            self.train_feeder = self.build_feeder(self.arg.train_feeder, self.arg.train_feeder_args, 'train')
            if getattr(self.train_feeder, 'layout', None) is not None:
                self.print_log(f'Skeleton: {self.train_feeder.layout.describe()}, for feeder and model')
            self.data_loader['train'] = self.make_loader(self.train_feeder, self.arg.batch_size, True)
        if self.arg.test_feeder_args:
            self.test_feeder = self.build_feeder(self.arg.test_feeder, self.arg.test_feeder_args, 'test')
            self.data_loader['test'] = self.make_loader(self.test_feeder, self.arg.test_batch_size, False)

    def load_optimizer(self):
        params = [p for p in self.model.parameters() if p.requires_grad]
        if self.arg.optimizer == 'SGD':
            self.optimizer = torch.optim.SGD(params, lr=self.arg.base_lr, momentum=self.arg.momentum,
                                             nesterov=self.arg.nesterov, weight_decay=self.arg.weight_decay)
        elif self.arg.optimizer == 'Adam':
            self.optimizer = torch.optim.Adam(params, lr=self.arg.base_lr, weight_decay=self.arg.weight_decay)
        else:
            self.optimizer = torch.optim.AdamW(params, lr=self.arg.base_lr, weight_decay=self.arg.weight_decay)

    def learning_rate(self, epoch, fraction=0.0):
        """Step schedule (x lr_decay_rate at each epoch in ``step``) after an optional linear warm-up;
        ``lr_schedule: cosine``: base_lr * (1 + cos(pi * p)) / 2, p the fraction of the post-warm-up
        epochs done (SGDR without restarts, Loshchilov & Hutter, ICLR 2017), per iteration;
        ``exponential``: base_lr * lr_decay_rate ** epoch (HCN's release)."""
        if self.arg.warm_up_epoch > 0 and epoch < self.arg.warm_up_epoch:
            return self.arg.base_lr * (epoch + fraction + 1e-8) / self.arg.warm_up_epoch
        if self.arg.lr_schedule == 'cosine':
            span = max(1, self.arg.num_epoch - self.arg.warm_up_epoch)
            done = min(1.0, (epoch + fraction - self.arg.warm_up_epoch) / span)
            return self.arg.base_lr * 0.5 * (1.0 + math.cos(math.pi * done))
        if self.arg.lr_schedule == 'exponential':
            return self.arg.base_lr * self.arg.lr_decay_rate ** epoch
        return self.arg.base_lr * self.arg.lr_decay_rate ** int(np.sum(epoch >= np.array(self.arg.step)))

    def adjust_lr(self, epoch, fraction=0.0):
        self.lr = self.learning_rate(epoch, fraction)
        for group in self.optimizer.param_groups:
            group['lr'] = self.lr
        return self.lr

    # ------------------------------------------------------------------ checkpoints and resume
    def state(self, next_epoch):
        """The resume state: tensors and plain Python data only (it is read back with
        ``torch.load(weights_only=True)``), the NumPy RNG state as a tensor."""
        name, keys, pos, has_gauss, cached = np.random.get_state()
        return {
            'model': to_cpu_state_dict(self.model.state_dict()),
            'optimizer': self.optimizer.state_dict(),
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
                if not isinstance(state, dict) or 'model' not in state or 'epoch' not in state:
                    raise ValueError('not a resume checkpoint')
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
        random.setstate(_as_tuple(rng['python']))
        numpy_state = rng['numpy']
        if isinstance(numpy_state, dict):
            numpy_state = (numpy_state['name'], numpy_state['keys'].numpy().astype(np.uint32), numpy_state['pos'],
                           numpy_state['has_gauss'], numpy_state['cached_gaussian'])
        np.random.set_state(numpy_state)
        torch.set_rng_state(rng['torch'])
        if rng['cuda'] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng['cuda'])
        self.resumed = True
        self.print_log(f'Resumed from {path} at epoch {self.start_epoch}.')

    def install_signal_handler(self):
        """SIGTERM (pre-emption) and SIGINT (Ctrl-C): stop after the current iteration, keep latest.pt of
        the epoch boundary and exit with 128 + the signal number; a second signal exits at once (the
        checkpoints on disk are always complete)."""
        def handler(signum, frame):
            if self.stop_requested:
                print(f'error: signal {signum} again: exiting now; resume with --resume true', file=sys.stderr,
                      flush=True)
                os._exit(128 + signum)
            self.stop_signal = signum
            self.stop_requested = True
            try:
                self.print_log(f'Received signal {signum} ({signal.Signals(signum).name}): stopping after this '
                               'iteration.')
            except UserError:
                pass
        for signum in (signal.SIGTERM, signal.SIGINT):
            try:
                signal.signal(signum, handler)
            except ValueError:  # not in the main thread
                pass

    # ------------------------------------------------------------------ loop
    def start(self):
        self.print_log(f'Parameters:\n{yaml.safe_dump(vars(self.arg), sort_keys=False, default_flow_style=None)}')
        if self.arg.phase == 'train':
            self.install_signal_handler()
            if not self.resumed:
                self.save_latest(0)          # a run killed in its first epoch can be resumed too
            for epoch in range(self.start_epoch, self.arg.num_epoch):
                if self.stop_requested:          # a signal during the evaluation or the save of the last epoch
                    self.stopped(epoch)
                    return
                self.meta_info['epoch'] = epoch
                sampler = self.data_loader['train'].sampler if 'train' in self.data_loader else None
                if sampler is not None:
                    sampler.set_epoch(epoch)
                self.print_log(f'Training epoch: {epoch + 1}')
                self.train_epoch(epoch)
                if self.stop_requested:
                    # latest.pt keeps the state at the start of this epoch (weights, queue, optimizer,
                    # RNG), so a resumed run repeats this epoch exactly as an uninterrupted run would
                    self.stopped(epoch)
                    return
                done = epoch + 1
                last = done == self.arg.num_epoch
                distributed.broadcast_buffers(self.model)      # one set of BatchNorm statistics
                if (every(done, self.arg.save_interval) or last) and self.is_main:
                    self.io.save_model(self.model, f'epoch{done}_model.pt')
                if 'test' in self.data_loader and (every(done, self.arg.eval_interval) or last) and self.is_main:
                    self.print_log(f'Eval epoch: {done}')
                    self.test_epoch(epoch)
                self.save_latest(done)
            self.finish()
        else:
            if not self.arg.weights:
                raise UserError('phase test needs --weights (e.g. work_dir/.../best_model.pt)')
            if 'test' not in self.data_loader:
                raise UserError('phase test needs test_feeder_args with data_path and label_path')
            self.test_epoch(0, save_result=True)

    def stopped(self, epoch):
        """After a stop signal: say where the run stands; ``exit_status`` is 128 + the signal number."""
        signum = getattr(self, 'stop_signal', None) or signal.SIGTERM
        self.exit_status = 128 + int(signum)
        message = (f'Stopped by signal {int(signum)} during epoch {epoch + 1}; `--resume true` restarts that epoch '
                   f'from {os.path.join(self.arg.work_dir, "latest.pt")}.')
        self.print_log(message)
        if self.is_main:
            print(f'error: {message}', file=sys.stderr, flush=True)
        self.finish()

    def finish(self):
        if self.writer is not None:
            self.writer.close()

    def autocast(self):
        """The forward-pass precision context of ``amp`` (a no-op for 'none')."""
        if self.arg.amp == 'none':
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.dev.type, dtype=torch.bfloat16 if self.arg.amp == 'bf16' else torch.float16)

    def backward_step(self, loss):
        """zero_grad, backward and step, with loss scaling for fp16."""
        if not hasattr(self, 'scaler'):
            self.scaler = torch.amp.GradScaler(self.dev.type, enabled=self.arg.amp == 'fp16')
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        distributed.average_gradients([p for group in self.optimizer.param_groups for p in group['params']])
        self.scaler.step(self.optimizer)
        self.scaler.update()

    def train_epoch(self, epoch):
        raise NotImplementedError

    def test_epoch(self, epoch, save_result=False):
        raise NotImplementedError

    # ------------------------------------------------------------------ helpers for subclasses
    def iterate(self, loader, desc):
        from torchlight.progress import Progress
        return Progress(loader, desc=desc, enabled=self.arg.progress_bar and self.is_main)   # rank 0 only

    def log_scalars(self, prefix, values, step):
        if not self.is_main:
            return
        writer = self.tensorboard()
        for k, v in values.items():
            writer.add_scalar(f'{prefix}/{k}', v, step)

    def check_finite(self, loss, epoch, iteration):
        if not torch.isfinite(loss):
            latest = os.path.join(self.arg.work_dir, 'latest.pt')
            message = (f'loss is {loss.item()} at epoch {epoch + 1} iteration {iteration}: training stopped; the '
                       f'last good state is {latest if os.path.exists(latest) else "not saved yet"} '
                       '(lower base_lr or check the data)')
            self.print_log(f'ERROR: {message}')
            raise UserError(message)
