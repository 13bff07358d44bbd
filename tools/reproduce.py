"""Reproduction runs: the rows of a plan x seeds -> pretraining -> evaluations -> one result JSON per run
-> a mean ± std table and a PNG of the curves.

Every run (row x seed) is ``main.py <pretrain processor>`` then ``main.py <evaluation>`` for each of
the row's evaluations, as subprocesses, in ``<work_dir>/<row>/seed<k>/{pretext,<evaluation>}``
(default ``work_dir/reproduce/<plan>``).  As soon as a run has finished, its result is written to
``<results>/<row>__seed<k>.json`` (default ``results/<plan>``): plan, row, seed, the specification
(processors, configs, overrides, epochs), the commands, git commit (and whether the tree was dirty),
``final`` and ``best`` metrics, the per-epoch ``curve`` of pretraining (``metrics.jsonl``: loss,
``loss_over_uniform`` = InfoNCE / ln(K+1), ``embed_std``, kNN top-1), each evaluation's curve, and the
wall seconds of every stage.  Accuracies are fractions (0.554) in the JSON, percent in the table.

Resumable: a rerun skips every run whose result file exists (the committed result files are what
carries over to another machine) and continues a stopped run where its work_dir is still there:
finished stages are skipped (``reproduce_stage.json`` in the stage folder), a stopped stage restarts
with ``--resume auto`` from its ``latest.pt``.  A result file or stage folder made with another
specification (say other epochs or overrides) is an error, never silently reused: delete it, or name
the row differently.

Metrics.  ``<eval>_top1`` for linear / finetune / semi evaluations (``best``: the best test epoch,
the number the family reports; ``final``: the last one), ``knn_top1`` for a kNN evaluation (the first
k of its ``knn_k``; every k as ``knn_top1_k<k>``), and from the pretraining curve ``pretrain_knn_top1``
(the kNN monitor, ``knn_interval``; final and best), ``pretrain_knn_drop`` (the largest fall below its
running best along the schedule, from the initial encoder on), ``loss_over_uniform`` and ``embed_std``
(last epoch).  Evaluation accuracies are read from the evaluations' ``log.txt`` (printed there in
percent with two decimals).

Plan (YAML)::

    name: ucla                         # default: the file name; names the work and results folders
    description: NW-UCLA cross-view, the shipped small-data recipes
    seeds: [1, 2, 3]                   # defaults for every row (a row may set its own) ...
    epochs: 100                        # pretraining epochs (default: the config's num_epoch)
    knn_interval: 5                    # kNN monitor during pretraining (default: the config's)
    overrides: --num_worker 2          # extra command-line args of every pretraining
    eval_overrides: ''                 # extra command-line args of every evaluation
    work_dir: work_dir/reproduce/ucla  # default
    results: results/ucla              # default
    floor: {ridge on the data/ucla arrays: 65.3} # fixed rows (percent, first column): tools/floor.py's value
    chance: 10.0
    rows:
      SkeletonCLR:
        processor: pretrain_skeletonclr
        config: config/ucla/pretrain_skeletonclr.yaml
        overrides: --base_lr 0.05      # a string (split as a shell does) or a list of arguments
        evaluations:
          linear: config/ucla/linear_eval_skeletonclr.yaml
          knn: {config: config/ucla/knn_skeletonclr.yaml, overrides: --knn_k 20}
          finetune: {config: config/ucla/finetune_skeletonclr.yaml, epochs: 50}

      ST-GCN + CSRE:                   # a supervised row: trained and tested by one recognition run
        processor: recognition
        config: config/ucla/recognition_stgcn_csre.yaml

Row keys: processor, config, evaluations, overrides, eval_overrides, seeds, epochs, knn_interval,
description.  A ``recognition`` row has no evaluations and no kNN monitor: its run (folder
``recognition``) reports ``recognition_top1`` from its own test epochs (``eval_interval``).  Plan-level ``overrides`` / ``eval_overrides`` come first, the row's after them (the
last value wins on the command line; dict options merge).  An evaluation is a config path or a mapping
with ``config``, ``processor`` (default from its name: linear -> linear_evaluation, knn ->
knn_evaluation, finetune / semi* -> finetune_evaluation), ``overrides``, ``epochs``.  The tool sets
``--work_dir``, ``--seed``, ``--num_epoch`` (pretraining), ``--weights`` (evaluations, the last
pretraining checkpoint), ``--resume auto`` and ``--knn_interval`` itself; they are refused in
overrides.  With ``knn_interval`` > 0 and no ``test_feeder_args`` in the pretraining config, the test
split of the row's first evaluation config (kNN first) is given to pretraining.  Relative config paths
are looked up in the current folder, then in the repository; data paths in the configs are relative
to the current folder, as for ``main.py``.

Usage::

    python tools/reproduce.py run config/reproduce/ucla.yaml              # every row x seed
    python tools/reproduce.py run config/reproduce/ucla.yaml --rows MICA --seeds 1 --dry-run
    python tools/reproduce.py aggregate config/reproduce/ucla.yaml        # table.md and curves.png
    python tools/reproduce.py run --name mica_ablation --row 'MICA frest=False' \\
        --processor pretrain_mica --config config/ucla/pretrain_mica.yaml \\
        --linear config/ucla/linear_eval_mica.yaml --seeds 1 2 3 --epochs 100 --knn-interval 5 \\
        --overrides '--model_args frest=False' --eval-overrides '--model_args frest=False'

``run`` aggregates at the end; ``aggregate`` writes ``<results>/table.md`` (printed too; mean ± sample
std over the seeds, n, the ``floor`` and ``chance`` rows, the command that regenerates it) and
``<results>/curves.png`` (kNN monitor top-1 and loss / ln(K+1) per epoch, one line per row: the mean
over seeds, the band their min-max or, with ``--band std``, ± one std).  The PNG needs matplotlib
(``pip install -r requirements-analysis.txt``); without it the table is still written, with a notice.
"""
import argparse
import glob
import json
import math
import os
import re
import shlex
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import yaml  # noqa: E402

