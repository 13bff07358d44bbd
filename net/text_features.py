"""Class-description YAML files and the precomputed text-feature files of MICA.

A description set (``config/text/descriptions/<set>.yaml``)::

    dataset: ntu120
    classes:
      - label: drink water
        global: A person raises a cup to the mouth and drinks from it.
        head: ...
        hands: ...
        hips: ...
        feet: ...

A feature file (``config/text/features/<set>.<encoder>.npz``, no pickle):

- ``pooled``  float16 (num_class, 6, D): sentence features of the PROMPT_KINDS, L2-normalised
- ``tokens``  int8 (num_class, L, D) with ``token_scale`` float16 (num_class, L, 1) (value = tokens *
  scale): token-level features of the ``global`` sentence, padded to
  the longest over the classes (zeros beyond ``token_mask``)
- ``token_mask`` bool (num_class, L)
- ``meta``    JSON string: encoder, model_id, weights_sha256, activation, descriptions (file name),
  descriptions_sha256, dataset, class_names (the ``label`` of each class; files made before it lack
  it), prompt_kinds, dim, num_class, tool_version

A run checks its feature file against its data (``check_text_dataset``): the file's ``dataset`` against
the run's (``dataset:`` in the config, else ``dataset.yaml`` next to the training label file, written by
``tools/custom_gendata.py``), its class names against the data's, its class count against the
model's ``num_class`` and the labels (a file with more classes than the model is an error unless
``text_class_subset: true``, or the classes used are a dataset of ``KNOWN_SUBSETS``: NTU-60 in NTU-120's).
"""
import hashlib
import json
import os

import numpy as np
import torch

from torchlight.boundary import UserError, quote
from torchlight.io import check_finite
from torchlight.readers import load_npz, load_yaml

PROMPT_KINDS = ('label', 'global', 'head', 'hands', 'hips', 'feet')
TOKEN_KIND = 'global'
ENCODERS = ('minilm', 'clip')
REGENERATE_HINT = 'python tools/gen_text_features.py --encoder {encoder} --descriptions {descriptions}'


def _read_yaml(path):
    return load_yaml(path, 'descriptions file')


def load_descriptions(path):
    """Parse and validate a description set -> ``{'dataset': str, 'classes': [dict of PROMPT_KINDS]}``.
    Every class needs all six kinds as non-empty strings (extra keys are kept)."""
    data = _read_yaml(path)
    if not isinstance(data, dict) or not isinstance(data.get('classes'), list) or not data['classes']:
        raise UserError(f"descriptions file '{path}': expected a mapping with a non-empty 'classes' list")
    dataset = data.get('dataset', os.path.splitext(os.path.basename(path))[0])
    if not isinstance(dataset, str) or not dataset.strip():
        raise UserError(f"descriptions file '{path}': 'dataset' must be a non-empty string")
    for index, entry in enumerate(data['classes']):
        if not isinstance(entry, dict):
            raise UserError(f"descriptions file '{path}': class {index} is a {type(entry).__name__}, "
                            f"expected a mapping with keys {', '.join(PROMPT_KINDS)}")
        for kind in PROMPT_KINDS:
            value = entry.get(kind)
            if not isinstance(value, str) or not value.strip():
                problem = 'is missing' if kind not in entry else f'must be a non-empty string, got {quote(value)}'
                raise UserError(f"descriptions file '{path}': class {index} "
                                f"({quote(entry.get('label', '?'))}) key '{kind}' {problem}")
    return {**data, 'dataset': dataset}


SENTENCE_WORDS = (8, 30)


def check_description_rules(descriptions, path):
    """The writing rules of config/text/descriptions/README.md for every sentence (all kinds but
    ``label``): a sentence (capital first letter, final full stop) of 8-30 words with no digit (no class
    index), and no ``label`` or ``global`` sentence twice.  ValueError naming the class and kind."""
    import re
    low, high = SENTENCE_WORDS
    for index, entry in enumerate(descriptions['classes']):
        for kind in PROMPT_KINDS[1:]:
            text = entry[kind].strip()
            where = f"descriptions file '{path}': class {index} ({quote(entry['label'])}) '{kind}'"
            words = len(text.split())
            if not low <= words <= high:
                raise UserError(f'{where} has {words} words; write {low} to {high} words')
            if not (text[0].isupper() and text.endswith('.')):
                raise UserError(f'{where} must be one sentence: a capital first letter and a final full stop')
            if re.search(r'\d', text):
                raise UserError(f'{where} contains a digit; describe the motion, not the class number')
    for kind in ('label', 'global'):
        values = [entry[kind].strip() for entry in descriptions['classes']]
        twice = next((v for v in values if values.count(v) > 1), None)
        if twice is not None:
            raise UserError(f"descriptions file '{path}': {kind} {quote(twice)} appears twice")


