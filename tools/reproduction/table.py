"""Aggregation: ``<results>/table.md`` (mean ± sample std over the seeds, n, the plan's ``floor`` and
``chance`` rows, its ``target`` met or missed by each pretrained run, the pretraining monitor's warnings
replayed on each run's curve, the command that regenerates it) from the result files, and ``curves.png``
(``tools/reproduction/plots.py``).  Accuracies are fractions (0.554) in the result files, percent in the
table."""
import glob
import os
import re
import statistics

from processor.monitor import replay
from tools.reproduction.metrics import pretrain_metrics
from tools.reproduction.plots import plot_curves
from tools.reproduction.plan import SUPERVISED, UNTRAINED
from tools.reproduction.run import read_record
from torchlight.boundary import quote
from torchlight.io import UserError, atomic_write
from torchlight.readers import read_text

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
                ('embed_std', 'final', 'embed std (last)', 1, '.4f'),
                ('embed_std_min', 'final', 'embed std (lowest)', 1, '.4f')]
    return [c for c in columns if any(c[0] in r.get(c[1], {}) for r in results)]


def untrained_rows(plan):
    """{pretraining row name: the untrained row that stands for its starting encoder} (an untrained row's
    ``init`` names it, or it shares the row's first evaluation, config and overrides, and initialisation)."""
    if plan is None:
        return {}
    from torchlight.io import load_config_file
    out = {}
    untrained = [r for r in plan.rows if r['processor'] == UNTRAINED]
    for row in plan.rows:
        if row['processor'] in (UNTRAINED, SUPERVISED) or not row['evaluations']:
            continue
        named = [u for u in untrained if u.get('init') == row['name']]
        init = bool(load_config_file(row['config_path']).get('weights_init', True))
        first = row['evaluations'][0]
        alike = [u for u in untrained if u.get('weights_init') == init and
                 (u['evaluations'][0]['config_path'], u['evaluations'][0]['overrides']) == (first['config_path'],
                                                                                          first['overrides'])]
        if named or alike:
            out[row['name']] = (named or alike)[0]['name']
    return out


def same_probe(a, b, name):
    """Whether two results ran evaluation ``name`` with the same config content (its recorded digest) and
    the same overrides; a result without digests (made before they were recorded) is not known to."""
    digests = [(r.get('config_digests') or {}).get(name) for r in (a, b)]
    overrides = [r['spec']['evaluations'].get(name, {}).get('overrides') for r in (a, b)]
    return None not in digests and digests[0] == digests[1] and overrides[0] == overrides[1]


def paired_gain(runs, baseline_runs, columns):
    """{seed: points} of a row's first evaluation top-1 (last epoch) minus its untrained row's, same seed,
    for the seeds whose two runs used the same probe (``same_probe``)."""
    keys = [c[0] for c in columns if c[1] == 'final' and c[0] != 'pretrain_knn_top1' and c[0].endswith('_top1')]
    if not keys:
        return {}
    key = keys[0]
    base = {r['seed']: r for r in baseline_runs if key in r.get('final', {})}
    return {r['seed']: 100 * (r['final'][key] - base[r['seed']]['final'][key]) for r in runs
            if key in r.get('final', {}) and r['seed'] in base and r.get('evaluations')
            and same_probe(r, base[r['seed']], next(iter(r['evaluations'])))}


def target_misses(result, target):
    """None for a run the target does not judge (no pretraining), else the list of 'metric value < minimum'
    it misses ([] when it meets every one)."""
    if not target or result.get('spec', {}).get('processor') in (UNTRAINED, SUPERVISED):
        return None
    final = result.get('final', {})
    return [f'{key} {final[key]:.4g} < {minimum:g}' if key in final else f'{key} missing'
            for key, minimum in target.items() if key not in final or final[key] < minimum]


def monitor_cell(result):
    """The pretraining monitor's warnings (processor/monitor.py) replayed on the run's curve, 'kind @ epoch'."""
    if result.get('spec', {}).get('processor') in (UNTRAINED, SUPERVISED):
        return ''
    found = replay([r for r in result.get('curve') or [] if 'epoch' in r])
    return ', '.join(f'{kind} @ {epoch}' for kind, epoch in found.items()) or 'none'


def mean_std(values):
    """(mean, sample std or None for one value)."""
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else None)


def cell(values, scale=100, fmt='.1f'):
    """'mean ± std' of ``scale * values`` ('mean' alone for one value, '' for none)."""
    if not values:
        return ''
    mean, std = mean_std([scale * v for v in values])
    return format(mean, fmt) + ('' if std is None else ' ± ' + format(std, fmt.replace('+', '')))


