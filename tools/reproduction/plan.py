"""The plan of ``tools/reproduce.py``: its YAML format (documented here, once) and its validation.

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
    target:                            # what every pretrained run must reach: metric of the result's
      embed_std_min: 0.003             # 'final' (fractions, as in the result files) -> its minimum;
      pretrain_knn_top1: 0.35          # the table counts and names the runs that miss it
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

      untrained ST-GCN:                # the encoder with random weights under the same probes
        processor: untrained
        evaluations:
          linear: config/ucla/linear_eval_skeletonclr.yaml

Row keys: processor, config, evaluations, overrides, eval_overrides, seeds, epochs, knn_interval,
description, init (untrained rows).  A ``recognition`` row has no evaluations and no kNN monitor: its run (folder
``recognition``) reports ``recognition_top1`` from its own test epochs (``eval_interval``).  An
``untrained`` row (no config, no overrides) has no pretraining: its evaluations run on the evaluation
config's encoder with random weights (``--weights random``, seeded as every run), the baseline a
pretrained row must beat under the same probe.  Its ``init`` is the initialisation of the pretraining
it stands for: a row name (that row's ``weights_init``, passed as ``--init_of <its config>``), or
``family`` / ``pytorch`` (``--weights_init true / false``); by default the pretraining rows evaluated
with the same first evaluation config, which must agree on one init.
Plan-level ``overrides`` / ``eval_overrides`` come first, the row's after them (the last value wins on
the command line; dict options merge).  An evaluation is a config path or a mapping
with ``config``, ``processor`` (default from how its name begins: linear* -> linear_evaluation, knn* ->
knn_evaluation, finetune* / semi* -> finetune_evaluation), ``overrides``, ``epochs``, ``checkpoint``
(``last``, the default, or ``best_probe``: the best epoch by the pretraining's ridge probe, which needs
``knn_interval``).  The tool sets ``--work_dir``, ``--seed``, ``--num_epoch`` (pretraining), ``--weights``
(evaluations, that pretraining checkpoint), ``--resume auto`` and ``--knn_interval`` itself; they are refused in
overrides.  With ``knn_interval`` > 0 and no ``test_feeder_args`` in the pretraining config, the test
split of the row's first evaluation config (kNN first) is given to pretraining.  Relative config paths
are looked up in the current folder, then in the repository; data paths in the configs are relative
to the current folder, as for ``main.py``.
"""
import os
import re
import shlex

from processor import PROCESSORS
from torchlight.boundary import quote
from torchlight.io import UserError, closest_keys, import_class, load_config_file
from torchlight.readers import load_yaml_mapping

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PLAN_KEYS = ('name', 'description', 'seeds', 'epochs', 'knn_interval', 'overrides', 'eval_overrides',
             'work_dir', 'results', 'floor', 'chance', 'target', 'rows')
ROW_KEYS = ('processor', 'config', 'evaluations', 'overrides', 'eval_overrides', 'seeds', 'epochs',
            'knn_interval', 'description', 'init')
EVAL_KEYS = ('config', 'processor', 'overrides', 'epochs', 'checkpoint')
CHECKPOINTS = ('last', 'best_probe')   # the pretraining checkpoint an evaluation reads
PRETRAINERS = sorted(p for p, path in PROCESSORS.items() if path == PROCESSORS['pretrain'])
SUPERVISED = 'recognition'     # a row that trains a classifier and tests it itself (no evaluations)
UNTRAINED = 'untrained'        # a row that evaluates the randomly initialised encoder (no pretraining)
EVAL_PROCESSORS = {'linear': 'linear_evaluation', 'knn': 'knn_evaluation', 'finetune': 'finetune_evaluation',
                   'semi': 'finetune_evaluation'}
SET_BY_TOOL = {'--work_dir': 'the work folder', '-w': 'the work folder', '--seed': 'seeds:',
               '--num_epoch': 'epochs:', '--weights': 'the last pretraining checkpoint',
               '--resume': 'the tool (auto)', '--config': 'config:', '-c': 'config:',
               '--knn_interval': 'knn_interval:', '--verdict': "the tool (false: the plan's untrained rows)",
               '--init_of': 'init:'}


# ------------------------------------------------------------------------------------------------
# the plan