from processor import PROCESSORS  # noqa: E402
from processor.pretrain import METRICS_FILE, read_metrics  # noqa: E402
from torchlight.io import UserError, closest_keys, import_class, load_config_file, run_tool  # noqa: E402

PLAN_KEYS = ('name', 'description', 'seeds', 'epochs', 'knn_interval', 'overrides', 'eval_overrides',
             'work_dir', 'results', 'floor', 'chance', 'rows')
ROW_KEYS = ('processor', 'config', 'evaluations', 'overrides', 'eval_overrides', 'seeds', 'epochs',
            'knn_interval', 'description')
EVAL_KEYS = ('config', 'processor', 'overrides', 'epochs')
PRETRAINERS = sorted(p for p, path in PROCESSORS.items() if path == PROCESSORS['pretrain'])
SUPERVISED = 'recognition'     # a row that trains a classifier and tests it itself (no evaluations)
EVAL_PROCESSORS = {'linear': 'linear_evaluation', 'knn': 'knn_evaluation', 'finetune': 'finetune_evaluation',
                   'semi': 'finetune_evaluation'}
SET_BY_TOOL = {'--work_dir': 'the work folder', '-w': 'the work folder', '--seed': 'seeds:',
               '--num_epoch': 'epochs:', '--weights': 'the last pretraining checkpoint',
               '--resume': 'the tool (auto)', '--config': 'config:', '-c': 'config:',
               '--knn_interval': 'knn_interval:'}
STAGE_FILE = 'reproduce_stage.json'
WALL_FILE = 'reproduce_wall.json'


# ------------------------------------------------------------------------------------------------
# the plan

class Plan:
    """A validated plan: ``name``, ``rows`` (list of dicts in plan order), folders and references."""

    def __init__(self, name, rows, work_dir, results, floor, chance, source, description=''):
        self.name, self.rows, self.work_dir, self.results = name, rows, work_dir, results
        self.floor, self.chance, self.source, self.description = floor, chance, source, description

    def row(self, name):
        return next(r for r in self.rows if r['name'] == name)


def slug(name):
    """A row name as a folder / file name."""
    return re.sub(r'[^A-Za-z0-9._+-]+', '_', name).strip('_') or 'row'


def find_config(path, where):
    """A relative config path from the current folder, else from the repository."""
    if not isinstance(path, str) or not path:
        raise UserError(f'{where}: expected a config path, got {path!r}')
    for candidate in (path, os.path.join(ROOT, path)):
        if os.path.isfile(candidate):
            return os.path.abspath(candidate)
    raise UserError(f"{where}: config '{path}' does not exist")


def read_yaml_mapping(path, what):
    try:
        with open(path) as f:
            content = yaml.safe_load(f)
    except yaml.YAMLError as e:
        raise UserError(f"{what} '{path}' is not valid YAML: {str(e).splitlines()[0]}") from None
    if content is None:
        content = {}
    if not isinstance(content, dict):
        raise UserError(f"{what} '{path}' must be a mapping")
    return content


def check_keys(mapping, valid, where):
    if not isinstance(mapping, dict):
        raise UserError(f'{where} must be a mapping, got {mapping!r}')
    for key in mapping:
        if key not in valid:
            raise UserError(f"unknown key '{key}' in {where}; closest valid keys: {closest_keys(str(key), valid)}")


def as_tokens(value, where):
    """Overrides as a list of command-line arguments: a string is split as a shell does."""
    if value is None:
        return []
    if isinstance(value, str):
        try:
            return shlex.split(value)
        except ValueError as e:
            raise UserError(f'{where}: {e} in {value!r}') from None
    if isinstance(value, list) and all(isinstance(v, (str, int, float, bool)) for v in value):
        return [str(v).lower() if isinstance(v, bool) else str(v) for v in value]
    raise UserError(f'{where}: expected a string or a list of command-line arguments, got {value!r}')


_OPTIONS = {}


def processor_options(processor):
    """The option strings of a processor's parser (``--base_lr``, ``-c``, ...)."""
    if processor not in _OPTIONS:
        parser = import_class(PROCESSORS[processor]).get_parser()
        _OPTIONS[processor] = {s for a in parser._actions for s in a.option_strings}
    return _OPTIONS[processor]


def check_overrides(tokens, processor, where):
    options = processor_options(processor)
    for token in tokens:
        if not token.startswith('-') or re.fullmatch(r'-[\d.]+(e-?\d+)?', token):
            continue
        option = token.split('=')[0]
        if option in SET_BY_TOOL:
            raise UserError(f"{where}: '{option}' is set by the tool ({SET_BY_TOOL[option]})")
        if option not in options:
            close = closest_keys(option.lstrip('-'), [o.lstrip('-') for o in options if o.startswith('--')])
            raise UserError(f"{where}: '{option}' is not an option of {processor}; closest valid keys: {close}")


def given(mapping, key, default):
    """``mapping[key]`` unless it is absent or null, else ``default``."""
    value = mapping.get(key)
    return default if value is None else value


