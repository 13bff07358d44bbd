"""The schema of every setting: the type, range or choices of each processor option and of each key of
the ``*_args`` dictionaries (``model_args`` with its encoder's and ``graph_args``'s keys,
``train_feeder_args`` / ``test_feeder_args``, ``train_head_args``), checked before anything is built,
with the closest valid value in the one-line error.

A key is looked up by its name (``rules()``; the same name means the same thing in every class that takes
it).  ``tests/test_schema.py`` asserts that every ``__init__`` argument of every method, encoder, head
and feeder, and every numeric processor option, has a rule here, and that every shipped config passes."""
import difflib
import functools
import inspect
import math
import numbers

from feeder.tools import STREAMS
from torchlight.io import UserError, closest_keys, import_class


class Rule:
    """A value rule: ``kind`` in int | float | bool | str | enum | path | list | dict | layout | any;
    ``low``/``high`` bounds (``open_low``/``open_high`` exclude them); ``choices`` for enum;
    ``item`` the rule of list items; ``none``: None allowed; ``why`` says what ``any`` leaves to the class."""

    def __init__(self, kind, low=None, high=None, choices=None, item=None, none=False, open_low=False,
                 open_high=False, why=''):
        self.kind, self.low, self.high, self.choices, self.item = kind, low, high, choices, item
        self.none, self.open_low, self.open_high, self.why = none, open_low, open_high, why

    def describe(self):
        if self.kind == 'enum':
            text = 'one of ' + ', '.join(map(repr, self.choices))
        elif self.kind == 'int' and self.low == 1 and self.high is None and not self.open_low:
            text = 'a positive integer'
        elif self.kind in ('int', 'float') and self.low is not None and self.high is not None:
            text = (f"{'an integer' if self.kind == 'int' else 'a number'} in "
                    f"{'(' if self.open_low else '['}{self.low}, {self.high}{')' if self.open_high else ']'}")
        elif self.kind in ('int', 'float'):
            text = 'an integer' if self.kind == 'int' else 'a finite number'
            if self.low is not None:
                text += f" {'>' if self.open_low else '>='} {self.low}"
            if self.high is not None:
                text += f"{' and' if self.low is not None else ''} {'<' if self.open_high else '<='} {self.high}"
        elif self.kind == 'list':
            text = f'a list of {self.item.describe()}' if self.item else 'a list'
        else:
            text = {'bool': 'true or false', 'str': 'a string', 'path': 'a file path (a string)',
                    'dict': 'a mapping', 'layout': 'a layout name, a layout file path or a mapping',
                    'any': 'any value'}[self.kind]
        return text + (' or null' if self.none else '')

    def closest(self, value):
        """The valid value nearest to ``value`` (None when there is no obvious one)."""
        try:
            if self.kind == 'enum':
                match = difflib.get_close_matches(str(value), [str(c) for c in self.choices], n=1, cutoff=0)
                return next(c for c in self.choices if str(c) == match[0]) if match else self.choices[0]
            if self.kind in ('int', 'float'):
                x = float(value)
                if not math.isfinite(x):
                    x = self.low if self.low is not None else (self.high if self.high is not None else 0)
                if self.low is not None and (x < self.low or (self.open_low and x <= self.low)):
                    x = self.low + (1 if self.kind == 'int' else 1e-3) * self.open_low
                if self.high is not None and (x > self.high or (self.open_high and x >= self.high)):
                    x = self.high - (1 if self.kind == 'int' else 1e-3) * self.open_high
                return int(round(x)) if self.kind == 'int' else x
            if self.kind == 'bool':
                return bool(value) if isinstance(value, (int, float)) else True
        except (TypeError, ValueError, OverflowError):
            return None
        return None

    def problem(self, value):
        """None when ``value`` fits, else what is wrong (a short phrase)."""
        if value is None:
            return None if self.none or self.kind == 'any' else 'null is not allowed'
        kind = self.kind
        if kind == 'any':
            return None
        if kind == 'bool':
            return None if isinstance(value, bool) else 'not a boolean'
        if kind == 'int':
            if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                if isinstance(value, float) and value.is_integer():
                    value = int(value)
                else:
                    return 'not an integer'
            return self._range(value)
        if kind == 'float':
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                return 'not a number'
            if not math.isfinite(float(value)):
                return 'not finite'
            return self._range(float(value))
        if kind == 'enum':
            return None if any(value == c and type(value) is type(c) for c in self.choices) else 'not a valid choice'
        if kind in ('str', 'path'):
            return None if isinstance(value, str) and (kind == 'str' or value) else 'not a string'
        if kind == 'dict':
            return None if isinstance(value, dict) else 'not a mapping'
        if kind == 'layout':
            return None if isinstance(value, (str, dict)) and value else 'not a layout name, file or mapping'
        if kind == 'list':
            items = value if isinstance(value, (list, tuple)) else None
            if items is None:
                return 'not a list'
            if self.item is not None:
                for i, item in enumerate(items):
                    bad = self.item.problem(item)
                    if bad:
                        return f'item {i} ({item!r}) is {bad}'
            return None
        raise AssertionError(kind)

    def _range(self, x):
        if self.low is not None and (x < self.low or (self.open_low and x == self.low)):
            return 'too small'
        if self.high is not None and (x > self.high or (self.open_high and x == self.high)):
            return 'too large'
        return None


