"""The settings schema (processor/schema.py): every key the code reads has a rule, every shipped config
passes, and a value outside its rule is one line naming the key with the closest valid value."""
import glob
import importlib
import os
import pkgutil

import pytest

import net
from conftest import ROOT
from feeder.ntu_feeder import Feeder
from net.method import PretrainingMethod
from net.utils.encoder import SkeletonEncoder
from processor import PROCESSORS, schema
from processor.build import load_config
from torchlight.io import UserError, import_class


def configurable_classes():
    """Every method, encoder and feeder class (what a config's model / base_encoder / *_feeder names),
    and the train heads (``train_head``)."""
    found = {}
    for info in pkgutil.iter_modules(net.__path__):
        module = importlib.import_module(f'net.{info.name}')
        for value in vars(module).values():
            if isinstance(value, type) and value.__module__ == module.__name__ and (
                    issubclass(value, (PretrainingMethod, SkeletonEncoder)) or value.__name__ == 'CSRE'):
                found[f'{module.__name__}.{value.__name__}'] = value
    module = importlib.import_module('feeder.ntu_feeder')
    for value in vars(module).values():
        if isinstance(value, type) and issubclass(value, Feeder):
            found[f'feeder.ntu_feeder.{value.__name__}'] = value
    return found


def test_every_argument_of_every_configurable_class_has_a_rule():
    classes = configurable_classes()
    assert len(classes) > 15 and 'net.csre.CSRE' in classes and 'net.st_gcn.Model' in classes
    undeclared = sorted({f'{name}.{key}' for name, klass in classes.items()
                         for key in schema.init_arguments(klass)[0] if schema.rule_for(key) is None})
    assert not undeclared, f'keys without a rule in processor/schema.py: {undeclared}'


def test_every_numeric_processor_option_has_a_rule():
    undeclared = set()
    for name, path in PROCESSORS.items():
        for action in import_class(path).get_parser()._actions:
            if action.type in (int, float) and action.dest not in schema.PROCESSOR_RULES:
                undeclared.add(f'{name}.{action.dest}')
    assert not undeclared, f'numeric options without a rule in processor/schema.py: {sorted(undeclared)}'


SHIPPED = sorted(p for p in glob.glob(os.path.join(ROOT, 'config', '**', '*.yaml'), recursive=True)
                 if f'{os.sep}base{os.sep}' not in p)


def test_every_shipped_config_passes_the_schema():
    assert len(SHIPPED) > 20
    checked = 0
    for path in SHIPPED:
        cfg = load_config(path)
        if not cfg.get('model'):
            continue
        arg = type('Arg', (), {'train_feeder': 'feeder.ntu_feeder.Feeder_dual',
                               'test_feeder': 'feeder.ntu_feeder.Feeder_single', **cfg})()
        schema.check_config(arg, f' ({os.path.relpath(path, ROOT)})')
        checked += 1
    assert checked > 20


@pytest.mark.parametrize('key, value, needles', [
    ('queue_size', 0, ['model_args.queue_size', 'positive', 'closest valid value: 1']),
    ('Temperature', 0.0, ['model_args.Temperature', '> 0']),
    ('momentum', 1.5, ['model_args.momentum', '[0, 1)', 'closest valid value: 0.999']),
    ('hidden_channels', 'big', ['model_args.hidden_channels', 'integer']),
    ('graph_args', {'layout': 'ntu-rgb+d', 'strategy': 'spatail'}, ['strategy', "closest valid value: 'spatial'"]),
    ('graph_args', {'layout': 'ntu-rgb+d', 'max_hop': 0}, ['max_hop', 'closest valid value: 1']),
    ('graph_args', {'layuot': 'ntu-rgb+d'}, ['layuot', 'layout']),
    ('hiden_channels', 16, ["unknown key 'hiden_channels'", 'hidden_channels']),
])
def test_a_model_value_outside_its_rule_is_one_line_with_the_closest_value(key, value, needles):
    from net.skeletonclr import SkeletonCLR
    args = {'base_encoder': 'net.st_gcn.Model', key: value}
    with pytest.raises(UserError) as info:
        schema.check_args(SkeletonCLR, args, 'model_args')
    message = str(info.value)
    assert '\n' not in message and message.startswith('model_args')
    for needle in needles:
        assert needle in message, message


def test_a_yaml_key_that_is_not_a_string_is_named():
    from feeder.ntu_feeder import Feeder_single
    with pytest.raises(UserError, match='key 1 is not a string'):
        schema.check_args(Feeder_single, {'data_path': 'x', 'label_path': 'y', 1: 2}, 'test_feeder_args')
