"""Running a plan: every run (row x seed) is ``main.py <pretrain processor>`` then ``main.py
<evaluation>`` for each of the row's evaluations, as subprocesses, in
``<work_dir>/<row>/seed<k>/{pretext,<evaluation>}``.  As soon as a run has finished, its result is written
to ``<results>/<row>__seed<k>.json``: plan, row, seed, the specification (processors, configs, overrides,
epochs), the commands, git commit (and whether the tree was dirty), ``final`` and ``best`` metrics
(``tools/reproduction/metrics.py``), the per-epoch ``curve`` of pretraining, each evaluation's curve, and
the wall seconds and the environment (torch, GPU or CPU threads: ``environment``) of every stage.

Resumable: a rerun skips every run whose result file exists (the committed result files are what
carries over to another machine) and continues a stopped run where its work_dir is still there:
finished stages are skipped (``reproduce_stage.json`` in the stage folder), a stopped stage restarts
with ``--resume auto`` from its ``latest.pt`` (one stopped before its first checkpoint is kept beside it as
``<stage>.stopped<k>`` and starts again).  A result file or stage folder made with another
specification (say other epochs or overrides), or from other contents of its configs (the digest of each
composed config, recorded in the result and the stage folder), is an error, never silently reused:
delete it, or name the row differently.
"""
import concurrent.futures
import hashlib
import itertools
import json
import os
import shlex
import subprocess
import sys
import time

from processor.checkpoint import run_files
from processor.monitor import BEST_PROBE_MODEL
from tools.reproduction.metrics import eval_metrics, pretrain_metrics, read_curve, rounded
from tools.reproduction.plan import ROOT, SUPERVISED, UNTRAINED
from torchlight.io import UserError, atomic_write, load_config_file
from torchlight.readers import load_json

STAGE_FILE = 'reproduce_stage.json'
WALL_FILE = 'reproduce_wall.json'

def specification(row):
    """What makes a run what it is (compared when a result or a stage folder is reused).  An untrained
    row's ``init`` is in it unless it is the family's (the tool's only init before rows had one)."""
    init = {} if row.get('init') in (None, 'family') else {'init': row['init']}
    return {**init, 'processor': row['processor'], 'config': row['config'], 'epochs': row['epochs'],
            'knn_interval': row['knn_interval'], 'overrides': row['overrides'],
            'evaluations': {e['name']: {'processor': e['processor'], 'config': e['config'],
                                        'epochs': e['epochs'], 'overrides': e['overrides'],
                                        **({'checkpoint': e['checkpoint']} if e['checkpoint'] != 'last' else {})}
                            for e in row['evaluations']}}


def config_digests(row):
    """{stage: sha256 (16 hex) of its composed config (``base:`` resolved)}: the contents a run was made
    with, so that a result or stage folder made before a config (or one of its bases) changed is not
    taken for a run of the new one."""
    paths = ([('pretext', row['config_path'])] if row.get('config_path') else []) + \
        [(e['name'], e['config_path']) for e in row['evaluations']]
    return {name: hashlib.sha256(json.dumps(load_config_file(path), sort_keys=True, default=str).encode())
            .hexdigest()[:16] for name, path in paths}


def check_digests(made, now, row, where):
    """A one-line error when ``made`` (the digests a result or stage recorded; absent in older files)
    differs from ``now`` (``config_digests(row)``)."""
    changed = [name for name, digest in (made or {}).items() if name in now and now[name] != digest]
    if changed:
        raise UserError(f"'{where}' was made with another content of the {changed[0]} config than "
                        f"{row['config'] if changed[0] == 'pretext' else 'its evaluation config'} has now: move it "
                        'aside to keep it, or delete it to rerun with the new config')


