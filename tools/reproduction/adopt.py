"""Adopting a finished run of another plan (a screen's candidate that became the recipe): its result
counts for a row x seed of this plan when that run would compute exactly the same thing.  That is checked,
not assumed:

- every stage of the row (pretraining, each evaluation) has a stage of the source run of the same name
  (the source may have more evaluations: they are left out of the adopted result),
  processor and arguments: the processor's full argument set that the source stage wrote to its
  ``config.yaml`` equals the one this plan's command resolves to now, but for ``PATH_KEYS`` (where a stage
  lives and what it reads: the folder, the config file's path, the weights' path);
- the training code (``CODE``) is the same as at the source's commit, in this working tree, and the source
  was made from a clean tree.

The adopted result is the source's measurements under this plan's row (its specification and config
digests, so ``run`` skips it), with ``adopted_from`` naming the source result, plan, row and commit.
"""
import os
import re
import subprocess

import yaml

from processor import PROCESSORS
from tools.reproduction.plan import ROOT
from tools.reproduction.run import config_digests, read_record, result_path, specification, stages, write_json
from torchlight.boundary import quote
from torchlight.io import UserError, _plain, import_class
from torchlight.readers import load_yaml

PATH_KEYS = ('work_dir', 'config', 'weights')
CODE = ('main.py', 'net', 'feeder', 'processor', 'torchlight')


def resolved_arguments(argv):
    """The argument set ``main.py`` would run (and write to ``config.yaml``) for ``argv`` ([python,
    main.py, processor, options...]), without building the run."""
    cls = import_class(PROCESSORS[argv[2]])
    processor = cls.__new__(cls)
    processor.load_arg(argv[3:])
    return yaml.safe_load(yaml.safe_dump(_plain(vars(processor.arg)), sort_keys=False))


def changed_code(commit, root=ROOT):
    """The files of ``CODE`` that differ between ``commit`` and the working tree of ``root`` ([] when none)."""
    try:
        out = subprocess.run(['git', 'diff', '--name-only', commit, '--', *CODE], cwd=root, capture_output=True,
                             text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as e:
        reason = (getattr(e, 'stderr', None) or str(e)).strip().splitlines()
        raise UserError(f"cannot compare the code with commit {quote(commit)} (git: {reason[0] if reason else e})") from None
    return out.split()


def check_stage(name, argv, source_stage, where):
    """A one-line error unless the source's stage ran ``argv``'s processor with the same arguments."""
    if not isinstance(source_stage.get('work_dir'), str) or not isinstance(source_stage.get('command', []), list):
        raise UserError(f"{where}: its {name} stage record has no work_dir / command: not a result file of "
                        'tools/reproduce.py')
    made_file = os.path.join(source_stage['work_dir'], 'config.yaml')
    if not os.path.exists(made_file):
        raise UserError(f"'{made_file}' is missing: the {name} stage folder of {where} is needed to compare "
                        'its arguments (run adopt where that run was made)')
    made_processor = source_stage['command'][1] if len(source_stage.get('command', [])) > 1 else None
    if made_processor != argv[2]:
        raise UserError(f"{where}: its {name} stage ran processor {quote(made_processor)}, the row runs {quote(argv[2])}")
    made = load_yaml(made_file, "stage's config file")
    if not isinstance(made, dict):
        raise UserError(f"'{made_file}' holds no argument mapping: not a stage's config.yaml")
    now = resolved_arguments(argv)
    differ = [k for k in list(now) + [k for k in made if k not in now]
              if k not in PATH_KEYS and made.get(k, '<absent>') != now.get(k, '<absent>')]
    if differ:
        key = differ[0]
        raise UserError(f"{where}: its {name} stage ran with {key}={quote(made.get(key, '<absent>'))}, the row resolves "
                        f"to {key}={quote(now.get(key, '<absent>'))} ({len(differ)} key(s) differ): not the same run")


def adopt(plan, row, seed, source_file):
    """Check (module docstring) and write the adopted result of ``row`` x ``seed``; -> its path."""
    source = read_record(source_file, 'result')
    where = f"'{source_file}'"
    target = result_path(plan, row, seed)
    if os.path.exists(target):
        raise UserError(f"'{target}' exists: {row['name']} seed {seed} is done (delete it to adopt another run)")
    if source.get('seed') != seed:
        raise UserError(f"{where} is seed {source.get('seed')}, not {seed}")
    if source.get('adopted_from'):
        origin = source['adopted_from'].get('result') if isinstance(source['adopted_from'], dict) else None
        raise UserError(f"{where} is itself adopted: adopt its source, {quote(origin)}")
    if not isinstance(source.get('commit'), str) or not re.fullmatch(r'[0-9a-f]{7,40}', source['commit']) \
            or source.get('dirty') is not False:
        raise UserError(f"{where} was made from {'a dirty tree' if source.get('dirty') else 'no known commit'}: "
                        'its code cannot be checked')
    changed = changed_code(source['commit'])
    if changed:
        raise UserError(f"{where}: the code changed since its commit {source['commit'][:7]} ({changed[0]}"
                        f"{f' and {len(changed) - 1} more' if len(changed) > 1 else ''}): rerun it instead")
    planned = stages(plan, row, seed)
    names = [name for name, _, _ in planned]
    made = source.get('stages', {})
    if not isinstance(made, dict) or not set(names) <= set(made):
        raise UserError(f"{where} has stages {', '.join(sorted(made))}; the row has {', '.join(names)}")
    for name, _, argv in planned:
        check_stage(name, argv, made[name], where)
    extra = [name for name in made if name not in names]       # the source's other evaluations are left out
    kept = {part: {k: v for k, v in (source.get(part) or {}).items() if not k.startswith(tuple(f'{e}_' for e in extra))}
            for part in ('final', 'best')}
    result = dict(source, plan=plan.name, row=row['name'], spec=specification(row),
                  stages={n: made[n] for n in names},
                  evaluations={n: v for n, v in (source.get('evaluations') or {}).items() if n not in extra},
                  **kept, config_digests=config_digests(row),
                  adopted_from={'result': source_file, 'plan': source.get('plan'), 'row': source.get('row'),
                                'commit': source['commit']})
    write_json(result, target)
    return target
