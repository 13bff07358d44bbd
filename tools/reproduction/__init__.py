"""``tools/reproduce.py`` as a package, by role: ``plan`` (the plan format and its validation), ``run``
(running and resuming the runs, the result files), ``metrics`` (a run's metrics from its stages'
``metrics.jsonl``), ``table`` (aggregation into ``table.md``), ``plots`` (``curves.png``) and ``adopt``
(another plan's run taken where it is the same run)."""
from tools.reproduction.metrics import eval_metrics, largest_drop, pretrain_metrics
from tools.reproduction.plan import Plan, load_plan, parse_plan, slug
from tools.reproduction.run import git_commit, read_json, result_path, run_one, run_plan, stages, write_json
from tools.reproduction.table import aggregate, load_results, mean_std, table

__all__ = ['Plan', 'aggregate', 'eval_metrics', 'git_commit', 'largest_drop', 'load_plan', 'load_results',
           'mean_std', 'parse_plan', 'pretrain_metrics', 'read_json', 'result_path', 'run_one', 'run_plan', 'slug',
           'stages', 'table', 'write_json']