def Int(low=None, high=None, **kw):
    return Rule('int', low, high, **kw)


def Float(low=None, high=None, **kw):
    return Rule('float', low, high, **kw)


def Enum(*choices, **kw):
    return Rule('enum', choices=choices, **kw)


def ListOf(item=None, **kw):
    return Rule('list', item=item, **kw)


BOOL, STR, PATH, DICT = Rule('bool'), Rule('str'), Rule('path'), Rule('dict')
PROB = Float(0, 1)
POSITIVE_INT = Int(1)


def Any(why):
    return Rule('any', why=why)


# ------------------------------------------------------------------------------------------------ keys
# of model_args (methods, encoders), graph_args, train_head_args and the feeders' *_feeder_args; the enums
# are the classes' own tuples of choices

@functools.lru_cache(maxsize=None)
def rules():
    """{key: Rule} (built on first use: it imports the classes' tuples of choices)."""
    from feeder.ntu_feeder import Feeder_supervised
    from net.csre import CHOICES, STRATEGIES as CSRE_STRATEGIES
    from net.frest import DECOUPLINGS
    from net.mica import BASE_METHODS, FM_EMBEDDINGS, FM_OBJECTIVES, FM_TARGETS, PART_HEADS
    from net.msm_attention import DIFF_MODES
    from net.msmclr import MS_LOSSES
    from net.st_gcn import Model as STGCN
    from net.text_features import ENCODERS
    from net.utils.graph import STRATEGIES
    return {
        # MoCo family (net/moco.py and its methods)
        'base_encoder': Rule('str', none=True), 'pretrain': BOOL, 'feature_dim': Int(1, none=True),
        'queue_size': POSITIVE_INT, 'momentum': Float(0, 1, open_high=True), 'Temperature': Float(0, open_low=True),
        'mlp': BOOL, 'head_bn': Enum(False, True, 'hidden', none=True), 'shuffle_bn_groups': POSITIVE_INT,
        'mining_epoch': Int(0), 'topk': POSITIVE_INT, 'infonce_warmup_epochs': Int(0),
        'divergence_ramp_epochs': Int(0),
        'swap_cfg': Rule('dict', none=True), 'sigma': Any("the SkeleMixCLR reference's unused argument"),
        'keep_prob': Float(0, 1, open_low=True),
        'ms_loss': Enum(*MS_LOSSES), 'msm_attention': BOOL, 'multi_scale': BOOL, 'diff_mode': Enum(*DIFF_MODES),
        'reduction': POSITIVE_INT,
        # MICA (net/mica.py, net/frest.py)
        'base_method': Enum(*BASE_METHODS), 'adaptive_mask': BOOL, 'decoupling': Enum(*DECOUPLINGS), 'descriptions': Rule('path', none=True),
        'feature_modulation': BOOL, 'filter_std': Float(0), 'fm_embedding': Enum(*FM_EMBEDDINGS),
        'fm_objective': Enum(*FM_OBJECTIVES), 'fm_target': Enum(*FM_TARGETS),
        'fres': BOOL, 'fret': BOOL, 'frest': BOOL, 'global_filter': BOOL, 'local_filter': BOOL,
        'harmonizer': BOOL, 'harmonizer_heads': POSITIVE_INT, 'harmonizer_width': Int(1, none=True),
        'part_head': Enum(*PART_HEADS), 'label_smoothing': Float(0, 1, open_high=True),
        'lambda_kl': Float(0), 'noise_std': Float(0), 'num_frames': Int(1, none=True),
        'prompts': ListOf(STR), 'tau_f': Float(0, open_low=True), 'tau_s': Float(0, open_low=True),
        'tau_t': Float(0, open_low=True), 'text_encoder': Enum(*ENCODERS),
        'text_features': Rule('path', none=True),
        # encoders (net/st_gcn.py, agcn, ctrgcn, blockgcn, hcn, hyperformer)
        'in_channels': POSITIVE_INT, 'hidden_channels': POSITIVE_INT, 'hidden_dim': POSITIVE_INT,
        'num_class': Int(1, none=True), 'dropout': Float(0, 1, open_high=True),
        'drop_out': Float(0, 1, open_high=True), 'graph_args': Rule('dict', none=True),
        'edge_importance_weighting': BOOL, 'implementation': Enum(*STGCN.IMPLEMENTATIONS),
        'checkpoint_blocks': BOOL,
        'num_person': POSITIVE_INT, 'base_channel': POSITIVE_INT, 'adaptive': BOOL,
        'dilations': ListOf(POSITIVE_INT), 'kernel_size': POSITIVE_INT, 'topology': BOOL,
        'window_size': POSITIVE_INT, 'out_channel': POSITIVE_INT, 'conv2_channel': Int(1, none=True),
        'fc_hidden': POSITIVE_INT, 'head_channels': POSITIVE_INT, 'num_heads': POSITIVE_INT,
        'joint_label': ListOf(Int(0), none=True),
        'unit': Any('the block class: set by each encoder, not a config key'),
        'bn_channels': Any('set by each encoder from num_person and in_channels, not a config key'),
        # graph_args (net/utils/graph.py); a layout's fields are checked by net/utils/layouts.py
        'layout': Rule('layout', none=True), 'strategy': Enum(*STRATEGIES), 'max_hop': POSITIVE_INT,
        'dilation': POSITIVE_INT,
        # CSRE head (net/csre.py, train_head_args)
        'embed_dim': POSITIVE_INT, 'temperature': Float(0, open_low=True), 'loss_weight': Float(0),
        'num_positives': POSITIVE_INT, 'num_hard_negatives': Int(0), 'num_random_negatives': Int(0),
        'bank_capacity': Int(1, none=True), 'bank_copies': POSITIVE_INT, 'bank_update': Enum(*CHOICES['bank_update']),
        'branch_reduction': Enum(*CHOICES['branch_reduction']), 'global_contrast': BOOL, 'spatial': BOOL,
        'temporal': BOOL, 'min_candidates': Enum(*CHOICES['min_candidates']),
        'negative_sampling': Enum(*CSRE_STRATEGIES), 'negative_softmax': Enum(*CHOICES['negative_softmax']),
        'positive_sampling': Enum(*CSRE_STRATEGIES), 'persistent_banks': BOOL, 'num_samples': Int(1, none=True),
        'channels': POSITIVE_INT, 'num_node': POSITIVE_INT,
        # feeders (feeder/ntu_feeder.py)
        'data_path': PATH, 'label_path': PATH, 'sample_list': Rule('path', none=True), 'shear_amplitude': Float(),
        'temperal_padding_ratio': Int(),
        'mmap': BOOL, 'check_finite': BOOL, 'debug': BOOL, 'jitter_std': Float(0),
        'normal_extra_aug': Any('a name or a list of names: checked by the feeder against NORMAL_EXTRA'),
        'aug_method': Any('a string of digits or a list of op names: checked by Feeder_triple'),
        'joint_noise_joints': Int(0), 'joint_noise_range': Enum('original', 'view'), 'joint_noise_scale': Float(0),
        'p_interval': Any('one or two ratios in (0, 1]: checked by Feeder_supervised'),
        'random_rot': BOOL, 'rot_theta': Float(0), 'sampling': Enum(*Feeder_supervised.SAMPLINGS),
        'ucla_train': BOOL, 'random_view': BOOL, 'repeat': POSITIVE_INT,
        'label_percent': Float(0, 1, open_low=True), 'semi_seed': Int(0),
        'batch_augment': BOOL, 'stream': Enum(*STREAMS),      # modes the processor passes to the feeder
    }