def check_int_list(value, where):
    values = value if isinstance(value, list) else [value]
    if not values or not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        raise UserError(f'{where}: expected an integer or a list of integers, got {value!r}')
    return values


def check_epochs(value, where, minimum=1):
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise UserError(f'{where}: expected an integer >= {minimum}, got {value!r}')
    return value


def config_value(config, key, processor):
    """``key`` of a config file, else the processor's default."""
    content = load_config_file(config)
    if key in content:
        return content[key]
    return import_class(PROCESSORS[processor]).get_parser().get_default(key)


def parse_evaluation(name, value, where):
    if isinstance(value, str):
        value = {'config': value}
    check_keys(value, EVAL_KEYS, where)
    default = EVAL_PROCESSORS.get(name) or EVAL_PROCESSORS.get('semi' if name.startswith('semi') else name)
    processor = value.get('processor', default)
    if processor is None:
        raise UserError(f"{where}: set 'processor' (the name '{name}' is none of {', '.join(EVAL_PROCESSORS)})")
    if processor not in PROCESSORS or processor in PRETRAINERS:
        evaluations = sorted(p for p in PROCESSORS if p not in PRETRAINERS)
        raise UserError(f"{where}.processor: '{processor}' is not an evaluation processor; use one of "
                        f"{', '.join(evaluations)}")
    if 'config' not in value:
        raise UserError(f"{where}: 'config' is missing")
    config = find_config(value['config'], f'{where}.config')
    overrides = as_tokens(value.get('overrides'), f'{where}.overrides')
    check_overrides(overrides, processor, f'{where}.overrides')
    return {'name': name, 'processor': processor, 'config': value['config'], 'config_path': config,
            'overrides': overrides, 'epochs': check_epochs(value.get('epochs'), f'{where}.epochs')}


def parse_plan(content, source, extra_pretrain=(), extra_eval=(), epochs=None):
    """Validate a plan mapping (``source``: its file, for the messages) -> ``Plan``.  ``extra_*``: arguments
    appended to every pretraining / evaluation; ``epochs``: the pretraining epochs of every row."""
    check_keys(content, PLAN_KEYS, f'plan {source}')
    rows = content.get('rows')
    if not isinstance(rows, dict) or not rows:
        raise UserError(f"plan {source}: 'rows' must be a non-empty mapping of row names to rows")
    name = content.get('name') or os.path.splitext(os.path.basename(source))[0]
    if not isinstance(name, str) or slug(name) != name:
        raise UserError(f"plan {source}: name {name!r} must be a plain folder name (letters, digits, ._+-)")
    defaults = {k: content.get(k) for k in ('seeds', 'epochs', 'knn_interval')}
    plan_overrides = as_tokens(content.get('overrides'), f'plan {source}: overrides')
    plan_eval_overrides = as_tokens(content.get('eval_overrides'), f'plan {source}: eval_overrides')
    parsed, slugs = [], {}
    for row_name, row in rows.items():
        where = f'plan {source}: rows.{row_name}'
        if row is None:
            row = {}
        check_keys(row, ROW_KEYS, where)
        row_name = str(row_name)
        if slug(row_name) in slugs:
            raise UserError(f"{where}: the row names '{slugs[slug(row_name)]}' and '{row_name}' give the same "
                            f"folder name '{slug(row_name)}'")
        slugs[slug(row_name)] = row_name
        processor = row.get('processor')
        if processor not in PRETRAINERS + [SUPERVISED]:
            raise UserError(f"{where}.processor: {processor!r} is not a pretraining processor (or "
                            f"{SUPERVISED}); use one of {', '.join(PRETRAINERS + [SUPERVISED])}")
        supervised = processor == SUPERVISED
        if 'config' not in row:
            raise UserError(f"{where}: 'config' is missing")
        config = find_config(row['config'], f'{where}.config')
        seeds = check_int_list(given(row, 'seeds', given(defaults, 'seeds', [1])), f'{where}.seeds')
        if len(set(seeds)) != len(seeds):
            raise UserError(f'{where}.seeds: {seeds} repeats a seed')
        row_epochs = check_epochs(epochs or given(row, 'epochs', defaults['epochs']), f'{where}.epochs')
        if row_epochs is None:
            row_epochs = check_epochs(config_value(config, 'num_epoch', processor), f"{row['config']}: num_epoch")
        knn_interval = None if supervised else \
            check_epochs(given(row, 'knn_interval', defaults['knn_interval']), f'{where}.knn_interval', 0)
        overrides = plan_overrides + as_tokens(row.get('overrides'), f'{where}.overrides') + list(extra_pretrain)
        check_overrides(overrides, processor, f'{where}.overrides')
        evaluations_in = row.get('evaluations') or {}
        if supervised and evaluations_in:
            raise UserError(f"{where}.evaluations: a {SUPERVISED} row is tested on its config's test split "
                            "(its best and last test top-1): drop 'evaluations'")
        if not supervised and (not isinstance(evaluations_in, dict) or not evaluations_in):
            raise UserError(f"{where}.evaluations: give at least one evaluation, e.g. "
                            "{linear: config/ucla/linear_eval_skeletonclr.yaml}")
        eval_overrides = plan_eval_overrides + as_tokens(row.get('eval_overrides'), f'{where}.eval_overrides')
        evaluations = []
        for eval_name, value in evaluations_in.items():
            if slug(str(eval_name)) != eval_name or eval_name == 'pretext':
                raise UserError(f"{where}.evaluations: {eval_name!r} is not a usable name (letters, digits, ._+-; "
                                "not 'pretext')")
            evaluation = parse_evaluation(eval_name, value, f'{where}.evaluations.{eval_name}')
            evaluation['overrides'] = eval_overrides + evaluation['overrides'] + list(extra_eval)
            check_overrides(evaluation['overrides'], evaluation['processor'], f'{where}.eval_overrides')
            evaluations.append(evaluation)
        parsed.append({'name': row_name, 'slug': slug(row_name), 'processor': processor, 'config': row['config'],
                       'config_path': config, 'seeds': seeds, 'epochs': row_epochs, 'knn_interval': knn_interval,
                       'overrides': overrides, 'evaluations': evaluations,
                       'description': row.get('description', '')})
    floor = content.get('floor') or {}
    if not isinstance(floor, dict) or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                              for v in floor.values()):
        raise UserError(f'plan {source}: floor must map row names to numbers (percent), got {floor!r}')
    chance = content.get('chance')
    if chance is not None and (not isinstance(chance, (int, float)) or isinstance(chance, bool)):
        raise UserError(f'plan {source}: chance must be a number (percent), got {chance!r}')
    for key in ('work_dir', 'results'):
        if content.get(key) is not None and not isinstance(content[key], str):
            raise UserError(f'plan {source}: {key} must be a folder path, got {content[key]!r}')
    return Plan(name, parsed, content.get('work_dir') or os.path.join('work_dir', 'reproduce', name),
                content.get('results') or os.path.join('results', name), dict(floor), chance, source,
                content.get('description') or '')


