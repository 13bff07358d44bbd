"""The generic training processor (torchlight style).

A processor is configured by argparse defaults < the YAML file < the command line
(``processor/arguments.py``), owns the work directory and its checkpoints (``processor/checkpoint.py``),
the data loaders (``processor/data.py``), the device, seeding, optimiser and learning-rate schedule, and
runs ``train``/``test`` for ``phase: train|test`` (this file: the loop).  Subclasses implement
``train_epoch`` and ``test_epoch`` only.
"""
import contextlib
import math
import os
import random
import signal
import sys

import numpy as np
import torch
import yaml

from net.utils.init import family_weights_init
from processor.arguments import COMPILE_MODES, LEGACY_KEYS, Arguments, bool_or_auto
from processor.build import build_model, inference_encoder, stream_views
from processor.checkpoint import Checkpoints, check_label_use, lock_work_dir, resolve_weights, run_files
from processor.data import DataMixin, DeviceLoader, EpochSampler, SeededDataLoader, seed_worker
from processor.evaluation import ScoreReport, check_classifier_config
from processor.metrics import MetricsFile
from processor.verdict import add_verdict
from processor.small_data import advice_line, classifier_advice, command_line, differences
from torchlight import distributed
from torchlight.io import IO, UserError, load_config_file, str2bool

# the pieces of the processor, importable from here as before the split
__all__ = ['Processor', 'every', 'Arguments', 'DataMixin', 'Checkpoints', 'COMPILE_MODES', 'LEGACY_KEYS',
           'bool_or_auto', 'lock_work_dir', 'run_files', 'DeviceLoader', 'EpochSampler', 'SeededDataLoader',
           'seed_worker']


RANDOM_WEIGHTS = 'random'      # --weights random: evaluate an untrained encoder


def untrained_weights(weights):
    """Whether ``--weights`` asks for an untrained encoder (``random``); an empty name or ``null`` given
    on the command line is an error that names the switch (a UserError), never a silent random encoder."""
    if isinstance(weights, str) and weights.strip().lower() in ('', 'null', 'none', '~'):
        raise UserError(f"--weights {weights!r}: names no checkpoint; give a weights file, or --weights "
                        f"{RANDOM_WEIGHTS} to evaluate the untrained (randomly initialised) encoder")
    return isinstance(weights, str) and weights.strip().lower() == RANDOM_WEIGHTS


def pretraining_init(source):
    """``weights_init`` of the pretraining behind ``source`` (a run folder, a checkpoint inside one, or a
    config file): read from the run's ``config.yaml`` or the composed config; None when nothing tells."""
    if not isinstance(source, str) or not os.path.exists(source) or untrained_weights(source):
        return None
    config = source
    if os.path.isdir(source):
        config = os.path.join(source, 'config.yaml')
    elif not source.endswith(('.yaml', '.yml')):
        config = os.path.join(os.path.dirname(os.path.abspath(source)), 'config.yaml')
    if not os.path.isfile(config):
        return None
    value = load_config_file(config).get('weights_init', True)      # absent: the argparse default (the family's)
    return value if isinstance(value, bool) else str2bool(value)


def init_name(family):
    return "the family's init" if family else "PyTorch's init"


def every(count, interval):
    """True every ``interval`` counts; an interval <= 0 means never (the caller adds the last epoch)."""
    return interval > 0 and count % interval == 0


