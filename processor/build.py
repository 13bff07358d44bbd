"""The one builder of the processors and the tools: a config file -> its model, its feeders, features.

* ``load_config(path, overrides)``: the YAML with its ``base:`` files merged under it (``torchlight.io.
  load_config_file``), then ``overrides`` deep-merged over it.
* ``build_model(cfg, for_inference)``: ``model`` built from ``model_args``; ``for_inference`` builds the
  contrastive wrappers (``net.moco.MoCo`` subclasses) with ``pretrain: False``, i.e. ``encoder_q`` with its
  classifier only (the model that linear evaluation, ``tools/complexity.py`` and ``tools/tsne.py`` use).
* ``build_feeder(cfg, split, augment, stream)``: the split's feeder, its arguments checked against the
  feeder class; ``augment=False`` gives the split's data with the test feeder's (non-augmenting)
  preprocessing. The stream lives with the feeder: ``stream_views(feeder, batch)`` returns the augmented views
  in the feeder's stream (bone and motion computed on the device batch after augmentation, the AimCLR
  processor's order).
* ``extract_features(model, loader)``: ``forward_features`` of the inference encoder (``eval()`` mode) over
  a loader of raw ``(data, label, index)`` batches.

Nothing here writes files or logs; the processors add their checks (data magnitude, input shape) and
their loaders (sampler, device-resident data).
"""
import inspect
import re

import torch

from feeder.tools import to_stream
from torchlight.io import UserError, closest_keys, deep_update, import_class, load_config_file

DEFAULT_FEEDER = 'feeder.ntu_feeder.Feeder_single'
NO_AUGMENTATION = {'shear_amplitude': -1, 'temperal_padding_ratio': -1, 'random_rot': False}


# ------------------------------------------------------------------------------------------------ config

def load_config(path, overrides=None):
    """The merged config dict of ``path`` (``base:`` resolved), with ``overrides`` deep-merged over it."""
    cfg = load_config_file(path)
    return deep_update(cfg, overrides) if overrides else cfg


def config_stream(cfg):
    """The stream of a config: CrosSCLR's ``view`` if given, else ``stream``, else joint."""
    return cfg.get('view') or cfg.get('stream') or 'joint'


# ------------------------------------------------------------------------------------------------ model

def is_contrastive(model_class):
    from net.method import PretrainingMethod
    return isinstance(model_class, type) and issubclass(model_class, PretrainingMethod)


def build_model(cfg, for_inference=False):
    """The config's ``model`` built from ``model_args`` (not initialised, not on a device)."""
    name = cfg.get('model')
    if not name:
        raise UserError('no model given: set `model:` in the config (e.g. net.skeletonclr.SkeletonCLR)')
    model_class = import_class(name)
    args = dict(cfg.get('model_args') or {})
    if for_inference and is_contrastive(model_class):
        args['pretrain'] = False
    from net.method import PretrainingMethod
    from net.utils.encoder import SkeletonEncoder
    if not (isinstance(model_class, type) and issubclass(model_class, (PretrainingMethod, SkeletonEncoder))):
        raise UserError(f"model '{name}' is neither a method (net.method.PretrainingMethod, e.g. a net.moco.MoCo "
                        'subclass) nor an encoder (net.utils.encoder.SkeletonEncoder): see docs/EXTENDING.md')
    from processor.schema import check_args
    check_args(model_class, args, 'model_args')
    try:
        return model_class(**args)
    except TypeError as e:
        raise UserError(f'model_args do not fit {name}: {e}{key_hint(model_class, str(e))}') from e


WIDTH_KEYS = ('hidden_channels', 'base_channel', 'out_channel', 'head_channels')   # the encoders' width keys


def model_keys(model_class):
    """The named constructor arguments of a model class (what ``model_args`` may hold)."""
    params = inspect.signature(model_class.__init__).parameters.values()
    return [p.name for p in params if p.name != 'self' and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]


def key_hint(model_class, message):
    """For 'unexpected keyword argument X': the closest valid key, the class's width key and its keys."""
    match = re.search(r"unexpected keyword argument '(\w+)'", message)
    if not match:
        return ''
    keys = model_keys(model_class)
    width = next((k for k in WIDTH_KEYS if k in keys), None)
    hint = (f'the width key of this encoder is {width}' if match.group(1) in WIDTH_KEYS and width
            else f'closest valid key: {closest_keys(match.group(1), keys)}')
    return f" ({hint}; its keys: {', '.join(keys)}; each encoder's keys: docs/DATA.md, step 7)"


def inference_encoder(model):
    """The encoder that classifies (``classifier``: a method's ``encoder_q``, an encoder itself)."""
    return model.classifier


def model_layout(model):
    """The skeleton layout of the model's encoder (``model_args.graph_args.layout``)."""
    return model.classifier.layout


# ------------------------------------------------------------------------------------------------ feeders