def load_plan(path, **kwargs):
    if not os.path.isfile(path):
        raise UserError(f"plan '{path}' does not exist")
    return parse_plan(read_yaml_mapping(path, 'plan'), path, **kwargs)


# ------------------------------------------------------------------------------------------------
# commands

def specification(row):
    """What makes a run what it is (compared when a result or a stage folder is reused)."""
    return {'processor': row['processor'], 'config': row['config'], 'epochs': row['epochs'],
            'knn_interval': row['knn_interval'], 'overrides': row['overrides'],
            'evaluations': {e['name']: {'processor': e['processor'], 'config': e['config'],
                                        'epochs': e['epochs'], 'overrides': e['overrides']}
                            for e in row['evaluations']}}


def knn_test_split(row):
    """``--test_feeder(_args)`` for the kNN monitor when the pretraining config has no test split."""
    if not row['knn_interval'] or load_config_file(row['config_path']).get('test_feeder_args'):
        return []
    ordered = sorted(row['evaluations'], key=lambda e: e['processor'] != 'knn_evaluation')
    for evaluation in ordered:
        content = load_config_file(evaluation['config_path'])
        if content.get('test_feeder_args'):
            args = ['--test_feeder_args', json.dumps(content['test_feeder_args'])]
            if content.get('test_feeder'):
                args = ['--test_feeder', content['test_feeder']] + args
            return args
    raise UserError(f"row {row['name']}: knn_interval needs a test split: none in {row['config']} nor in the "
                    "evaluation configs (give --test_feeder_args in overrides)")


def run_dirs(plan, row, seed):
    base = os.path.join(plan.work_dir, row['slug'], f'seed{seed}')
    return base, os.path.join(base, SUPERVISED if row['processor'] == SUPERVISED else 'pretext')


def result_path(plan, row, seed):
    return os.path.join(plan.results, f"{row['slug']}__seed{seed}.json")


def main_py():
    return os.path.join(ROOT, 'main.py')


def stages(plan, row, seed, python=sys.executable):
    """[(name, work_dir, argv)]: pretraining, then each evaluation of its last checkpoint."""
    _, pretext = run_dirs(plan, row, seed)
    base = os.path.dirname(pretext)
    pretrain = [python, main_py(), row['processor'], '--config', row['config_path'], '--work_dir', pretext,
                '--seed', str(seed), '--num_epoch', str(row['epochs']), '--resume', 'auto']
    if row['knn_interval'] is not None:
        pretrain += ['--knn_interval', str(row['knn_interval'])] + knn_test_split(row)
    out = [('pretext', pretext, pretrain + row['overrides'])]
    weights = os.path.join(pretext, f"epoch{row['epochs']}_model.pt")
    for e in row['evaluations']:
        work_dir = os.path.join(base, e['name'])
        argv = [python, main_py(), e['processor'], '--config', e['config_path'], '--work_dir', work_dir,
                '--seed', str(seed), '--weights', weights, '--resume', 'auto']
        if e['epochs'] is not None:
            argv += ['--num_epoch', str(e['epochs'])]
        out.append((e['name'], work_dir, argv + e['overrides']))
    return out


def stage_spec(row, name):
    spec = specification(row)
    return {k: spec[k] for k in ('processor', 'config', 'epochs', 'knn_interval', 'overrides')} \
        if name == 'pretext' else spec['evaluations'][name]


def subprocess_runner(argv, log_path=None):
    """Run one stage; its output goes to the console, or to ``log_path`` (``--quiet``)."""
    if log_path is None:
        return subprocess.call(argv)
    with open(log_path, 'a') as f:
        return subprocess.call(argv, stdout=f, stderr=subprocess.STDOUT)