class Processor(Arguments, DataMixin, Checkpoints):
    """Base processor: the loop, with configuration (``Arguments``, processor/arguments.py), data
    (``DataMixin``, processor/data.py) and work_dir/checkpoints (``Checkpoints``, processor/checkpoint.py)."""
    uses_labels = True      # whether training reads the labels (checked against num_class)

    def __init__(self, argv=None, name=None):
        self.name = name            # the registry name it runs under (processor/__init__.py), when known
        self.load_arg(argv)
        self.init_environment()
        self.load_model()
        self.load_weights()
        self.load_data()
        self.load_optimizer()
        self.maybe_resume()
        self.claim_work_dir()

    # ------------------------------------------------------------------ configuration

    def trains(self):
        """Whether this run trains (phase train with an optimizer; kNN evaluation has none)."""
        return self.arg.phase == 'train' and self.optimizer is not None

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
            torch.set_float32_matmul_precision('high' if arg.tf32 else 'highest')
            torch.backends.cudnn.allow_tf32 = arg.tf32
        self.meta_info = dict(epoch=0, iter=0, global_step=0)
        self.best = dict(top1=0.0, epoch=-1)
        self.writer = None
        self.stop_requested = False
        self.stop_signal = None
        self.exit_status = 0                 # 128 + the signal number after a stop signal
        self.metrics = MetricsFile(arg.work_dir, enabled=self.is_main)      # results as data (metrics.jsonl)
        self.report = None           # the protocol's ScoreReport, when it tests class scores
        self.label_use = None        # label_use.json: a pretraining that reads labels, or an evaluation of one
        self.config_notes = []       # comment lines at the head of config.yaml

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
        # CPU results depend on the thread count (the order of float sums): it is logged with the run
        where = f'running on the CPU ({torch.get_num_threads()} threads, torch {torch.__version__})'
        self.print_log(f'Notice: device {list(device)} requested but no GPU found: {where}.'
                       if device else f'No GPU found: {where}.')
        return torch.device('cpu')

    def tensorboard(self):
        if self.writer is None:
            from tensorboardX import SummaryWriter
            # a new event file per run; earlier runs in the folder are kept
            self.writer = SummaryWriter(os.path.join(self.arg.work_dir, 'runs'))
        return self.writer

    # ------------------------------------------------------------------ model and data

    # a protocol that classifies (evaluation, recognition) names itself here; it needs the encoder built
    # for classification (model_args.pretrain: false)
    protocol = None

    @property
    def encoder(self):
        """The encoder that classifies: a pretraining method's query encoder, or the model itself."""
        return inference_encoder(self.model)

    def inputs(self, raw, feeder):
        """The encoder's input from a raw batch: the feeder's first view in its stream, on the device."""
        return stream_views(feeder, raw.to(self.dev, non_blocking=True))[0]

    def load_model(self):
        if self.protocol is not None:
            check_classifier_config(self.arg, self.protocol)
        self.model = build_model(vars(self.arg))
        self.resolve_untrained_init()
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

    def resolve_untrained_init(self):
        """``--weights random``: the untrained encoder is the one its pretraining started from, so it takes
        the ``weights_init`` of that pretraining (``init_of``, else the run of the config's own ``weights``
        checkpoint) unless ``--weights_init`` is given on the command line; ``self.untrained_init`` says
        which init it is and where it came from (None for learned weights)."""
        self.untrained_init = None
        if not untrained_weights(self.arg.weights):
            return
        source = self.arg.init_of or self.config_weights
        found = pretraining_init(source)
        if self.arg.init_of and found is None:
            raise UserError(f"init_of '{self.arg.init_of}': no pretraining config found (give the pretraining's run "
                            'folder, a checkpoint beside its config.yaml, or its config file)')
        chosen = self.arg.weights_init
        if found is not None and 'weights_init' not in self.command_line_keys:
            chosen = self.arg.weights_init = found
        if found is None:
            origin = "the evaluation config's weights_init (the pretraining's init is unknown: give --init_of)"
        elif chosen == found:
            origin = f"the init its pretraining started from ({source})"
        else:
            origin = f"NOT the init its pretraining started from ({source}: {init_name(found)}; --weights_init)"
        self.untrained_init = {'weights_init': bool(chosen), 'pretraining_init': found, 'source': source,
                               'note': f'{init_name(chosen)}, {origin}'}
    def advise_size(self, num_samples):
        """A classifier's batch for this training set (processor/small_data.py), said before the size checks."""
        return self.say_size_advice('classifier', num_samples,
                                    classifier_advice(num_samples, self.config_values['batch_size']),
                                    {'batch_size': self.arg.batch_size})

    def say_size_advice(self, kind, num_samples, advice, current, extra=''):
        """One line with the advice for this set, one with the keys this run sets otherwise (and the options
        that follow it); -> the advice."""
        if not advice:
            return advice
        self.print_log('Notice: ' + advice_line(kind, num_samples, advice) + (f'; {extra}' if extra else ''))
        differ = differences(advice, current)
        if differ:
            self.print_log('Notice: this run differs from the size advice in '
                           + ', '.join(f'{k} {mine if mine is not None else "unset"} (advised {value:g})'
                                       for k, (value, mine) in differ.items())
                           + f'; to follow it: {command_line({k: advice[k] for k in differ})}')
        return advice

    def load_weights(self):
        if untrained_weights(self.arg.weights):
            self.print_log(f"Weights: random (--weights random): no checkpoint is loaded; the encoder keeps "
                           f"{self.untrained_init['note']}, seed {self.arg.seed}: an untrained baseline")
            return
        if not self.arg.weights and self.protocol in ('linear_evaluation', 'knn_evaluation'):
            self.print_log('Notice: no --weights given: the frozen encoder is untrained (say --weights random '
                           'to mean it, or give the pretraining checkpoint)')
        if self.arg.weights:
            found = resolve_weights(self.arg.weights)
            if found != self.arg.weights:
                self.print_log(f"Weights: '{self.arg.weights}' is a pretraining work_dir: its last epoch's checkpoint "
                               f"'{found}'")
                self.arg.weights = found
            graphs = {k: v.detach().clone() for k, v in self.model.state_dict().items() if k.split('.')[-1] == 'A'}
            self.io.load_weights(self.model, self.arg.weights, self.arg.ignore_weights)
            check_label_use(self)
            own = self.model.state_dict()
            changed = [k for k, v in graphs.items() if not torch.equal(own[k].cpu(), v.cpu())]
            if changed:
                layout = self.model_layout()
                self.print_log(f"Notice: the graph buffer '{changed[0]}' of '{self.arg.weights}' differs from the "
                               f"graph of this config's layout{f' {layout.name!r}' if layout else ''} "
                               "(model_args.graph_args): the checkpoint's adjacency replaces it; the weights were "
                               'trained with another layout or strategy (use the layout of the pretraining run)')

    def load_optimizer(self):
        self.scaler = torch.amp.GradScaler(self.dev.type, enabled=self.arg.amp == 'fp16')     # fp16 loss scaling
        self.grad_clip = 0.0         # > 0: clip the total gradient norm (recognition's clip_grad_norm)
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
            if torch.is_tensor(group['lr']):           # a captured step's (processor/train_step.py)
                group['lr'].fill_(self.lr)
            else:
                group['lr'] = self.lr
        return self.lr

    # ------------------------------------------------------------------ checkpoints and resume

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
            self.metrics_started(self.metrics.start(self.start_epoch if self.resumed else None))
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
            self.report_result()
            self.finish()
        else:
            if not self.arg.weights:
                raise UserError('phase test needs --weights (e.g. work_dir/.../best_model.pt, or random)')
            if 'test' not in self.data_loader:
                raise UserError('phase test needs test_feeder_args with data_path and label_path')
            self.test_epoch(0, save_result=True)

    def metrics_started(self, records):
        """After ``metrics.jsonl`` was started (``records``: the lines a resumed run keeps); pretraining adds
        the kNN monitor of the initial encoder and replays its learning monitor here."""

    def stopped(self, epoch):
        """After a stop signal: say where the run stands; ``exit_status`` is 128 + the signal number."""
        signum = self.stop_signal or signal.SIGTERM
        self.exit_status = 128 + int(signum)
        message = (f'Stopped by signal {int(signum)} during epoch {epoch + 1}; `--resume true` restarts that epoch '
                   f'from {os.path.join(self.arg.work_dir, "latest.pt")}.')
        self.print_log(message)
        if self.is_main:
            print(f'error: {message}', file=sys.stderr, flush=True)
        self.finish()

    # the protocols whose result.json carries the verdict of the pretrained weights (processor/verdict.py)
    VERDICT_PROTOCOLS = ('linear_evaluation', 'knn_evaluation', 'finetune_evaluation')

    def report_result(self):
        """After a complete training run that tested: its closing line and ``result.json`` (with the verdict
        of an evaluation of pretrained weights)."""
        result = self.report.result() if self.report is not None else None
        if result and self.is_main:
            self.print_log(ScoreReport.summary(result))
            if self.protocol in self.VERDICT_PROTOCOLS:
                result = add_verdict(self, result)
            self.io.save_json(result, 'result.json')

    def primary_top1(self, outcome=None):
        """The run's top-1 (percent) at its last evaluated epoch, None before any test."""
        result = self.report.result() if self.report is not None else None
        return result and result['top1_last']

    def finish(self):
        if self.writer is not None:
            self.writer.close()

    def autocast(self):
        """The forward-pass precision context of ``amp`` (a no-op for 'none')."""
        if self.arg.amp == 'none':
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.dev.type, dtype=torch.bfloat16 if self.arg.amp == 'bf16' else torch.float16)

    def backward_step(self, loss):
        """zero_grad, backward and step, with loss scaling for fp16; ``grad_clip`` > 0 clips the total
        gradient norm (of the unscaled gradients) first."""
        params = [p for group in self.optimizer.param_groups for p in group['params']]
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        distributed.average_gradients(params)
        if self.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(params, self.grad_clip)
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
            self.non_finite_loss(loss.item(), epoch, iteration)

    def check_step_scalars(self, scalars, epoch):
        """``check_finite`` for the steps summed on the device (``processor.step_scalars.StepScalars``)."""
        bad = scalars.first_non_finite()
        if bad is not None:
            self.non_finite_loss(bad[1], epoch, bad[0])

    def non_finite_loss(self, value, epoch, iteration):
        latest = os.path.join(self.arg.work_dir, 'latest.pt')
        message = (f'loss is {value} at epoch {epoch + 1} iteration {iteration}: training stopped; the '
                   f'last good state is {latest if os.path.exists(latest) else "not saved yet"} '
                   '(lower base_lr or check the data)')
        self.print_log(f'ERROR: {message}')
        raise UserError(message)
