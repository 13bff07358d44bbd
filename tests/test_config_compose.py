"""Composed configs (``base:``): the rebuilt NTU-60/120, PKU-MMD, NW-UCLA and demo trees (the supervised
recognition_*.yaml leaves included) give exactly the settings of the flat files they replaced
(``tests/fixtures/merged_configs.json``, written from the flat tree before it was composed), every leaf
builds, and a run's config.yaml is the merged result."""
import json
import os
import sys

import pytest
import yaml

from conftest import ROOT, tiny_dataset, write_config
from processor.build import build_model, check_feeder_args, feeder_spec, load_config
from torchlight.io import UserError, load_config_file

sys.path.insert(0, os.path.join(ROOT, 'tests', 'fixtures'))
from make_merged_configs import merged_configs, run_configs  # noqa: E402

FIXTURE = json.load(open(os.path.join(ROOT, 'tests', 'fixtures', 'merged_configs.json')))
# every run YAML of the trees: the self-supervised leaves and the supervised recognition_*.yaml ones
COMPOSED = sorted(FIXTURE)


def test_no_run_config_was_lost_or_added():
    assert [p for p in run_configs() if p in COMPOSED] == COMPOSED
    assert sorted(run_configs()) == COMPOSED
    assert {p.split('/')[1] for p in COMPOSED} == {'ntu60', 'ntu120', 'pkummd', 'ucla', 'demo'}


def test_every_composed_leaf_merges_to_the_settings_of_its_flat_file():
    merged = merged_configs()
    differ = [p for p in COMPOSED if merged[p] != FIXTURE[p]]
    assert not differ, differ[:5]
    assert all('base' in yaml.safe_load(open(os.path.join(ROOT, p))) for p in COMPOSED)   # really composed


def test_the_alias_files_are_their_benchmarks_mica_pretraining():
    for alias in ('ntu60/xsub', 'ntu60/xview', 'ntu120/xsub', 'ntu120/xset', 'pkummd/part1', 'pkummd/part2'):
        assert load_config(os.path.join(ROOT, f'config/{alias}.yaml')) == \
            load_config(os.path.join(ROOT, f'config/{alias}/pretrain_mica64.yaml'))


def model_spec(path):
    """(model, model_args) of a composed leaf, with a small queue (the recipe's 32768 adds nothing to check)."""
    cfg = FIXTURE[path]
    args = dict(cfg.get('model_args') or {})
    if args.get('pretrain'):
        args['queue_size'] = cfg['batch_size']
    return json.dumps([cfg.get('model'), args], sort_keys=True)


# the leaves share few distinct models (a linear, finetune or semi leaf builds its benchmark's encoder; the
# recognition leaves of one encoder and benchmark differ in stream and train head only):
# each distinct one is built once, named by its first leaf
DISTINCT_MODELS = {}
for _path in COMPOSED:
    DISTINCT_MODELS.setdefault(model_spec(_path), _path)


@pytest.mark.parametrize('path', sorted(DISTINCT_MODELS.values()))
def test_every_leaf_model_builds(path):
    """Every distinct model of the composed leaves constructs (the model of each leaf equals one of these,
    ``model_spec``)."""
    os.chdir(ROOT)
    cfg = load_config(path)
    assert model_spec(path) == json.dumps([cfg.get('model'), dict(cfg.get('model_args') or {}, **(
        {'queue_size': cfg['batch_size']} if (cfg.get('model_args') or {}).get('pretrain') else {}))], sort_keys=True)
    if (cfg.get('model_args') or {}).get('pretrain'):
        cfg['model_args']['queue_size'] = cfg['batch_size']
    model = build_model(cfg)
    assert sum(p.numel() for p in model.parameters()) > 0


def test_every_leaf_feeder_fits():
    """The feeder arguments of every leaf fit their feeder class; the data part where the data exist."""
    os.chdir(ROOT)
    for path in COMPOSED:
        cfg = load_config(path)
        for split in ('train', 'test'):
            if cfg.get(f'{split}_feeder_args'):
                name, args = feeder_spec(cfg, split)
                check_feeder_args(name, args, split)
                if os.path.isfile(args['data_path']):
                    from processor.build import build_feeder
                    build_feeder(cfg, split)