def git_commit():
    """(commit, dirty) of the repository, (None, None) outside git.  Dirty means a tracked file outside
    results/ differs from the commit: the result files and tables a plan rewrites as it goes do not count."""
    try:
        commit = subprocess.run(['git', 'rev-parse', 'HEAD'], cwd=ROOT, capture_output=True, text=True,
                                check=True).stdout.strip()
        status = subprocess.run(['git', 'status', '--porcelain', '--untracked-files=no', '--', '.',
                                 ':(exclude)results'], cwd=ROOT, capture_output=True, text=True,
                                check=True).stdout
        return commit, bool(status.strip())
    except (OSError, subprocess.CalledProcessError):
        return None, None


def read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise UserError(f"cannot read '{path}' as JSON ({type(e).__name__}): delete it to redo that step") from None


def write_json(obj, path):
    os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
    tmp = f'{path}.tmp{os.getpid()}'
    with open(tmp, 'w') as f:
        json.dump(obj, f, indent=1)
        f.write('\n')
    os.replace(tmp, path)


# ------------------------------------------------------------------------------------------------
# metrics

def rounded(value, digits=6):
    return round(value, digits) if isinstance(value, float) and math.isfinite(value) else value


def eval_metrics(work_dir, name, processor):
    """(final, best, curve) of an evaluation, read from its log.txt."""
    log = os.path.join(work_dir, 'log.txt')
    if not os.path.exists(log):
        raise UserError(f"evaluation '{name}' wrote no log ({log})")
    with open(log) as f:
        lines = f.read().splitlines()
    if processor == 'knn_evaluation':
        knn = {}
        for line in lines:
            m = re.search(r'kNN k=(\d+) t=\S+: top1 ([\d.]+)%', line)
            if m:
                knn[int(m.group(1))] = float(m.group(2)) / 100
        if not knn:
            raise UserError(f"no kNN top-1 in {log}: did the evaluation finish?")
        order = []
        for line in lines:                    # the first k of the last run's order
            m = re.search(r'kNN k=(\d+) ', line)
            if m and int(m.group(1)) not in order:
                order.append(int(m.group(1)))
        final = {'knn_top1': knn[order[0]], **{f'knn_top1_k{k}': v for k, v in sorted(knn.items())}}
        return final, dict(final), []
    curve, epoch = {}, None
    for line in lines:
        m = re.search(r'Eval epoch: (\d+)', line)
        if m:
            epoch = int(m.group(1))
            continue
        m = re.search(r'\btop1: ([\d.]+)%', line)
        if m and epoch is not None and 'mean_loss' in line:
            curve[epoch] = float(m.group(1)) / 100
            epoch = None
    if not curve:
        raise UserError(f"no test top-1 in {log}: did the evaluation finish?")
    key = f'{name}_top1'
    last = max(curve)
    best_epoch = max(sorted(curve), key=lambda e: curve[e])
    return ({key: curve[last], f'{name}_epoch': last}, {key: curve[best_epoch], f'{name}_epoch': best_epoch},
            [{'epoch': e, 'top1': curve[e]} for e in sorted(curve)])


def largest_drop(values):
    """The largest fall of a series below its running maximum (0 for a non-decreasing one)."""
    best, drop = -math.inf, 0.0
    for v in values:
        best = max(best, v)
        drop = max(drop, best - v)
    return drop


def pretrain_metrics(curve):
    """(final, best) of the pretraining curve (metrics.jsonl records)."""
    final, best = {}, {}
    trained = [r for r in curve if r['epoch'] > 0]
    if trained:
        for key in ('loss', 'loss_over_uniform', 'embed_std'):
            if key in trained[-1]:
                final[key] = trained[-1][key]
    knn = [(r['epoch'], r['knn_top1']) for r in curve if 'knn_top1' in r]
    if knn:
        final['pretrain_knn_top1'] = knn[-1][1]
        final['pretrain_knn_drop'] = largest_drop([v for _, v in knn])
        epoch, value = max(knn, key=lambda ev: (ev[1], -ev[0]))
        best.update(pretrain_knn_top1=value, pretrain_knn_epoch=epoch)
    return final, best


# ------------------------------------------------------------------------------------------------
# running

def run_stage(name, work_dir, argv, spec, runner, quiet):
    """Run one stage unless its folder holds a finished one; -> (wall seconds, resumed)."""
    marker = os.path.join(work_dir, STAGE_FILE)
    if os.path.exists(marker):
        done = read_json(marker)
        if done.get('spec') != spec:
            raise UserError(f"'{work_dir}' holds a stage made with another specification ({marker}): delete "
                            "the folder to rerun it with the plan's settings")
        return done['wall_s'], done.get('resumed', False)
    resumed = os.path.exists(os.path.join(work_dir, 'latest.pt'))
    wall_file = os.path.join(work_dir, WALL_FILE)
    spent = read_json(wall_file)['wall_s'] if os.path.exists(wall_file) else 0.0
    os.makedirs(work_dir, exist_ok=True)
    print(f"[reproduce] {'resume' if resumed else 'start'} {work_dir}: {shlex.join(argv[1:])}", flush=True)
    started = time.time()
    try:
        rc = runner(argv, os.path.join(work_dir, 'console.txt') if quiet else None)
    except KeyboardInterrupt:
        raise UserError(f"interrupted during stage '{name}' ({work_dir}): rerun the plan to resume it") from None
    finally:
        spent += time.time() - started
        write_json({'wall_s': spent}, wall_file)
    if rc != 0:
        raise UserError(f"stage '{name}' failed (exit {rc}); see {os.path.join(work_dir, 'log.txt')} "
                        "(rerun the plan to resume it)")
    write_json({'spec': spec, 'wall_s': spent, 'resumed': resumed, 'command': argv[1:]}, marker)
    return spent, resumed


