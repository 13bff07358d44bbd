"""The per-class text descriptions under config/text/descriptions (format, counts, label order)."""
import ast
import glob
import json
import os
import re

import pytest
import yaml

from conftest import REALDATA, ROOT

DESC_DIR = os.path.join(ROOT, 'config', 'text', 'descriptions')
KEYS = ('label', 'global', 'head', 'hands', 'hips', 'feet')
SENTENCE_KEYS = KEYS[1:]
COUNTS = {'ntu120': 120, 'pkummd1': 51, 'pkummd2': 41, 'ucla': 10, 'synthetic': 10}

# The NTU RGB+D 60 action names A001..A060 (the official list, lower case).
NTU60 = [
    'drink water', 'eat meal/snack', 'brushing teeth', 'brushing hair', 'drop', 'pickup', 'throw',
    'sitting down', 'standing up (from sitting position)', 'clapping', 'reading', 'writing',
    'tear up paper', 'wear jacket', 'take off jacket', 'wear a shoe', 'take off a shoe', 'wear on glasses',
    'take off glasses', 'put on a hat/cap', 'take off a hat/cap', 'cheer up', 'hand waving',
    'kicking something', 'reach into pocket', 'hopping (one foot jumping)', 'jump up',
    'make a phone call/answer phone', 'playing with phone/tablet', 'typing on a keyboard',
    'pointing to something with finger', 'taking a selfie', 'check time (from watch)',
    'rub two hands together', 'nod head/bow', 'shake head', 'wipe face', 'salute', 'put the palms together',
    'cross hands in front (say stop)', 'sneeze/cough', 'staggering', 'falling', 'touch head (headache)',
    'touch chest (stomachache/heart pain)', 'touch back (backache)', 'touch neck (neckache)',
    'nausea or vomiting condition', 'use a fan (with hand or paper)/feeling warm',
    'punching/slapping other person', 'kicking other person', 'pushing other person',
    'pat on back of other person', 'point finger at the other person', 'hugging other person',
    'giving something to other person', "touch other person's pocket", 'handshaking',
    'walking towards each other', 'walking apart from each other',
]
# NW-UCLA action code -> name; tools/ucla_gendata.py uses label id = all_sqe label - 1 and the all_sqe
# labels number the codes in this order (a01 -> 1 ... a12 -> 10).
UCLA_CODES = {'a01': 'pick up with one hand', 'a02': 'pick up with two hands', 'a03': 'drop trash',
              'a04': 'walk around', 'a05': 'sit down', 'a06': 'stand up', 'a08': 'donning',
              'a09': 'doffing', 'a11': 'throw', 'a12': 'carry'}


def load(name):
    with open(os.path.join(DESC_DIR, name + '.yaml')) as f:
        return yaml.safe_load(f)


def tool_constant(tool, name):
    """A module-level constant of tools/<tool>.py, read without importing it (the tools import torch)."""
    with open(os.path.join(ROOT, 'tools', tool + '.py')) as f:
        tree = ast.parse(f.read())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, 'id', None) == name for t in node.targets):
            return ast.literal_eval(node.value)
    raise AssertionError(f'tools/{tool}.py defines no {name}')


def ucla_label0(path):
    """The label id tools/ucla_gendata.py gives an all_sqe file (its read_ucla_json when importable)."""
    try:
        from tools.ucla_gendata import read_ucla_json
    except ImportError:   # torch absent: the same rule as read_ucla_json, label - 1
        with open(path) as f:
            return int(json.load(f)['label']) - 1
    return read_ucla_json(path)[1]


def labels(name):
    return [c['label'] for c in load(name)['classes']]


def test_all_files_present():
    found = sorted(os.path.splitext(os.path.basename(p))[0] for p in glob.glob(os.path.join(DESC_DIR, '*.yaml')))
    assert found == sorted(COUNTS)


@pytest.mark.parametrize('name', sorted(COUNTS))
def test_format(name):
    doc = load(name)
    assert isinstance(doc, dict) and set(doc) == {'dataset', 'classes'}
    assert doc['dataset'] == name
    classes = doc['classes']
    assert isinstance(classes, list) and len(classes) == COUNTS[name]
    for i, c in enumerate(classes):
        assert isinstance(c, dict) and tuple(c) == KEYS, f'{name} entry {i}: keys {list(c)}'
        for key in KEYS:
            assert isinstance(c[key], str) and c[key].strip() == c[key] and c[key], f'{name} entry {i}: {key}'
        assert c['label'] == c['label'].lower(), f'{name} entry {i}: label not lower case'
        for key in SENTENCE_KEYS:
            text = c[key]
            words = len(text.split())
            assert 8 <= words <= 30, f'{name} entry {i} ({c["label"]}): {key} has {words} words'
            assert text[0].isupper() and text.endswith('.'), f'{name} entry {i}: {key} is not a sentence'
            assert not re.search(r'\d', text), f'{name} entry {i}: {key} contains a digit (class index?)'
    for key in ('label', 'global'):
        values = [c[key] for c in classes]
        dups = sorted({v for v in values if values.count(v) > 1})
        assert not dups, f'{name}: duplicate {key}: {dups}'


def test_ntu60_is_prefix_of_ntu120():
    assert labels('ntu120')[:60] == NTU60


def test_ntu_names_match_shared_class_list():
    """Where ../shared/realdata holds an NTU class-name list, the labels must match it in order.
    (At the time of writing, ntu_metadata has only numeric per-sample labels, so this skips.)"""
    candidates = [p for pat in ('class*name*', '*action*name*', '*classes*.txt', 'label_name*')
                  for p in glob.glob(os.path.join(REALDATA, 'ntu_metadata', '**', pat), recursive=True)]
    if not candidates:
        pytest.skip(f'no NTU class-name list under {os.path.join(REALDATA, "ntu_metadata")}')
    ours = labels('ntu120')
    for path in candidates:
        with open(path) as f:
            names = [re.sub(r'^\s*a?\d+[.:)\s]+', '', line.strip().lower()) for line in f if line.strip()]
        assert names == ours[:len(names)], path


def test_ucla_labels_follow_gendata_mapping():
    assert len(labels('ucla')) == tool_constant('ucla_gendata', 'NUM_CLASS')
    assert labels('ucla') == list(UCLA_CODES.values())
    data = os.path.join(REALDATA, 'nw_ucla', 'all_sqe')
    if not os.path.isdir(data):
        pytest.skip(f'{data} not found: checked the names against the code order only')
    ours = labels('ucla')
    for code, name in UCLA_CODES.items():
        path = sorted(glob.glob(os.path.join(data, f'{code}_*.json')))[0]
        label0 = ucla_label0(path)
        assert ours[label0] == name, f'{os.path.basename(path)}: label id {label0} is {ours[label0]!r}'


def test_synthetic_labels_are_class_names():
    try:
        from tools.gen_synthetic import CLASS_NAMES
    except ImportError:   # numpy absent
        CLASS_NAMES = tool_constant('gen_synthetic', 'CLASS_NAMES')
    assert labels('synthetic') == list(CLASS_NAMES)


def test_pkummd_counts_match_gendata():
    NUM_CLASS = tool_constant('pku_gendata', 'NUM_CLASS')
    assert len(labels('pkummd1')) == NUM_CLASS[1]
    assert len(labels('pkummd2')) == NUM_CLASS[2]