def knn_test_split(row):
    """``--test_feeder(_args)`` for the kNN monitor when the pretraining config has no test split."""
    if not row['knn_interval'] or row['processor'] == UNTRAINED or load_config_file(row['config_path']).get('test_feeder_args'):
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
    """[(name, work_dir, argv)]: pretraining, then each evaluation of its last checkpoint or its best by the
    ridge probe (the evaluation's ``checkpoint``; an untrained
    row: the evaluations alone, of randomly initialised weights)."""
    base, pretext = run_dirs(plan, row, seed)
    out, weights = [], 'random'
    if row['processor'] != UNTRAINED:
        pretrain = [python, main_py(), row['processor'], '--config', row['config_path'], '--work_dir', pretext,
                    '--seed', str(seed), '--num_epoch', str(row['epochs']), '--resume', 'auto']
        if row['knn_interval'] is not None:
            pretrain += ['--knn_interval', str(row['knn_interval'])] + knn_test_split(row)
        out.append(('pretext', pretext, pretrain + row['overrides']))
        weights = os.path.join(pretext, f"epoch{row['epochs']}_model.pt")
    for e in row['evaluations']:
        read = os.path.join(pretext, BEST_PROBE_MODEL) if e['checkpoint'] == 'best_probe' else weights
        work_dir = os.path.join(base, e['name'])
        # --verdict false: the plan's untrained rows are its comparison (paired by seed in the table)
        argv = [python, main_py(), e['processor'], '--config', e['config_path'], '--work_dir', work_dir,
                '--seed', str(seed), '--weights', read, '--resume', 'auto', '--verdict', 'false']
        if e['epochs'] is not None:
            argv += ['--num_epoch', str(e['epochs'])]
        if row['processor'] == UNTRAINED:
            argv += ['--init_of', row['init_of']] if row['init_of'] else \
                ['--weights_init', str(row['weights_init']).lower()]
        out.append((e['name'], work_dir, argv + e['overrides']))
    return out


def stage_spec(row, name):
    spec = specification(row)
    return {k: spec[k] for k in ('processor', 'config', 'epochs', 'knn_interval', 'overrides')} \
        if name == 'pretext' else dict(spec['evaluations'][name], **{k: spec[k] for k in ('init',) if k in spec})


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
        return load_json(path, 'file')
    except UserError as e:
        raise UserError(f'{e}: delete it to redo that step') from None


def _number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def read_record(path, kind):
    """A result file (``kind`` 'result'), stage file ('stage') or wall file ('wall') of this tool, its form
    checked: a foreign or hand-edited file is one line naming it and the key, not a KeyError later."""
    record = read_json(path)

    def need(ok, key, rule):
        if not ok:
            raise UserError(f"'{path}' is not a {kind} file of tools/reproduce.py: {key} {rule}")
    need(isinstance(record, dict), 'its content', 'must be a JSON object')
    if kind == 'wall':
        need(_number(record.get('wall_s')), "'wall_s'", 'must be a number of seconds')
        need(_number(record.get('leg_started', 0)), "'leg_started'", 'must be a time stamp')
        return record
    spec = record.get('spec')
    need(isinstance(spec, dict) and isinstance(spec.get('evaluations', {}), dict)
         and all(isinstance(v, dict) for v in spec.get('evaluations', {}).values()), "'spec'",
         'must be a specification (processor, config, evaluations)')
    if kind == 'stage':
        need(_number(record.get('wall_s')), "'wall_s'", 'must be a number of seconds')
        return record
    need(isinstance(record.get('row'), str), "'row'", 'must be a row name')
    need(isinstance(record.get('seed'), int) and not isinstance(record.get('seed'), bool), "'seed'",
         'must be an integer')
    for key in ('final', 'best'):
        need(isinstance(record.get(key, {}), dict) and all(_number(v) for v in record.get(key, {}).values()),
             f"'{key}'", 'must map metric names to numbers')
    need(isinstance(record.get('evaluations', {}), dict), "'evaluations'", 'must be a mapping')
    need(isinstance(record.get('stages', {}), dict) and all(isinstance(v, dict) for v in record.get('stages', {}).values()),
         "'stages'", 'must map stage names to records')
    need(isinstance(record.get('curve') or [], list) and all(isinstance(r, dict) for r in record.get('curve') or []),
         "'curve'", 'must be a list of metric records')
    need(_number(record.get('wall_s', 0)), "'wall_s'", 'must be a number of seconds')
    return record