# ------------------------------------------------------------------------------------------------ processor options
# every numeric processor option (enums are the parsers' own ``choices``)
PROCESSOR_RULES = {
    'num_epoch': Int(0), 'device': ListOf(Int(0)), 'seed': Int(0, 2 ** 32 - 1),
    'log_interval': POSITIVE_INT, 'save_interval': Int(), 'eval_interval': Int(),
    'num_worker': Int(0), 'batch_size': POSITIVE_INT, 'test_batch_size': POSITIVE_INT,
    'show_topk': ListOf(POSITIVE_INT), 'base_lr': Float(0), 'step': ListOf(Int(0)), 'lr_decay_rate': Float(0, open_low=True),
    'warm_up_epoch': Int(0), 'momentum': Float(0, 1, open_high=True), 'weight_decay': Float(0),
    'mining_epoch': Int(0, none=True), 'topk': Int(1, none=True),
    'knn_k': ListOf(POSITIVE_INT), 'knn_temperature': Float(0, open_low=True), 'knn_interval': Int(0),
    'collapse_margin': Float(0), 'collapse_patience': POSITIVE_INT, 'cone_std': Float(0), 'cone_epochs': Int(0),
    'label_smoothing': Float(0, 1, open_high=True), 'clip_grad_norm': Float(0),
}