def feeder_spec(cfg, split, augment=True):
    """(feeder import string, arguments) of ``split``. ``augment``: the split's own feeder and arguments;
    otherwise the split's data with the test feeder's preprocessing (the training feeder's with every
    augmentation off where the config has no test feeder)."""
    split_args = dict(cfg.get(f'{split}_feeder_args') or {})
    if augment:
        return cfg.get(f'{split}_feeder') or DEFAULT_FEEDER, split_args
    test_args = cfg.get('test_feeder_args') or {}
    if test_args:
        name, args = cfg.get('test_feeder') or DEFAULT_FEEDER, dict(test_args)
    else:
        name, args = cfg.get('train_feeder') or DEFAULT_FEEDER, dict(split_args)
        args.update(NO_AUGMENTATION)
        if 'p_interval' in args:
            args['p_interval'] = [0.95]
    for key in ('data_path', 'label_path'):
        if key in split_args:
            args[key] = split_args[key]
    return name, args


def feeder_arguments(feeder_class):
    """The keyword arguments the feeder class's ``__init__`` methods name (empty: it takes anything)."""
    known = set()
    for klass in getattr(feeder_class, '__mro__', [feeder_class]):
        init = klass.__dict__.get('__init__')
        if init is not None:
            known.update(n for n, q in inspect.signature(init).parameters.items()
                         if q.kind not in (q.VAR_KEYWORD, q.VAR_POSITIONAL) and n != 'self')
    return known


def check_feeder_args(name, args, split):
    """(feeder class, its known arguments); an unknown key or missing data paths are a UserError."""
    feeder_class = import_class(name)
    if 'data_path' not in args or 'label_path' not in args:
        raise UserError(f'{split}_feeder_args needs data_path and label_path')
    known = feeder_arguments(feeder_class)
    unknown = [k for k in args if known and k not in known]
    if unknown:
        raise UserError(f"unknown key '{unknown[0]}' in {split}_feeder_args of {name}; closest valid keys: "
                        f"{closest_keys(unknown[0], known)}")
    from processor.schema import check_args
    check_args(feeder_class, args, f'{split}_feeder_args')
    return feeder_class, known


def build_feeder(cfg, split, augment=True, stream=None, layout=None, uses_labels=True, batch_augment=False,
                 **overrides):
    """The feeder of ``split`` ('train' | 'test') of ``cfg`` in ``stream`` (default: the config's);
    ``batch_augment``: items are raw ``(data, label, index)`` and ``feeder.views`` augments a batch.

    ``layout``: the model's skeleton layout (``model_layout``), which a feeder with a ``layout`` argument
    takes (a different ``<split>_feeder_args.layout`` is an error); ``uses_labels``: labels are checked
    against ``model_args.num_class``; ``overrides``: feeder arguments set over the config's."""
    from feeder.ntu_feeder import resolve_layout
    name, args = feeder_spec(cfg, split, augment)
    args.update(overrides)
    num_class = (cfg.get('model_args') or {}).get('num_class')
    if uses_labels and num_class is not None:
        args.setdefault('num_class', num_class)        # labels >= num_class are an error
    if cfg.get('debug'):
        args['debug'] = True
    feeder_class, known = check_feeder_args(name, args, split)
    if 'layout' in known:             # one layout for feeder and model: the feeder takes the model's
        args['layout'] = resolve_layout(args.get('layout'), layout, split)
    try:
        return feeder_class(**args, batch_augment=batch_augment,
                            stream=config_stream(cfg) if stream is None else stream)
    except TypeError as e:
        raise UserError(f'{split}_feeder_args do not fit {name}: {e}') from e


def stream_views(feeder, batch):
    """The feeder's augmented views of a raw batch (N, C, T, V, M), in the feeder's stream."""
    out = feeder.views(batch)
    stream = feeder.stream
    if stream == 'joint':
        return out
    return [to_stream(v, stream, feeder.stream_parents) for v in out]


# ------------------------------------------------------------------------------------------------ features

def batch_features(model, feeder, raw, device=None):
    """``forward_features`` of the inference encoder (in ``eval()`` mode) on the first view of a raw batch."""
    encoder = inference_encoder(model)
    encoder.eval()
    raw = raw.to(device, non_blocking=True) if device is not None else raw
    return encoder.forward_features(stream_views(feeder, raw)[0])


@torch.no_grad()
def extract_features(model, loader, device=None, iterate=None):
    """(features, labels, indices) over a loader of raw ``(data, label, index)`` batches of a feeder of
    ``build_feeder`` (``loader.dataset``), in the loader's order; ``iterate`` wraps the loader (a progress
    bar). Features stay on the device, labels go to it, indices on the CPU."""
    feeder = loader.dataset
    feats, labels, indices = [], [], []
    for raw, label, index in (iterate(loader) if iterate else loader):
        feats.append(batch_features(model, feeder, raw, device))
        labels.append(label)
        indices.append(index)
    labels = torch.cat(labels)
    return torch.cat(feats), (labels.to(device) if device is not None else labels), torch.cat(indices)
