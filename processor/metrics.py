"""Results as data: every processor appends one JSON line per evaluated epoch to
``work_dir/metrics.jsonl`` (``epoch``, 1-based; 0 for an evaluation before or without training).

* pretraining: the epoch means of the model's scalars and the kNN monitor (processor/pretrain.py);
* linear, finetune, semi-supervised evaluation and recognition: ``score_metrics`` of each test epoch,
  ``top1``, ``top5``, ``class_top1`` (macro average of the per-class top-1) and ``loss`` (cross-entropy);
* kNN evaluation: one line per k (``k``) with ``top1``, ``top5`` and ``class_top1`` of the vote scores.

Accuracies are fractions.  A resumed run drops the lines after its resume epoch and appends from there.
"""
import json
import os

import torch
import torch.nn.functional as F

from torchlight.readers import read_lines

METRICS_FILE = 'metrics.jsonl'


def read_metrics(path):
    """The records of a ``metrics.jsonl`` (a torn last line, from a kill while writing, is skipped)."""
    records = []
    if not os.path.exists(path):
        return records
    for line in read_lines(path, 'metrics file'):
        try:
            record = json.loads(line)
        except (ValueError, RecursionError):
            continue
        if isinstance(record, dict) and isinstance(record.get('epoch'), int) and not isinstance(record['epoch'], bool) \
                and record['epoch'] >= 0:
            records.append(record)
    return records


def topk_accuracy(scores, labels, k):
    """Fraction of samples whose label is among the k highest scores."""
    k = min(k, scores.size(1))
    hit = (scores.topk(k, dim=1).indices == labels.view(-1, 1)).any(dim=1)
    return hit.float().mean().item()


def class_top1(scores, labels):
    """Macro-averaged per-class top-1: the mean over the classes present in ``labels`` of their top-1."""
    hit = (scores.argmax(dim=1) == labels).float()
    classes, inverse = labels.unique(return_inverse=True)
    per_class = torch.zeros(len(classes), dtype=hit.dtype, device=hit.device).index_add_(0, inverse, hit)
    counts = torch.bincount(inverse, minlength=len(classes)).to(hit.dtype)
    return (per_class / counts).mean().item()


def score_metrics(scores, labels, loss=True):
    """{top1, top5, class_top1[, loss]} of class scores (N, num_class) against labels (N,)."""
    record = {'top1': topk_accuracy(scores, labels, 1), 'top5': topk_accuracy(scores, labels, 5),
              'class_top1': class_top1(scores, labels)}
    if loss:
        record['loss'] = F.cross_entropy(scores.float(), labels).item()
    return record


class MetricsFile:
    """``work_dir/metrics.jsonl`` of a run; written by the main process only."""

    def __init__(self, work_dir, enabled=True):
        self.path = os.path.join(work_dir, METRICS_FILE)
        self.enabled = enabled

    def start(self, resumed_epoch=None):
        """A new run removes the file; a run resumed at ``resumed_epoch`` keeps the lines up to it.  -> the
        records kept."""
        if not self.enabled:
            return []
        if resumed_epoch is None:
            if os.path.exists(self.path):
                os.remove(self.path)
            return []
        keep = [r for r in read_metrics(self.path) if r['epoch'] <= resumed_epoch]
        tmp = self.path + '.tmp'
        with open(tmp, 'w') as f:
            f.writelines(json.dumps(r) + '\n' for r in keep)
        os.replace(tmp, self.path)
        return keep

    def write(self, record):
        if self.enabled:
            with open(self.path, 'a') as f:
                f.write(json.dumps(record) + '\n')
