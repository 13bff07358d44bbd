"""The processor's configuration: argparse defaults < the YAML file (its ``base:`` files merged under
it) < the command line, each value checked against its type, choices and range with a one-line error."""
import argparse

import numpy as np

from feeder.tools import STREAMS
from processor import schema
from processor.build import load_config
from torchlight.io import DictAction, UserError, closest_keys, str2bool

# Keys of the reference code bases that this project accepts and ignores.
LEGACY_KEYS = {
    'pavi_log': 'PAVI logging does not exist here; tensorboard scalars go to work_dir/runs',
    'use_gpu': 'the device is chosen by `device` (CPU when no GPU is present)',
    'context': 'CrosSCLR cross-view context is not part of this project',
    'cross_epoch': 'CrosSCLR cross-view training is not part of this project',
    'start_epoch': 'use --resume to continue a stopped run (latest.pt holds the epoch)',
}

COMPILE_MODES = ['none', 'default', 'reduce-overhead', 'max-autotune']


def bool_or_auto(value):
    """true / false / auto (``resume``, ``data_on_device``)."""
    if isinstance(value, str) and value.lower() == 'auto':
        return 'auto'
    return str2bool(value)


class Arguments:
    """Part of ``Processor``: ``load_arg`` builds ``self.arg``; subclasses extend ``get_parser``."""

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
            self.config_weights = default_arg.get('weights')
        else:
            self.ignored_keys = []
            self.config_weights = None
        # the keys given on the command line (their values win over every file)
        self.command_line_keys = {a[2:].split('=')[0] for a in (argv or []) if isinstance(a, str) and a.startswith('--')}
        # the config's own values (its base: files merged, before the command line): the reference of the
        # size advice (processor/small_data.py)
        self.config_values = {k: parser.get_default(k) for k in ('batch_size', 'base_lr')}
        self.arg = parse(argv)
        if self.arg.view is not None:        # CrosSCLR's name for the stream
            self.arg.stream = self.arg.view
        if self.arg.stream not in STREAMS:
            raise UserError(f"stream/view '{self.arg.stream}' is unknown; use one of {', '.join(STREAMS)}")
        self.check_values(parser, p.config)

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
        schema.check_processor_values(arg, parser, where)
        schema.check_config(arg, where)

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
        parser.add_argument('--tf32', type=str2bool, default=True,
                            help='on CUDA, float32 matmuls and convolutions in TF32 (10-bit mantissa inputs, float32 '
                                 'accumulation; docs/PERFORMANCE.md); false: full float32')
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
        parser.add_argument('--weights', default=None,
                            help="initial weights (a state dict file); 'random': load nothing, evaluate the "
                                 'untrained encoder (the baseline a learned one must beat, under the same protocol)')
        parser.add_argument('--init_of', default=None,
                            help="with --weights random: the pretraining (its run folder, a checkpoint in it, or its "
                                 "config file) whose initialisation (weights_init) the untrained encoder takes; "
                                 "default: the run of the config's own 'weights' checkpoint")
        parser.add_argument('--verdict', type=str2bool, default=True,
                            help='an evaluation of pretrained weights ends with the verdict: the untrained encoder it '
                                 'started from under the same probe and seed (run once, cached) and the ridge floor')
        parser.add_argument('--verdict_cache', default='work_dir/verdict_cache',
                            help="the verdict's cache of untrained runs and floors (shared by runs)")
        parser.add_argument('--ignore_weights', type=str, default=[], nargs='+',
                            help='key prefixes dropped from the initial weights')
        parser.add_argument('--allow_label_pretraining', type=str2bool, default=False,
                            help='run a semi-supervised evaluation of weights whose pretraining read the training '
                                 'labels (MICA fm_target: text / label); recorded in the log and label_use.json')
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
        parser.add_argument('--mining_epoch', type=int, default=None,
                            help="the AimCLR reference's key: mapped to model_args.mining_epoch of the methods "
                                 "that mine (AimCLR, MsMCLR)")
        parser.add_argument('--topk', type=int, default=None,
                            help="the AimCLR reference's key: mapped to model_args.topk (mined positives)")
        return parser
