"""MICA's ablations change one thing (issue 44): the paper configs are SkeleMixCLR's configs plus MICA's keys
only, and the rows of config/reproduce/mica_tables_ntu60.yaml differ from the row they are compared with by
one key, diffed on the merged command lines the plan runs."""
import os

import pytest

from conftest import ROOT
from net.mica import MICA
from net.moco import MoCo
from net.skelemixclr import SkeleMixCLR
from processor import PROCESSORS
from processor.build import build_model, model_keys
from tools import reproduction as reproduce
from torchlight.io import import_class, load_config_file

PLAN = os.path.join(ROOT, 'config/reproduce/mica_tables_ntu60.yaml')
BENCHMARKS = ('ntu60/xsub', 'ntu60/xview', 'ntu120/xsub', 'ntu120/xset', 'pkummd/part1', 'pkummd/part2')
# MICA's own model_args: its constructor's keys that neither SkeleMixCLR nor the MoCo core (nor the encoder) take
MICA_KEYS = set(model_keys(MICA)) - set(model_keys(SkeleMixCLR)) - set(model_keys(MoCo))
BOOKKEEPING = {'work_dir', 'config', 'weights'}


def flat(cfg, prefix=''):
    """{'a.b': value} of a nested config (lists and scalars are leaves)."""
    out = {}
    for key, value in cfg.items():
        if isinstance(value, dict) and value:
            out.update(flat(value, f'{prefix}{key}.'))
        else:
            out[f'{prefix}{key}'] = value
    return out


def diff(a, b):
    """The keys whose values differ (or that one side lacks), bookkeeping keys left out."""
    a, b = flat(a), flat(b)
    return {k for k in set(a) | set(b) if k.split('.')[0] not in BOOKKEEPING and a.get(k, '<absent>') != b.get(k, '<absent>')}


def mica_keys(keys):
    return {k for k in keys if k != 'model' and not (k.startswith('model_args.') and k.split('.')[1] in MICA_KEYS)}


@pytest.mark.parametrize('benchmark', BENCHMARKS)
def test_the_paper_configs_are_skelemixclrs_plus_micas_keys(benchmark):
    """pretrain_mica64.yaml = pretrain_skelemixclr.yaml (graph, schedule, widths, tau, head) + MICA's keys,
    linear_eval_mica64.yaml = linear_eval_skelemixclr.yaml + MICA's keys + the paper's probe (lr 5, 120
    epochs); PKU-MMD Part II pretrains as Part I (section 5.1)."""
    os.chdir(ROOT)
    source = 'pkummd/part1' if benchmark == 'pkummd/part2' else benchmark
    mica = load_config_file(f'config/{benchmark}/pretrain_mica64.yaml')
    smx = load_config_file(f'config/{source}/pretrain_skelemixclr.yaml')
    assert mica['model'] == 'net.mica.MICA' and mica['model_args']['base_method'] == 'skelemixclr'
    assert not mica_keys(diff(smx, mica)), mica_keys(diff(smx, mica))
    mica_eval = load_config_file(f'config/{benchmark}/linear_eval_mica64.yaml')
    smx_eval = load_config_file(f'config/{benchmark}/linear_eval_skelemixclr.yaml')
    assert mica_keys(diff(smx_eval, mica_eval)) == {'base_lr', 'num_epoch', 'ignore_weights'}
    assert (mica_eval['base_lr'], mica_eval['num_epoch'], mica_eval['step']) == (5.0, 120, [80])


def effective(plan, row, stage):
    """The merged arguments (config files, plan and row overrides) of one stage of a row, as the run gets them."""
    for name, _, argv in reproduce.stages(plan, row, row['seeds'][0]):
        if name == stage:
            processor = object.__new__(import_class(PROCESSORS[argv[2]]))
            processor.load_arg(argv[3:])
            return {k: v for k, v in vars(processor.arg).items() if v is not None}
    raise KeyError(stage)


@pytest.fixture(scope='module')
def rows():
    os.chdir(ROOT)
    plan = reproduce.load_plan(PLAN)
    by_name = {r['name']: r for r in plan.rows}
    return {name: {stage: effective(plan, row, stage) for stage in ('pretext', 'linear') if
                   stage == 'linear' or row['processor'] != 'untrained'} for name, row in by_name.items()}


def test_each_row_changes_one_key(rows):
    chain = [('+ L_FM only (Table 2)', 'L_FM + FreST', {'model_args.frest'}),
             ('L_FM + FreST', 'MICA (full)', {'model_args.harmonizer'}),
             ('MICA (full)', 'MICA, global FM', {'model_args.fm_objective'}),
             ('MICA (full)', 'L_FM + FreqT (Table 2)', {'model_args.fres'}),
             ('MICA (full)', 'L_FM + FreqS (Table 2)', {'model_args.fret'}),
             ('MICA (full)', 'W_l removed (Table 3)', {'model_args.local_filter'}),
             ('MICA (full)', 'W_g removed (Table 3)', {'model_args.global_filter'}),
             ('MICA (full)', 'no adaptive threshold (Table 3)', {'model_args.adaptive_mask'})]
    for a, b, key in chain:
        assert diff(rows[a]['pretext'], rows[b]['pretext']) == key, (a, b)
        changed = diff(rows[a]['linear'], rows[b]['linear'])        # an encoder switch reaches the evaluation
        assert changed <= key and (changed == key) == (key <= {f'model_args.{k}' for k in (
            'frest', 'fres', 'fret', 'local_filter', 'global_filter', 'adaptive_mask')}), (a, b, changed)


def test_skelemixclr_to_fm_is_the_feature_modulation_switch(rows):
    """The SkeleMixCLR row and the "+ L_FM" row share every setting of SkeleMixCLR's; the rest are MICA's keys,
    all inert with feature_modulation off: that model is SkeleMixCLR's (same parameters and buffers; its
    step is SkeleMixCLR's in float64, tests/test_mica_base.py)."""
    smx, fm = rows['SkeleMixCLR (Table 2 w/o pre-training)'], rows['+ L_FM only (Table 2)']
    changed = diff(smx['pretext'], fm['pretext'])
    assert not mica_keys(changed) and 'model_args.feature_modulation' in changed
    assert fm['pretext']['model_args']['feature_modulation'] is True
    off = dict(fm['pretext'], model_args=dict(fm['pretext']['model_args'], feature_modulation=False, queue_size=256))
    base = dict(smx['pretext'], model_args=dict(smx['pretext']['model_args'], queue_size=256))
    ours, theirs = build_model(off).state_dict(), build_model(base).state_dict()
    assert {k: v.shape for k, v in ours.items() if k != 'pretrain_labels'} == {k: v.shape for k, v in theirs.items()}
    # one probe for every row: the evaluations differ in MICA's encoder keys only
    assert mica_keys(diff(smx['linear'], fm['linear'])) == {'ignore_weights'}
    for name, stages in rows.items():
        assert (stages['linear']['base_lr'], stages['linear']['num_epoch'], stages['linear']['step']) == (5.0, 120, [80])