DATASET_INFO = 'dataset.yaml'


def read_dataset_info(label_path):
    """``{'dataset': str, 'classes': [names], ...}`` from ``dataset.yaml`` next to a label file (written by
    ``tools/custom_gendata.py``), or {} when there is none."""
    path = os.path.join(os.path.dirname(os.path.abspath(label_path)), DATASET_INFO)
    if not os.path.isfile(path):
        return {}
    info = load_yaml(path, 'dataset file')
    if not isinstance(info, dict):
        raise UserError(f"dataset file '{path}' must hold a mapping (dataset, classes)")
    return dict(info, path=path)


def feature_class_names(meta, descriptions=None):
    """The class names of a feature file: its meta's ``class_names``, else the labels of the
    descriptions it was made from (``descriptions``: that YAML, checksum-checked by the loader), else None."""
    if meta.get('class_names'):
        return list(meta['class_names'])
    if descriptions and os.path.isfile(descriptions):
        return class_labels(load_descriptions(descriptions))
    return None


# Feature files whose first classes are another dataset's, in that dataset's label order: (file dataset,
# classes used) -> that dataset. The NTU-120 descriptions start with NTU-60's 60 classes (A001-A060).
KNOWN_SUBSETS = {('ntu120', 60): 'ntu60'}


def check_text_dataset(meta, path, anchors=None, label_classes=None, dataset=None, class_names=None,
                       file_class_names=None, allow_subset=False, where=''):
    """The feature file ``path`` (its ``meta``) must describe the run's dataset: ValueError when the
    file's dataset differs from ``dataset`` (the run's name), a class name differs from ``class_names``
    (the data's, in label order), the model uses fewer classes (``anchors``) than the file has without
    ``allow_subset``, or the labels (``label_classes`` = max label + 1) go beyond the anchors.  ``where``
    says where the run's dataset name and class names come from."""
    file_classes = int(meta.get('num_class', 0))
    about = (f"text feature file '{path}' (dataset {quote(meta.get('dataset'))}, {file_classes} classes, from "
             f"{quote(meta.get('descriptions'))})")
    fix = ("write this dataset's class descriptions and embed them with tools/gen_text_features.py, then set "
           "model_args.text_features and model_args.descriptions to them (docs/DATA.md, 'Your own dataset')")
    subset = KNOWN_SUBSETS.get((meta.get('dataset'), anchors)) if anchors is not None and anchors < file_classes \
        else None
    if dataset and meta.get('dataset') and str(dataset) not in (str(meta['dataset']), subset):
        raise UserError(f"{about} was made for another dataset than this run's {quote(dataset)}{where}: {fix}")
    if anchors is not None and file_classes > anchors and not allow_subset and subset is None:
        raise UserError(f"{about} has more classes than the model's num_class={anchors}: MICA would silently "
                        f"use the descriptions of its first {anchors} classes; {fix}, or set "
                         "text_class_subset: true if those classes are this dataset's")
    used = anchors if anchors is not None else file_classes
    if label_classes is not None and label_classes > used:
        raise UserError(f"{about}: the training labels go up to {label_classes - 1} but only {used} classes "
                        f"are described: {fix}")
    if class_names and file_class_names:
        for i, (mine, theirs) in enumerate(zip(class_names, file_class_names[:used])):
            if str(mine).strip().lower() != str(theirs).strip().lower():
                raise UserError(f"{about} describes class {i} as {quote(theirs)} but this run's data{where} calls it "
                                f"{quote(mine)}: {fix}")