def run_one(plan, row, seed, runner=subprocess_runner, quiet=False, python=sys.executable):
    """Pretraining and evaluations of one row x seed -> the result dict (also written to its file)."""
    spec = specification(row)
    result = {'plan': plan.name, 'row': row['name'], 'seed': seed, 'spec': spec, 'stages': {}}
    for name, work_dir, argv in stages(plan, row, seed, python):
        wall, resumed = run_stage(name, work_dir, argv, stage_spec(row, name), runner, quiet)
        result['stages'][name] = {'work_dir': work_dir, 'command': argv[1:], 'wall_s': rounded(wall, 1),
                                  'resumed': resumed}
    pretext = result['stages']['pretext']['work_dir']
    curve = [{k: rounded(v) for k, v in r.items()} for r in read_metrics(os.path.join(pretext, METRICS_FILE))]
    final, best = pretrain_metrics(curve)
    result['evaluations'] = {}
    if row['processor'] == SUPERVISED:        # the training run's own test epochs
        e_final, e_best, e_curve = eval_metrics(pretext, SUPERVISED, SUPERVISED)
        final.update(e_final)
        best.update(e_best)
        result['evaluations'][SUPERVISED] = {'final': e_final, 'best': e_best, 'curve': e_curve}
    for e in row['evaluations']:
        e_final, e_best, e_curve = eval_metrics(result['stages'][e['name']]['work_dir'], e['name'], e['processor'])
        final.update(e_final)
        best.update(e_best)
        result['evaluations'][e['name']] = {'final': e_final, 'best': e_best, 'curve': e_curve}
    commit, dirty = git_commit()
    result.update(final=final, best=best, curve=curve, commit=commit, dirty=dirty,
                  wall_s=rounded(sum(s['wall_s'] for s in result['stages'].values()), 1),
                  finished=time.strftime('%Y-%m-%dT%H:%M:%S'))
    write_json(result, result_path(plan, row, seed))
    return result


def run_plan(plan, rows=None, seeds=None, dry_run=False, keep_going=False, runner=subprocess_runner, quiet=False,
             python=sys.executable):
    """Every row x seed in order; skips finished runs. -> (done, skipped, failed) run names."""
    selected = [r for r in plan.rows if not rows or r['name'] in rows or r['slug'] in rows]
    unknown = [r for r in rows or [] if r not in {x['name'] for x in plan.rows} | {x['slug'] for x in plan.rows}]
    if unknown:
        raise UserError(f"--rows: no row '{unknown[0]}' in plan {plan.source}; rows: "
                        f"{', '.join(r['name'] for r in plan.rows)}")
    done, skipped, failed = [], [], []
    for row in selected:
        for seed in (seeds or row['seeds']):
            label = f"{row['name']} seed {seed}"
            path = result_path(plan, row, seed)
            if os.path.exists(path):
                if read_json(path).get('spec') != specification(row):
                    raise UserError(f"result '{path}' was made with another specification than plan "
                                    f"{plan.source} gives row {row['name']}: delete it to rerun, or rename the row")
                print(f'[reproduce] {label}: done ({path})', flush=True)
                skipped.append(label)
                continue
            if dry_run:
                print(f'# {label}')
                for _, _, argv in stages(plan, row, seed, python):
                    print(shlex.join(argv))
                continue
            try:
                result = run_one(plan, row, seed, runner, quiet, python)
            except UserError as e:
                if not keep_going:
                    raise UserError(f'{label}: {e}') from e
                print(f'[reproduce] {label}: FAILED: {e}', flush=True)
                failed.append(label)
                continue
            print(f"[reproduce] {label}: {summary(result)} -> {path}", flush=True)
            done.append(label)
    return done, skipped, failed


def summary(result):
    parts = [f'{k} {100 * v:.1f}%' for k, v in result['best'].items() if k.endswith('_top1')]
    return ', '.join(parts) + f", {result['wall_s'] / 60:.1f} min"


# ------------------------------------------------------------------------------------------------
# aggregation

def column_keys(results):
    """[(key, 'final'|'best', header, scale, format)] in table order, for the metrics the results hold."""
    evals = []
    for r in results:
        for name in r.get('evaluations', {}):
            if name not in evals:
                evals.append(name)
    columns = []
    for name in evals:
        processors = {r['spec']['evaluations'].get(name, {}).get('processor', name) for r in results
                      if name in r.get('evaluations', {})}
        if processors == {'knn_evaluation'}:
            columns.append(('knn_top1', 'final', f'{name} top-1', 100, '.1f'))
        else:
            columns.append((f'{name}_top1', 'best', f'{name} top-1 (best)', 100, '.1f'))
            columns.append((f'{name}_top1', 'final', f'{name} top-1 (last)', 100, '.1f'))
    columns += [('pretrain_knn_top1', 'final', 'kNN monitor (last)', 100, '.1f'),
                ('pretrain_knn_drop', 'final', 'kNN monitor largest fall (points)', 100, '.1f'),
                ('loss_over_uniform', 'final', 'loss / ln(K+1) (last)', 1, '.3f'),
                ('embed_std', 'final', 'embed std (last)', 1, '.4f')]
    return [c for c in columns if any(c[0] in r.get(c[1], {}) for r in results)]


def mean_std(values):
    """(mean, sample std or None for one value)."""
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else None)


def cell(values, scale=100, fmt='.1f'):
    """'mean ± std' of ``scale * values`` ('mean' alone for one value, '' for none)."""
    if not values:
        return ''
    mean, std = mean_std([scale * v for v in values])
    return format(mean, fmt) + ('' if std is None else ' ± ' + format(std, fmt))