class Plan:
    """A validated plan: ``name``, ``rows`` (list of dicts in plan order), folders and references."""

    def __init__(self, name, rows, work_dir, results, floor, chance, source, description='', target=None):
        self.name, self.rows, self.work_dir, self.results = name, rows, work_dir, results
        self.floor, self.chance, self.source, self.description = floor, chance, source, description
        self.target = target or {}

    def row(self, name):
        """The row of this name (or folder name); a one-line error naming the rows otherwise."""
        found = [r for r in self.rows if name in (r['name'], r['slug'])]
        if not found:
            raise UserError(f"--row: no row '{name}' in plan {self.source}; rows: "
                            f"{', '.join(r['name'] for r in self.rows)}")
        return found[0]


def slug(name):
    """A row name as a folder / file name."""
    return re.sub(r'[^A-Za-z0-9._+-]+', '_', name).strip('_') or 'row'


def find_config(path, where):
    """A relative config path from the current folder, else from the repository."""
    if not isinstance(path, str) or not path:
        raise UserError(f'{where}: expected a config path, got {quote(path)}')
    for candidate in (path, os.path.join(ROOT, path)):
        if os.path.isfile(candidate):
            return os.path.abspath(candidate)
    raise UserError(f"{where}: config '{path}' does not exist")



def check_keys(mapping, valid, where):
    if not isinstance(mapping, dict):
        raise UserError(f'{where} must be a mapping, got {quote(mapping)}')
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
            raise UserError(f'{where}: {e} in {quote(value)}') from None
    if isinstance(value, list) and all(isinstance(v, (str, int, float, bool)) for v in value):
        return [str(v).lower() if isinstance(v, bool) else str(v) for v in value]
    raise UserError(f'{where}: expected a string or a list of command-line arguments, got {quote(value)}')


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


def check_seeds(value, where):
    """A seed or a list of seeds: integers in 0 .. 2**32 - 1 (what ``--seed`` of main.py accepts)."""
    values = value if isinstance(value, list) else [value]
    if not values or not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2 ** 32 for v in values):
        raise UserError(f'{where}: expected a seed or a list of seeds (integers 0 .. 2**32-1), got {quote(value)}')
    return values


def check_epochs(value, where, minimum=1):
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise UserError(f'{where}: expected an integer >= {minimum}, got {quote(value)}')
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
    default = next((EVAL_PROCESSORS[k] for k in EVAL_PROCESSORS if name.startswith(k)), None)
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
    checkpoint = value.get('checkpoint', 'last')
    if checkpoint not in CHECKPOINTS:
        raise UserError(f"{where}.checkpoint: {quote(checkpoint)} is not one of {', '.join(CHECKPOINTS)}")
    return {'name': name, 'processor': processor, 'config': value['config'], 'config_path': config,
            'overrides': overrides, 'epochs': check_epochs(value.get('epochs'), f'{where}.epochs'),
            'checkpoint': checkpoint}