def descriptions_checksum(path):
    """sha256 of the parsed YAML (``json.dumps(parsed, sort_keys=True)``): formatting, comments and
    key order do not change it."""
    data = _read_yaml(path)
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode('utf-8')).hexdigest()


def class_labels(descriptions):
    """The class names (``label`` entries) of a parsed description set, in label order."""
    return [entry['label'].strip() for entry in descriptions['classes']]


def load_text_features(path, encoder=None, descriptions=None):
    """Read a feature file -> ``{'pooled': (C, 6, D), 'tokens': (C, L, D), 'token_mask': (C, L) bool,
    'meta': dict}`` (float32 tensors). With ``encoder`` ('minilm' | 'clip') or ``descriptions`` (the
    YAML path; its checksum is recomputed) given, a mismatch with the file's meta is a ValueError."""
    if not os.path.isfile(path):
        raise UserError(f"text feature file '{path}' does not exist: generate it with "
                        f"python tools/gen_text_features.py --encoder {encoder or 'minilm'}")
    try:
        arrays = load_npz(path, 'text feature file', ('pooled', 'tokens', 'token_scale', 'token_mask', 'meta'))
    except ValueError as e:          # truncated (BadZipFile, EOFError), missing arrays, not an .npz
        raise UserError(f"{e}; regenerate it with python tools/gen_text_features.py") from None
    try:
        meta = json.loads(str(arrays['meta']))
        if not isinstance(meta, dict):
            raise UserError('meta is not a JSON object')
    except ValueError as e:
        raise UserError(f"text feature file '{path}' has an unreadable meta entry ({e}); regenerate it with "
                         "python tools/gen_text_features.py") from None
    hint_encoder = encoder or meta.get('encoder', 'minilm')
    hint_desc = descriptions or os.path.join('config', 'text', 'descriptions',
                                             meta.get('descriptions', '<set>.yaml'))
    hint = REGENERATE_HINT.format(encoder=hint_encoder, descriptions=hint_desc)
    if encoder is not None and meta.get('encoder') != encoder:
        raise UserError(f"text feature file '{path}' was made with encoder {quote(meta.get('encoder'))}, "
                        f"expected {quote(encoder)}: rerun {hint}")
    if descriptions is not None:
        expected = descriptions_checksum(descriptions)
        if meta.get('descriptions_sha256') != expected:
            raise UserError(f"text feature file '{path}' was made from descriptions "
                            f"{quote(meta.get('descriptions'))} with checksum "
                            f"{meta.get('descriptions_sha256')}, but '{descriptions}' has checksum "
                            f"{expected}: rerun {hint}")
    if tuple(meta.get('prompt_kinds', ())) != PROMPT_KINDS:
        raise UserError(f"text feature file '{path}' has prompt kinds {meta.get('prompt_kinds')}, "
                        f"expected {list(PROMPT_KINDS)}: rerun {hint}")
    pooled, tokens, mask = arrays['pooled'], arrays['tokens'], arrays['token_mask']
    if pooled.ndim != 3 or pooled.shape[1] != len(PROMPT_KINDS) or tokens.ndim != 3 or mask.shape != tokens.shape[:2] \
            or len(tokens) != len(pooled) or tokens.shape[2] != pooled.shape[2]:
        raise UserError(f"text feature file '{path}' has arrays of shapes pooled {pooled.shape}, tokens {tokens.shape}, "
                        f"token_mask {mask.shape}; expected (C, {len(PROMPT_KINDS)}, D), (C, L, D), (C, L): rerun {hint}")
    for key in ('pooled', 'tokens', 'token_scale'):
        if arrays[key].dtype.kind not in ('fi' if key == 'tokens' else 'f'):
            raise UserError(f"text feature file '{path}': '{key}' has dtype {arrays[key].dtype}, expected numbers: "
                            f"rerun {hint}")
        check_finite(arrays[key], f"text feature file '{path}', array '{key}'", f'rerun {hint}')
    return {'pooled': torch.from_numpy(arrays['pooled'].astype(np.float32)),
            'tokens': torch.from_numpy(arrays['tokens'].astype(np.float32) * arrays['token_scale'].astype(np.float32)),
            'token_mask': torch.from_numpy(arrays['token_mask'].astype(bool)),
            'meta': meta}