def load_results(folder):
    results = []
    for path in sorted(glob.glob(os.path.join(folder, '*__seed*.json'))):
        result = read_json(path)
        if not isinstance(result, dict) or 'row' not in result or 'seed' not in result:
            raise UserError(f"'{path}' is not a result file of tools/reproduce.py")
        results.append(result)
    return results


def grouped(results, plan=None):
    """{row: [results by seed]} in plan order (rows that are not in the plan after them)."""
    order = [r['name'] for r in plan.rows] if plan else []
    for r in results:
        if r['row'] not in order:
            order.append(r['row'])
    groups = {name: sorted([r for r in results if r['row'] == name], key=lambda r: r['seed']) for name in order}
    return {k: v for k, v in groups.items() if v}


def table(results, plan=None, command=None):
    """The markdown table (mean ± std over seeds) with the floor and chance rows."""
    groups = grouped(results, plan)
    columns = column_keys(results)
    header = ['row', 'n'] + [c[2] for c in columns] + ['wall (min / run)']
    lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
    for name, runs in groups.items():
        cells = [name, str(len(runs))]
        for key, which, _, scale, fmt in columns:
            cells.append(cell([r[which][key] for r in runs if key in r.get(which, {})], scale, fmt))
        walls = [r['wall_s'] / 60 for r in runs if 'wall_s' in r]
        cells.append(f'{statistics.mean(walls):.1f}' if walls else '')
        lines.append('| ' + ' | '.join(cells) + ' |')
    references = list((plan.floor if plan else {}).items())
    if plan and plan.chance is not None:
        references.append(('chance', plan.chance))
    for name, value in references:
        cells = [f'{name}' + (' (floor)' if name != 'chance' else ''), '–', f'{float(value):.1f}']
        lines.append('| ' + ' | '.join(cells + [''] * (len(header) - 3)) + ' |')
    commits = sorted({(r.get('commit') or '?')[:7] + (' (dirty)' if r.get('dirty') else '') for r in results})
    seeds = sorted({r['seed'] for r in results})
    head = [f'{len(results)} runs, seeds {", ".join(map(str, seeds))}; mean ± sample std over seeds; '
            f'commit {", ".join(commits)}.']
    if command:
        head.insert(0, f'Generated by `{command}`.')
    return '\n'.join(head) + '\n\n' + '\n'.join(lines) + '\n'


def series(runs, key):
    """(epochs, per-seed value lists aligned on the epochs) of a curve key."""
    per_seed = [{r_['epoch']: r_[key] for r_ in r.get('curve', []) if key in r_} for r in runs]
    epochs = sorted({e for s in per_seed for e in s})
    return epochs, [[s[e] for s in per_seed if e in s] for e in epochs]


def plot_curves(results, path, plan=None, band='minmax'):
    """PNG of the kNN monitor and loss / ln(K+1) per epoch; False (with a notice) without matplotlib."""
    try:
        import matplotlib
        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
        from matplotlib.ticker import MaxNLocator
    except ImportError:
        print(f'Notice: matplotlib is not installed (pip install -r requirements-analysis.txt): {path} not '
              'written; the table is.')
        return False
    groups = grouped(results, plan)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    panels = [('knn_top1', 'kNN top-1 during pretraining (%)', 100), ('loss_over_uniform', 'InfoNCE / ln(K+1)', 1)]
    for ax, (key, title, scale) in zip(axes, panels):
        for name, runs in groups.items():
            epochs, values = series(runs, key)
            if not epochs:
                continue
            mean = [scale * statistics.mean(v) for v in values]
            if band == 'std':
                spread = [scale * (statistics.stdev(v) if len(v) > 1 else 0.0) for v in values]
                low, high = [m - s for m, s in zip(mean, spread)], [m + s for m, s in zip(mean, spread)]
            else:
                low, high = [scale * min(v) for v in values], [scale * max(v) for v in values]
            line, = ax.plot(epochs, mean, marker='.', label=f'{name} (n={len(runs)})')
            ax.fill_between(epochs, low, high, color=line.get_color(), alpha=0.2, linewidth=0)
        if key == 'knn_top1' and plan:
            for ref, value in list(plan.floor.items()) + ([('chance', plan.chance)] if plan.chance is not None else []):
                ax.axhline(value, color='gray', linestyle='--', linewidth=1)
                ax.annotate(ref if ref == 'chance' else f'{ref} (floor)', (0, value), fontsize=8, color='gray',
                            xycoords=('axes fraction', 'data'), va='bottom')
        if key == 'loss_over_uniform':
            ax.axhline(1.0, color='gray', linestyle=':', linewidth=1)
        ax.set_xlabel('epoch')
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(title)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
    band_name = 'min-max over seeds' if band != 'std' else '± 1 std over seeds'
    fig.suptitle(f"{plan.name if plan else 'results'}: mean over seeds, band {band_name}")
    fig.tight_layout()
    os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def aggregate(plan, results_dir=None, band='minmax', command=None):
    """Write ``table.md`` and ``curves.png`` into the results folder (``plan``: row order, floor and chance;
    may be None); -> the table text."""
    folder = results_dir or plan.results
    results = load_results(folder)
    if not results:
        raise UserError(f"no result files (*__seed*.json) in '{folder}': run the plan first")
    text = table(results, plan, command)
    with open(os.path.join(folder, 'table.md'), 'w') as f:
        f.write(text)
    plot_curves(results, os.path.join(folder, 'curves.png'), plan, band)
    return text