def test_base_list_order_and_deep_merge(tmp_path):
    (tmp_path / 'a.yaml').write_text('model_args: {x: 1, y: 1, graph_args: {layout: ntu-rgb+d}}\nbase_lr: 0.1\n')
    (tmp_path / 'b.yaml').write_text('base: a.yaml\nmodel_args: {y: 2}\nstep: [10]\n')
    sub = tmp_path / 'sub'
    sub.mkdir()
    (sub / 'leaf.yaml').write_text('base: [../b.yaml]\nmodel_args: {graph_args: {strategy: uniform}}\nstep: [5]\n')
    assert load_config_file(str(sub / 'leaf.yaml')) == {
        'model_args': {'x': 1, 'y': 2, 'graph_args': {'layout': 'ntu-rgb+d', 'strategy': 'uniform'}},
        'base_lr': 0.1, 'step': [5]}
    assert load_config(str(sub / 'leaf.yaml'), {'model_args': {'x': 3}})['model_args']['x'] == 3


def test_missing_base_and_cycle_are_one_line_errors_naming_the_file(tmp_path):
    leaf = tmp_path / 'leaf.yaml'
    leaf.write_text('base: nope.yaml\nbase_lr: 0.1\n')
    with pytest.raises(UserError, match=r"base 'nope.yaml' of config file '.*leaf.yaml' does not exist") as e:
        load_config_file(str(leaf))
    assert '\n' not in str(e.value)
    (tmp_path / 'a.yaml').write_text('base: b.yaml\n')
    (tmp_path / 'b.yaml').write_text('base: [a.yaml]\n')
    with pytest.raises(UserError, match=r"'.*a.yaml' includes itself through its base keys") as e:
        load_config_file(str(tmp_path / 'a.yaml'))
    assert '\n' not in str(e.value)
    leaf.write_text('base: {a: 1}\n')
    with pytest.raises(UserError, match="key 'base' in .*leaf.yaml must be a path or a list"):
        load_config_file(str(leaf))


def test_a_processor_runs_a_composed_leaf_and_dumps_the_merged_config(tmp_path):
    """``python main.py <processor> -c <leaf>`` reads the bases; config.yaml in work_dir is the merged
    result (no base key); a flat file of the reference format still loads as it is."""
    from processor.pretrain import PretrainProcessor
    flat = write_config(tmp_path, batch_size=8)
    cfg = yaml.safe_load(open(flat))
    base = dict(cfg)
    base.pop('work_dir', None)
    base['base_lr'] = 0.5
    (tmp_path / 'recipe.yaml').write_text(yaml.safe_dump(base))
    leaf = tmp_path / 'leaf.yaml'
    leaf.write_text(yaml.safe_dump({'base': 'recipe.yaml', 'work_dir': str(tmp_path / 'composed'),
                                    'model_args': {'hidden_channels': 6}}))
    p = PretrainProcessor(['--config', str(leaf)])
    assert p.arg.base_lr == 0.5 and p.arg.model_args['hidden_channels'] == 6
    assert p.arg.model_args['feature_dim'] == cfg['model_args']['feature_dim']        # merged, not replaced
    dumped = yaml.safe_load(open(tmp_path / 'composed' / 'config.yaml'))
    assert 'base' not in dumped and dumped['base_lr'] == 0.5 and dumped['model_args']['hidden_channels'] == 6
    assert dumped['train_feeder_args'] == cfg['train_feeder_args']
    assert PretrainProcessor(['--config', flat, '--work_dir', str(tmp_path / 'flat')]).arg.batch_size == 8


def test_a_bad_base_stops_the_processor_in_one_line(tmp_path):
    from processor.pretrain import PretrainProcessor
    tiny_dataset(tmp_path)
    leaf = tmp_path / 'leaf.yaml'
    leaf.write_text('base: ../missing/recipe.yaml\n')
    with pytest.raises(UserError, match='missing/recipe.yaml'):
        PretrainProcessor(['--config', str(leaf)])