def load_results(folder):
    results = []
    for path in sorted(glob.glob(os.path.join(folder, '*__seed*.json'))):
        result = read_record(path, 'result')
        lowest = pretrain_metrics(result.get('curve') or [])[0].get('embed_std_min')
        if lowest is not None:                          # a metric added after some files were written
            result.setdefault('final', {}).setdefault('embed_std_min', lowest)
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
    target = plan.target if plan else {}
    judged = [r for r in results if target_misses(r, target) is not None]     # none yet: nothing to check
    unknown = [key for key in target if judged and not any(key in r.get('final', {}) for r in judged)]
    if unknown:
        raise UserError(f"plan {plan.source}: target metric {quote(unknown[0])} is in no result file "
                        f"(metrics: {', '.join(sorted({k for r in results for k in r.get('final', {})}))})")
    baselines = {name: base for name, base in untrained_rows(plan).items() if base in groups}
    gains = {name: paired_gain(groups[name], groups[base], columns) for name, base in baselines.items() if name in groups}
    gain_header = ['vs its untrained row (points, paired by seed)'] if any(gains.values()) else []
    header = ['row', 'n'] + [c[2] for c in columns] + gain_header + (['target met'] if target else []) + \
        ['wall (min / run)']
    lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
    for name, runs in groups.items():
        cells = [name, str(len(runs))]
        for key, which, _, scale, fmt in columns:
            cells.append(cell([r[which][key] for r in runs if key in r.get(which, {})], scale, fmt))
        if gain_header:
            values = list(gains.get(name, {}).values())
            cells.append('' if not values else f"{cell(values, 1, '+.1f')} ({sum(v > 0 for v in values)} of "
                                               f"{len(values)} above; {baselines[name]})")
        if target:
            judged = [m for m in (target_misses(r, target) for r in runs) if m is not None]
            cells.append(f'{sum(not m for m in judged)} / {len(judged)}' if judged else '')
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
    adopted = [r for r in results if r.get('adopted_from')]
    if adopted:
        plans = sorted({r['adopted_from'].get('plan') or '?' for r in adopted})
        head.append(f"{len(adopted)} of them adopted from plan {', '.join(plans)} (the same runs; `adopted_from` "
                    'in their files).')
    if target:
        judged = [m for m in (target_misses(r, target) for r in results) if m is not None]
        head.append(f"Target of every pretrained run: {', '.join(f'{k} >= {v:g}' for k, v in target.items())}; "
                    f'met by {sum(not m for m in judged)} of {len(judged)}.')
    if command:
        head.insert(0, f'Generated by `{command}`.')
    return '\n'.join(head) + '\n\n' + '\n'.join(lines) + '\n\n' + per_run(groups, columns, target, gains)


def per_run(groups, columns, target=None, gains=None):
    """Every run's values (a result is a distribution: each seed is shown, not only the mean), its gain over
    its untrained row (same seed), the monitor's warnings replayed on its curve and, with a target, what it
    misses."""
    gains = gains or {}
    gain_header = ['vs untrained (points)'] if any(gains.values()) else []
    header = ['row', 'seed'] + [c[2] for c in columns] + gain_header + ['monitor (replayed)'] + \
        (['target met'] if target else [])
    lines = ['Every run:', '', '| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
    for name, runs in groups.items():
        for r in runs:
            cells = [name, str(r['seed'])] + [cell([r[which][key]], scale, fmt) if key in r.get(which, {}) else ''
                                              for key, which, _, scale, fmt in columns]
            if gain_header:
                gain = gains.get(name, {}).get(r['seed'])
                cells.append('' if gain is None else f'{gain:+.1f}')
            cells.append(monitor_cell(r))
            if target:
                misses = target_misses(r, target)
                cells.append('' if misses is None else 'yes' if not misses else '**no**: ' + '; '.join(misses))
            lines.append('| ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines) + '\n'



def aggregate(plan, results_dir=None, band='minmax', command=None):
    """Write ``table.md`` and ``curves.png`` into the results folder (``plan``: row order, floor and chance;
    may be None); -> the table text."""
    folder = results_dir or plan.results
    results = load_results(folder)
    if not results:
        raise UserError(f"no result files (*__seed*.json) in '{folder}': run the plan first")
    text = table(results, plan, command)
    atomic_write(os.path.join(folder, 'table.md'), lambda f: f.write(text), mode='w')
    plot_curves(grouped(results, plan), os.path.join(folder, 'curves.png'), plan, band)
    return text


README_TABLE = re.compile(r'(<!-- (table|summary): (\S+) -->\n)(.*?)(<!-- end \2 -->)', re.S)
GENERATED_FILES = ('README.md', 'docs/RESULTS.md')      # the files whose blocks ``readme`` refreshes


def readme_tables(path, root):
    """Refresh every block of ``path`` (the README, docs/RESULTS.md) between ``<!-- table: <table.md path> -->``
    and ``<!-- end table -->`` from that file, and between ``<!-- summary: <spec> -->`` and ``<!-- end
    summary -->`` with the spec's table (tools/reproduction/summary.py); paths relative to ``root``; -> the
    names of the blocks that changed."""
    from tools.reproduction.summary import summary_table
    text = read_text(path, 'README')
    if not README_TABLE.search(text):
        raise UserError(f"'{path}' has no generated block (<!-- table: <table.md path> --> or <!-- summary: <spec> "
                        '--> ... <!-- end table / summary -->): give a file that holds them')
    changed = []

    def fill(match):
        kind, name = match.group(2), match.group(3)
        if kind == 'summary':
            body = summary_table(name, root)
        else:
            table_file = os.path.join(root, name)
            if not os.path.isfile(table_file):
                raise UserError(f"{path}: the table block names '{name}', which does not exist "
                                '(run tools/reproduce.py aggregate <plan> first)')
            body = read_text(table_file, 'table file')
        if body != match.group(4):
            changed.append(name)
        return match.group(1) + body + match.group(5)

    new = README_TABLE.sub(fill, text)
    if changed:
        atomic_write(path, lambda f: f.write(new), mode='w')
    return changed