GRAPH_KEYS = ('layout', 'strategy', 'max_hop', 'dilation')


def rule_for(key):
    return rules().get(key)


def check_value(name, value, rule):
    """``name`` (e.g. ``model_args.queue_size`` or ``key 'num_epoch' (from x.yaml)``) against ``rule``."""
    bad = rule.problem(value)
    if bad:
        closest = rule.closest(value) if rule.kind != 'list' else None
        hint = f'; closest valid value: {closest!r}' if closest is not None else ''
        raise UserError(f"{name} must be {rule.describe()}, got {value!r} ({bad}){hint}")


# keys that a class reads from its **kwargs (passes on to its blocks); a class with **kwargs that is not
# listed here takes any key (its blocks check them)
FORWARDED_KEYS = {'net.st_gcn.Model': ('dropout',)}


def init_arguments(klass):
    """(names of the keyword arguments of ``klass``'s ``__init__`` chain, whether it takes any other key)."""
    names, open_ended = [], False
    for k in getattr(klass, '__mro__', [klass]):
        init = k.__dict__.get('__init__')
        if init is None or k is object or k.__module__.split('.')[0] == 'torch':
            continue
        try:
            params = inspect.signature(init).parameters.items()
        except (TypeError, ValueError):
            continue
        forwarded = FORWARDED_KEYS.get(f'{k.__module__}.{k.__name__}')
        for n, q in params:
            if q.kind == q.VAR_KEYWORD and forwarded is None:
                open_ended = True
            elif q.kind not in (q.VAR_POSITIONAL, q.VAR_KEYWORD) and n != 'self' and n not in names:
                names.append(n)
        names += [n for n in forwarded or () if n not in names]
    return names, open_ended


def accepted_keys(klass, args):
    """The keys ``klass(**args)`` reads: its own, and for a method those of its ``base_encoder`` (a
    method passes its other keys to the encoder)."""
    names, open_ended = init_arguments(klass)
    if 'base_encoder' in names:
        encoder = args.get('base_encoder') or inspect.signature(klass).parameters['base_encoder'].default
        if isinstance(encoder, str) and encoder:
            enc_names, open_ended = init_arguments(import_class(encoder))
            names += [n for n in enc_names if n not in names]
    return names, open_ended


def check_args(klass, args, where, source=''):
    """Every key of ``args`` (the arguments of ``klass``, the ``where`` of a config named by ``source``)
    against its rule; an unknown key is an error unless the class passes unknown keys on (``**kwargs``
    without an encoder)."""
    if not isinstance(args, dict):
        raise UserError(f'{where}{source} must be a mapping of keys to values, got {args!r}')
    names, open_ended = accepted_keys(klass, args)
    for key, value in args.items():
        if not isinstance(key, str):
            raise UserError(f'{where}{source}: key {key!r} is not a string (write it as a name)')
        if key not in names and names and not open_ended:
            raise UserError(f"{where}{source}: unknown key '{key}' of {klass.__name__}; closest valid keys: "
                            f"{closest_keys(key, names)}")
        rule = rule_for(key)
        if rule is not None:
            check_value(f'{where}.{key}{source}', value, rule)
        if key == 'graph_args' and isinstance(value, dict):
            for k, v in value.items():
                if k not in GRAPH_KEYS:
                    raise UserError(f"{where}.graph_args{source}: unknown key {k!r}; closest valid keys: "
                                    f"{closest_keys(str(k), GRAPH_KEYS)}")
                check_value(f'{where}.graph_args.{k}{source}', v, rules()[k])


def check_processor_values(arg, parser, where):
    """Every processor option with a rule in ``PROCESSOR_RULES`` (its final value)."""
    for action in parser._actions:
        rule = PROCESSOR_RULES.get(action.dest)
        if rule is not None and hasattr(arg, action.dest):
            check_value(f"key '{action.dest}'{where}", getattr(arg, action.dest), rule)


def check_config(arg, where=''):
    """The ``*_args`` dictionaries of a parsed processor configuration, before anything is built."""
    model = getattr(arg, 'model', None)
    if model:
        check_args(import_class(model), dict(getattr(arg, 'model_args', None) or {}), 'model_args', where)
    for split in ('train', 'test'):
        args = getattr(arg, f'{split}_feeder_args', None)
        name = getattr(arg, f'{split}_feeder', None)
        if args and name:
            check_args(import_class(name), dict(args), f'{split}_feeder_args', where)
    head = getattr(arg, 'train_head', None)
    if head:
        check_args(import_class(head), dict(getattr(arg, 'train_head_args', None) or {}), 'train_head_args', where)