# ------------------------------------------------------------------------------------------------
# command line

def command_line_plan(args, extra):
    """The plan of one row given on the command line."""
    if not args.config or not args.processor:
        raise UserError('give a plan file, or one row with --processor and --config (and --linear / --knn / ...)')
    evaluations = {}
    for name in ('linear', 'knn', 'finetune', 'semi'):
        if getattr(args, name):
            evaluations[name] = {'config': getattr(args, name)}
    row = {'processor': args.processor, 'config': args.config, 'evaluations': evaluations,
           'overrides': args.overrides, 'eval_overrides': args.eval_overrides, 'seeds': args.seeds or [1]}
    if args.epochs is not None:
        row['epochs'] = args.epochs
    if args.knn_interval is not None:
        row['knn_interval'] = args.knn_interval
    content = {'name': args.name or 'cli', 'rows': {args.row or slug(args.processor): row}}
    if args.work_dir:
        content['work_dir'] = args.work_dir
    if args.results:
        content['results'] = args.results
    return parse_plan(content, 'command line', **extra)


def get_plan(args):
    """The plan file with the command line's changes, or the command-line row."""
    extra = dict(extra_pretrain=as_tokens(getattr(args, 'pretrain_args', None), '--pretrain-args'),
                 extra_eval=as_tokens(getattr(args, 'eval_args', None), '--eval-args'))
    if args.plan is None:
        return command_line_plan(args, extra)
    row_options = [o for o in ('processor', 'config', 'linear', 'knn', 'finetune', 'semi', 'overrides',
                               'eval_overrides', 'row', 'name', 'knn_interval') if getattr(args, o, None) is not None]
    if row_options:
        raise UserError(f"--{row_options[0].replace('_', '-')} describes a command-line row: not with a plan file")
    plan = load_plan(args.plan, epochs=getattr(args, 'epochs', None), **extra)
    if args.work_dir:
        plan.work_dir = args.work_dir
    if args.results:
        plan.results = args.results
    return plan


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest='command', required=True)
    run = sub.add_parser('run', help='run the plan (row x seed), then aggregate')
    agg = sub.add_parser('aggregate', help='table.md and curves.png from the result files')
    for p in (run, agg):
        p.add_argument('plan', nargs='?', default=None, help='plan YAML (config/reproduce/*.yaml)')
        p.add_argument('--work-dir', default=None, help='work folder of the runs (default work_dir/reproduce/<plan>)')
        p.add_argument('--results', default=None, help='folder of the result files (default results/<plan>)')
        p.add_argument('--band', choices=['minmax', 'std'], default='minmax', help='band of the seeds in the PNG')
    run.add_argument('--pretrain-args', default=None, help='extra arguments of every pretraining (a string)')
    run.add_argument('--eval-args', default=None, help='extra arguments of every evaluation (a string)')
    run.add_argument('--epochs', type=int, default=None, help='pretraining epochs of every row (plan value otherwise)')
    run.add_argument('--seeds', type=int, nargs='+', default=None,
                     help="these seeds for every row (the plan's otherwise)")
    run.add_argument('--rows', nargs='+', default=None, help='only these rows (names or folder names)')
    run.add_argument('--dry-run', action='store_true', help='print the commands of the runs to do, run nothing')
    run.add_argument('--keep-going', action='store_true', help='go on with the next run when one fails')
    run.add_argument('--quiet', action='store_true', help="stage output to <stage work_dir>/console.txt")
    run.add_argument('--python', default=sys.executable, help='the Python that runs main.py')
    # one row on the command line
    run.add_argument('--name', default=None, help='command-line row: plan name (default cli)')
    run.add_argument('--row', default=None, help='command-line row: its name')
    run.add_argument('--processor', default=None, help='command-line row: pretraining processor')
    run.add_argument('--config', default=None, help='command-line row: pretraining config')
    for name in ('linear', 'knn', 'finetune', 'semi'):
        run.add_argument(f'--{name}', default=None, help=f'command-line row: {name} evaluation config')
    run.add_argument('--overrides', default=None, help='command-line row: pretraining overrides (a string)')
    run.add_argument('--eval-overrides', default=None, help='command-line row: evaluation overrides (a string)')
    run.add_argument('--knn-interval', type=int, default=None, help='command-line row: kNN monitor interval')
    args = parser.parse_args(argv)
    if args.command == 'aggregate' and args.plan is None and args.results is None:
        raise UserError('aggregate needs a plan file or --results <folder>')
    plan = get_plan(args) if args.plan is not None or args.command == 'run' else None
    command = 'python tools/reproduce.py aggregate ' + (args.plan or f'--results {args.results}')
    if args.command == 'run':
        done, skipped, failed = run_plan(plan, args.rows, args.seeds, args.dry_run, args.keep_going,
                                         quiet=args.quiet, python=args.python)
        if args.dry_run:
            return
        print(f'[reproduce] {len(done)} runs done, {len(skipped)} already done, {len(failed)} failed')
        if plan.source == 'command line':
            command = f'python tools/reproduce.py aggregate --results {plan.results}'
        if not load_results(plan.results):
            raise UserError(f"no run finished: nothing to aggregate in '{plan.results}'")
    print(aggregate(plan, args.results, args.band, command))
    if args.command == 'run' and failed:
        raise UserError(f"{len(failed)} runs failed: {', '.join(failed)}")


if __name__ == '__main__':
    run_tool(main)