def write_json(obj, path):
    """``obj`` as indented JSON, written atomically (``torchlight.io.atomic_write``)."""
    os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
    atomic_write(path, lambda f: f.write(json.dumps(obj, indent=1) + '\n'), mode='w')



def wall_so_far(wall_file, work_dir):
    """Seconds a stage has run in earlier legs.  A leg killed before it could record its end (the
    ``leg_started`` it wrote is still there) counts until the last write into its work folder."""
    if not os.path.exists(wall_file):
        return 0.0
    record = read_record(wall_file, 'wall')
    if 'leg_started' not in record:
        return record['wall_s']
    writes = [e.stat().st_mtime for e in os.scandir(work_dir) if e.is_file() and e.name != WALL_FILE]
    return record['wall_s'] + max([0.0] + [t - record['leg_started'] for t in writes])


def environment():
    """Where a stage's last leg ran: torch's version, the GPU or the CPU threads a child process inherits (CPU
    results depend on the thread count through the order of float sums)."""
    import platform
    import torch
    env = {'torch': torch.__version__, 'python': platform.python_version()}
    if torch.cuda.is_available():
        env['gpu'] = torch.cuda.get_device_name(0)
    else:
        env.update(cpu=platform.processor() or platform.machine(), threads=torch.get_num_threads())
    return env


def run_stage(name, work_dir, argv, spec, runner, quiet, row=None, digests=None):
    """Run one stage unless its folder holds a finished one (made from the configs of ``digests``, when
    given); -> (wall seconds, resumed, the environment of its last leg: ``environment``)."""
    marker = os.path.join(work_dir, STAGE_FILE)
    if os.path.exists(marker):
        done = read_record(marker, 'stage')
        if done.get('spec') != spec:
            raise UserError(f"'{work_dir}' holds a stage made with another specification ({marker}): delete "
                            "the folder to rerun it with the plan's settings")
        if digests and 'config_digest' in done:
            check_digests({name: done['config_digest']}, digests, row, work_dir)
        return done['wall_s'], done.get('resumed', False), done.get('environment')
    resumed = os.path.exists(os.path.join(work_dir, 'latest.pt'))
    if not resumed and not os.path.exists(os.path.join(work_dir, 'latest.prev.pt')) and run_files(work_dir):
        aside = next(f'{work_dir}.stopped{k}' for k in itertools.count(1)
                     if not os.path.exists(f'{work_dir}.stopped{k}'))
        os.rename(work_dir, aside)
        print(f'[reproduce] {work_dir} holds a leg stopped before its first checkpoint '
              f'({", ".join(run_files(aside))}): kept as {aside}; the stage starts again', flush=True)
    wall_file = os.path.join(work_dir, WALL_FILE)
    spent = wall_so_far(wall_file, work_dir)
    os.makedirs(work_dir, exist_ok=True)
    print(f"[reproduce] {'resume' if resumed else 'start'} {work_dir}: {shlex.join(argv[1:])}", flush=True)
    started = time.time()
    write_json({'wall_s': spent, 'leg_started': started}, wall_file)
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
    record = {'spec': spec, 'wall_s': spent, 'resumed': resumed, 'command': argv[1:], 'environment': environment()}
    if digests and name in digests:
        record['config_digest'] = digests[name]
    write_json(record, marker)
    return spent, resumed, record['environment']