def parse_plan(content, source, extra_pretrain=(), extra_eval=(), epochs=None):
    """Validate a plan mapping (``source``: its file, for the messages) -> ``Plan``.  ``extra_*``: arguments
    appended to every pretraining / evaluation; ``epochs``: the pretraining epochs of every row."""
    check_keys(content, PLAN_KEYS, f'plan {source}')
    rows = content.get('rows')
    if not isinstance(rows, dict) or not rows:
        raise UserError(f"plan {source}: 'rows' must be a non-empty mapping of row names to rows")
    name = content.get('name') or os.path.splitext(os.path.basename(source))[0]
    if not isinstance(name, str) or slug(name) != name:
        raise UserError(f"plan {source}: name {quote(name)} must be a plain folder name (letters, digits, ._+-)")
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
        kinds = PRETRAINERS + [SUPERVISED, UNTRAINED]
        if processor not in kinds:
            raise UserError(f"{where}.processor: {quote(processor)} is not a pretraining processor (or "
                            f"{SUPERVISED}, {UNTRAINED}); use one of {', '.join(kinds)}")
        supervised, untrained = processor == SUPERVISED, processor == UNTRAINED
        if not untrained and row.get('init') is not None:
            raise UserError(f"{where}.init: only an {UNTRAINED} row has an init (a pretraining row's is its "
                            "config's weights_init)")
        if untrained:
            for key in ('config', 'overrides', 'epochs', 'knn_interval'):
                if row.get(key) is not None:
                    raise UserError(f"{where}.{key}: an {UNTRAINED} row has no pretraining; drop '{key}'")
        elif 'config' not in row:
            raise UserError(f"{where}: 'config' is missing")
        config = None if untrained else find_config(row['config'], f'{where}.config')
        seeds = check_seeds(given(row, 'seeds', given(defaults, 'seeds', [1])), f'{where}.seeds')
        if len(set(seeds)) != len(seeds):
            raise UserError(f'{where}.seeds: {quote(seeds)} repeats a seed')
        if untrained:
            row_epochs, knn_interval, overrides = 0, None, []
        else:
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
                raise UserError(f"{where}.evaluations: {quote(eval_name)} is not a usable name (letters, digits, ._+-; "
                                "not 'pretext')")
            evaluation = parse_evaluation(eval_name, value, f'{where}.evaluations.{eval_name}')
            evaluation['overrides'] = eval_overrides + evaluation['overrides'] + list(extra_eval)
            check_overrides(evaluation['overrides'], evaluation['processor'], f'{where}.eval_overrides')
            if evaluation['checkpoint'] == 'best_probe' and not knn_interval:
                raise UserError(f"{where}.evaluations.{eval_name}.checkpoint: best_probe needs the pretraining's "
                                'ridge probe: set knn_interval (plan or row) > 0')
            evaluations.append(evaluation)
        parsed.append({'name': row_name, 'slug': slug(row_name), 'processor': processor, 'config': row.get('config'),
                       'config_path': config, 'seeds': seeds, 'epochs': row_epochs, 'knn_interval': knn_interval,
                       'overrides': overrides, 'evaluations': evaluations,
                       'description': row.get('description', ''), 'init': row.get('init')})
    for row in parsed:
        if row['processor'] == UNTRAINED:
            resolve_init(row, parsed, f"plan {source}: rows.{row['name']}.init")
    floor = content.get('floor') or {}
    if not isinstance(floor, dict) or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                              for v in floor.values()):
        raise UserError(f'plan {source}: floor must map row names to numbers (percent), got {quote(floor)}')
    chance = content.get('chance')
    if chance is not None and (not isinstance(chance, (int, float)) or isinstance(chance, bool)):
        raise UserError(f'plan {source}: chance must be a number (percent), got {quote(chance)}')
    target = content.get('target') or {}
    if not isinstance(target, dict) or not all(isinstance(k, str) and re.fullmatch(r'[a-z0-9_]+', k)
                                               and isinstance(v, (int, float)) and not isinstance(v, bool)
                                               for k, v in target.items()):
        raise UserError(f'plan {source}: target must map metric names (e.g. pretrain_knn_top1) to numbers, '
                        f'got {quote(target)}')
    for key in ('work_dir', 'results'):
        if content.get(key) is not None and not isinstance(content[key], str):
            raise UserError(f'plan {source}: {key} must be a folder path, got {quote(content[key])}')
    return Plan(name, parsed, content.get('work_dir') or os.path.join('work_dir', 'reproduce', name),
                content.get('results') or os.path.join('results', name), dict(floor), chance, source,
                content.get('description') or '', dict(target))


INITS = {'family': True, 'pytorch': False}


def resolve_init(row, rows, where):
    """An untrained row's init (module docstring): sets ``row['init']`` (a row name, family or pytorch),
    ``row['init_of']`` (that row's config path, or None) and ``row['weights_init']``."""
    init = row['init']
    if init is not None and (not isinstance(init, str) or not init):
        raise UserError(f'{where}: expected a row name, family or pytorch, got {init!r}')
    if init in INITS:
        row.update(init_of=None, weights_init=INITS[init])
        return
    pretrained = [r for r in rows if r['processor'] in PRETRAINERS]
    if init is not None:
        chosen = [r for r in pretrained if init in (r['name'], r['slug'])]
        if not chosen:
            raise UserError(f"{where}: {init!r} is not a pretraining row of the plan, nor family / pytorch")
    else:
        first = row['evaluations'][0]['config_path']
        chosen = [r for r in pretrained if any(e['config_path'] == first for e in r['evaluations'])]
        inits = {bool(load_config_file(r['config_path']).get('weights_init', True)) for r in chosen}
        if len(inits) != 1:
            raise UserError(f"{where}: {'no pretraining row' if not inits else 'pretraining rows of different inits'} "
                            f"share{'s' if not inits else ''} its evaluation config: name the pretraining it stands "
                            'for (a row name), or family / pytorch')
    source = chosen[0]
    row.update(init=source['name'], init_of=source['config_path'],
               weights_init=bool(load_config_file(source['config_path']).get('weights_init', True)))


def load_plan(path, **kwargs):
    if not os.path.isfile(path):
        raise UserError(f"plan '{path}' does not exist")
    return parse_plan(load_yaml_mapping(path, 'plan'), path, **kwargs)
