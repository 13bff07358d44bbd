"""The metrics of a run's result file, read from the ``metrics.jsonl`` of its stages (processor/metrics.py).

``<eval>_top1`` for linear / finetune / semi evaluations and recognition rows (``best``: the best test
epoch, the number the family reports; ``final``: the last one; with ``_top5``, ``_class_top1``, ``_epoch``),
``knn_top1`` for a kNN evaluation (the first k of its ``knn_k``; every k as ``knn_top1_k<k>``), and from
the pretraining curve ``pretrain_knn_top1`` (the kNN monitor, ``knn_interval``; final and best),
``pretrain_probe_top1`` (its ridge probe; final, epoch 0 as ``pretrain_probe_init``, and best),
``pretrain_knn_drop`` (the largest fall below its running best along the schedule, from the initial
encoder on), ``loss``, ``loss_over_uniform`` (InfoNCE / ln(K+1)) and ``embed_std`` (last epoch).
Accuracies are fractions.
"""
import math
import os

from processor.metrics import METRICS_FILE, read_metrics
from torchlight.io import UserError


def rounded(value, digits=6):
    return round(value, digits) if isinstance(value, float) and math.isfinite(value) else value


def read_curve(work_dir):
    """The ``metrics.jsonl`` records of a stage, their floats rounded."""
    return [{k: rounded(v) for k, v in r.items()} for r in read_metrics(os.path.join(work_dir, METRICS_FILE))]


def eval_metrics(work_dir, name, processor):
    """(final, best, curve) of an evaluation from its ``metrics.jsonl`` (processor/metrics.py): for kNN
    ``knn_top1`` (the first k) and ``knn_top1_k<k>``; otherwise ``<name>_top1``, ``_top5``,
    ``_class_top1`` and ``_epoch`` of the last and of the best (top-1) test epoch."""
    curve = read_curve(work_dir)
    if not curve:
        raise UserError(f"evaluation '{name}' wrote no metrics ({os.path.join(work_dir, METRICS_FILE)}): did it "
                        "finish?")
    if processor == 'knn_evaluation':
        by_k = {r['k']: r['top1'] for r in curve if 'k' in r}
        final = {'knn_top1': curve[0]['top1'], **{f'knn_top1_k{k}': v for k, v in sorted(by_k.items())}}
        return final, dict(final), curve

    def pick(record):
        return dict({f'{name}_{k}': record[k] for k in ('top1', 'top5', 'class_top1') if k in record},
                    **{f'{name}_epoch': record['epoch']})
    best = max(curve, key=lambda r: (r['top1'], -r['epoch']))
    return pick(curve[-1]), pick(best), curve


def largest_drop(values):
    """The largest fall of a series below its running maximum (0 for a non-decreasing one)."""
    best, drop = -math.inf, 0.0
    for v in values:
        best = max(best, v)
        drop = max(drop, best - v)
    return drop


def pretrain_metrics(curve):
    """(final, best) of the pretraining curve (metrics.jsonl records); ``embed_std_min`` is the lowest
    epoch's embedding std (the narrow-cone measure of docs/METHODS.md, "Every seed learns")."""
    final, best = {}, {}
    trained = [r for r in curve if r['epoch'] > 0]
    if trained:
        for key in ('loss', 'loss_over_uniform', 'embed_std'):
            if key in trained[-1]:
                final[key] = trained[-1][key]
        stds = [r['embed_std'] for r in trained if 'embed_std' in r]
        if stds:
            final['embed_std_min'] = min(stds)
    knn = [(r['epoch'], r['knn_top1']) for r in curve if 'knn_top1' in r]
    if knn:
        final['pretrain_knn_top1'] = knn[-1][1]
        final['pretrain_knn_drop'] = largest_drop([v for _, v in knn])
        epoch, value = max(knn, key=lambda ev: (ev[1], -ev[0]))
        best.update(pretrain_knn_top1=value, pretrain_knn_epoch=epoch)
    probe = [(r['epoch'], r['probe_top1']) for r in curve if r.get('probe_top1') is not None]
    if probe:
        final['pretrain_probe_top1'] = probe[-1][1]
        final['pretrain_probe_init'] = probe[0][1] if probe[0][0] == 0 else None
        epoch, value = max(probe, key=lambda ev: (ev[1], -ev[0]))
        best.update(pretrain_probe_top1=value, pretrain_probe_epoch=epoch)
    return final, best

