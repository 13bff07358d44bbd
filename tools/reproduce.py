"""Reproduction runs: the rows of a plan x seeds -> pretraining -> evaluations -> one result JSON per run
-> a mean ± std table and a PNG of the curves.

The plan format is documented in tools/reproduction/plan.py; running and resuming in
tools/reproduction/run.py; the metrics of a result in tools/reproduction/metrics.py.

Usage::

    python tools/reproduce.py run config/reproduce/ucla.yaml              # every row x seed
    python tools/reproduce.py run config/reproduce/ucla.yaml --rows MICA --seeds 1 --dry-run
    python tools/reproduce.py run config/reproduce/ucla.yaml --jobs 12    # every row x seed side by side (a GPU)
    python tools/reproduce.py aggregate config/reproduce/ucla.yaml        # table.md and curves.png
    python tools/reproduce.py readme      # README.md's short results table, docs/RESULTS.md's table blocks
    python tools/reproduce.py adopt config/reproduce/ucla_stability.yaml --row MsMCLR --seed 1 \\
        --from results/ucla_stability_screen/MsMCLR_cosine__seed1.json     # the same run, made in a screen
    python tools/reproduce.py run --name mica_ablation --row 'MICA frest=False' \\
        --processor pretrain_mica --config config/ucla/pretrain_mica.yaml \\
        --linear config/ucla/linear_eval_mica.yaml --seeds 1 2 3 --epochs 100 --knn-interval 5 \\
        --overrides '--model_args frest=False' --eval-overrides '--model_args frest=False'

``run`` aggregates at the end; ``aggregate`` writes ``<results>/table.md`` (printed too) and
``<results>/curves.png`` (tools/reproduction/table.py, plots.py).
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from torchlight.boundary import early  # noqa: E402

early(__name__)              # a Ctrl-C during the imports below is one line

from tools.reproduction.adopt import adopt  # noqa: E402
from tools.reproduction.plan import ROOT, as_tokens, load_plan, parse_plan, slug  # noqa: E402
from tools.reproduction.run import run_plan  # noqa: E402
from tools.reproduction.table import GENERATED_FILES, aggregate, load_results, readme_tables  # noqa: E402
from torchlight import options  # noqa: E402
from torchlight.io import UserError, run_tool  # noqa: E402


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
    readme = sub.add_parser('readme', help="refresh the generated blocks of README.md (its short results table, "
                                           '<!-- summary: <spec> -->) and docs/RESULTS.md (<!-- table: <file> -->)')
    readme.add_argument('path', nargs='*', type=options.input_file,
                        default=[os.path.join(ROOT, p) for p in GENERATED_FILES],
                        help='default: README.md and docs/RESULTS.md')
    adoption = sub.add_parser('adopt', help="take another plan's finished run as a row x seed of this plan, where "
                                            'it is the same run (tools/reproduction/adopt.py)')
    adoption.add_argument('plan', type=options.input_file, help='plan YAML of the row')
    adoption.add_argument('--row', type=options.text, required=True, help="the row's name (or folder name)")
    adoption.add_argument('--seed', type=options.seed, required=True, help='its seed')
    adoption.add_argument('--from', dest='source', type=options.input_file, required=True, help="the other run's result JSON")
    for p in (run, agg):
        p.add_argument('plan', nargs='?', type=options.input_file, default=None, help='plan YAML (config/reproduce/*.yaml)')
        p.add_argument('--work-dir', type=options.output_folder, default=None, help='work folder of the runs (default work_dir/reproduce/<plan>)')
        p.add_argument('--results', type=options.output_folder, default=None, help='folder of the result files (default results/<plan>)')
        p.add_argument('--band', choices=['minmax', 'std'], default='minmax', help='band of the seeds in the PNG')
    run.add_argument('--pretrain-args', type=options.text, default=None, help='extra arguments of every pretraining (a string)')
    run.add_argument('--eval-args', type=options.text, default=None, help='extra arguments of every evaluation (a string)')
    run.add_argument('--epochs', type=options.positive_int, default=None, help='pretraining epochs of every row (plan value otherwise)')
    run.add_argument('--seeds', type=options.seed, nargs='+', default=None,
                     help="these seeds for every row (the plan's otherwise)")
    run.add_argument('--rows', type=options.text, nargs='+', default=None, help='only these rows (names or folder names)')
    run.add_argument('--dry-run', action='store_true', help='print the commands of the runs to do, run nothing')
    run.add_argument('--keep-going', action='store_true', help='go on with the next run when one fails')
    run.add_argument('--quiet', action='store_true', help="stage output to <stage work_dir>/console.txt")
    run.add_argument('--jobs', type=options.integer(1, 256), default=1,
                     help='runs at a time, each its own processes (implies --quiet; one GPU is shared by them; on a '
                          'CPU set OMP_NUM_THREADS to cores / jobs)')
    run.add_argument('--python', type=options.input_file, default=sys.executable, help='the Python that runs main.py')
    # one row on the command line
    run.add_argument('--name', type=options.text, default=None, help='command-line row: plan name (default cli)')
    run.add_argument('--row', type=options.text, default=None, help='command-line row: its name')
    run.add_argument('--processor', type=options.text, default=None, help='command-line row: pretraining processor')
    run.add_argument('--config', type=options.text, default=None, help='command-line row: pretraining config')
    for name in ('linear', 'knn', 'finetune', 'semi'):
        run.add_argument(f'--{name}', type=options.text, default=None, help=f'command-line row: {name} evaluation config')
    run.add_argument('--overrides', type=options.text, default=None, help='command-line row: pretraining overrides (a string)')
    run.add_argument('--eval-overrides', type=options.text, default=None, help='command-line row: evaluation overrides (a string)')
    run.add_argument('--knn-interval', type=options.nonnegative_int, default=None, help='command-line row: kNN monitor interval')
    args = parser.parse_args(argv)
    if args.command == 'readme':
        for path in args.path:
            changed = readme_tables(path, ROOT)
            print(f"[reproduce] {path}: {', '.join(changed) if changed else 'every table block is up to date'}")
        return
    if args.command == 'adopt':
        plan = load_plan(args.plan)
        row = plan.row(args.row)
        print(f"[reproduce] {row['name']} seed {args.seed}: adopted {args.source} -> "
              f'{adopt(plan, row, args.seed, args.source)}')
        return
    if args.command == 'aggregate' and args.plan is None and args.results is None:
        raise UserError('aggregate needs a plan file or --results <folder>')
    plan = get_plan(args) if args.plan is not None or args.command == 'run' else None
    command = 'python tools/reproduce.py aggregate ' + (args.plan or f'--results {args.results}')
    if args.command == 'run':
        done, skipped, failed = run_plan(plan, args.rows, args.seeds, args.dry_run, args.keep_going,
                                         quiet=args.quiet, python=args.python, jobs=args.jobs)
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