def run_one(plan, row, seed, runner=subprocess_runner, quiet=False, python=sys.executable):
    """Pretraining and evaluations of one row x seed -> the result dict (also written to its file)."""
    spec, digests = specification(row), config_digests(row)
    result = {'plan': plan.name, 'row': row['name'], 'seed': seed, 'spec': spec, 'stages': {}}
    for name, work_dir, argv in stages(plan, row, seed, python):
        wall, resumed, env = run_stage(name, work_dir, argv, stage_spec(row, name), runner, quiet, row, digests)
        result['stages'][name] = {'work_dir': work_dir, 'command': argv[1:], 'wall_s': rounded(wall, 1),
                                  'resumed': resumed, 'environment': env}
    supervised = row['processor'] == SUPERVISED
    pretext = run_dirs(plan, row, seed)[1]
    curve = [] if supervised or row['processor'] == UNTRAINED else read_curve(pretext)
    final, best = pretrain_metrics(curve)
    result['evaluations'] = {}
    if supervised:        # the training run's own test epochs
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
                  config_digests=digests,
                  wall_s=rounded(sum(s['wall_s'] for s in result['stages'].values()), 1),
                  finished=time.strftime('%Y-%m-%dT%H:%M:%S'))
    write_json(result, result_path(plan, row, seed))
    return result


def run_plan(plan, rows=None, seeds=None, dry_run=False, keep_going=False, runner=subprocess_runner, quiet=False,
             python=sys.executable, jobs=1):
    """Every row x seed in plan order; skips finished runs; ``jobs`` > 1 runs that many side by side (each
    its own processes, the stage output in its ``console.txt``; on one GPU they share it). -> (done,
    skipped, failed) run names."""
    selected = [r for r in plan.rows if not rows or r['name'] in rows or r['slug'] in rows]
    unknown = [r for r in rows or [] if r not in {x['name'] for x in plan.rows} | {x['slug'] for x in plan.rows}]
    if unknown:
        raise UserError(f"--rows: no row '{unknown[0]}' in plan {plan.source}; rows: "
                        f"{', '.join(r['name'] for r in plan.rows)}")
    if jobs < 1:
        raise UserError(f'--jobs {jobs}: give a number of runs at a time >= 1')
    todo, skipped = [], []
    for row in selected:
        for seed in (seeds or row['seeds']):
            label = f"{row['name']} seed {seed}"
            path = result_path(plan, row, seed)
            if os.path.exists(path):
                made = read_record(path, 'result')
                if made.get('spec') != specification(row):
                    raise UserError(f"result '{path}' was made with another specification than plan "
                                    f"{plan.source} gives row {row['name']}: delete it to rerun, or rename the row")
                check_digests(made.get('config_digests'), config_digests(row), row, path)
                print(f'[reproduce] {label}: done ({path})', flush=True)
                skipped.append(label)
            elif dry_run:
                print(f'# {label}')
                for _, _, argv in stages(plan, row, seed, python):
                    print(shlex.join(argv))
            else:
                todo.append((row, seed, label, path))
    done, failed = [], []

    def finished(label, path, result, error):
        if error is None:
            print(f"[reproduce] {label}: {summary(result)} -> {path}", flush=True)
            done.append(label)
        elif keep_going:
            print(f'[reproduce] {label}: FAILED: {error}', flush=True)
            failed.append(label)
        else:
            raise UserError(f'{label}: {error}') from error

    if jobs == 1:
        for row, seed, label, path in todo:
            try:
                result, error = run_one(plan, row, seed, runner, quiet, python), None
            except UserError as e:
                result, error = None, e
            finished(label, path, result, error)
        return done, skipped, failed
    with concurrent.futures.ThreadPoolExecutor(jobs) as pool:
        futures = {pool.submit(run_one, plan, row, seed, runner, True, python): (label, path)
                   for row, seed, label, path in todo}
        try:
            for future in concurrent.futures.as_completed(futures):
                error = future.exception()
                if error is not None and not isinstance(error, UserError):
                    raise error
                finished(*futures[future], None if error else future.result(), error)
        except BaseException:
            for future in futures:            # the runs that have not started; the running ones end first
                future.cancel()
            raise
    return done, skipped, failed


def summary(result):
    """'<metric> <last>% (best <best>%), ..., <minutes> min' of a finished run."""
    last, best = result['final'], result['best']
    parts = [f'{k} {100 * last[k]:.1f}%' + (f' (best {100 * best[k]:.1f}%)' if best.get(k, last[k]) != last[k] else '')
             for k in last if k.endswith('_top1')]
    return ', '.join(parts) + f", {result['wall_s'] / 60:.1f} min"

