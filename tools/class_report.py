"""Per-class analysis of one evaluation result: per-class accuracy, confusion matrix and CSRE's
difficulty levels.

Reads a ``test_result.pkl`` (pickled ``{sample_name: scores (num_class,)}``, as written by the
evaluation processors or by ``tools/ensemble.py --out``) and the split's ``*_label.pkl``; the result
must hold exactly the label file's samples. Writes into ``--out-folder`` (default ``report/`` next to the
result file, i.e. in the run's work_dir):

* ``report.txt``: top-1/top-5, per-class count/correct/accuracy, the difficulty levels, the most
  frequent confusions (also printed);
* ``per_class.csv``: class id, name, count, correct, accuracy;
* ``confusion_matrix.csv``: counts, rows = true class, columns = predicted class;
* ``confusion_matrix.png``: row-normalised heat map, only when matplotlib is importable (otherwise
  a notice is printed and the PNG is skipped).

Difficulty levels (CSRE): easy = per-class accuracy > 90%, medium = 80-90% (both ends included),
hard = < 80%; classes without validation samples belong to no level. Level means are unweighted
means of the per-class accuracies.

Class names: ``--class-names`` is a description YAML (``config/text/descriptions/*.yaml``, the
``classes[i].label`` entries) or a text file with one name per line (blank lines ignored); its number
of names must equal the number of classes. Default: ``class 0``, ``class 1``, ...

    python tools/class_report.py --label data/ucla/val_label.pkl --result work/ucla/test_result.pkl \\
        --class-names config/text/descriptions/ucla.yaml --out-folder report/
"""
import argparse
import csv
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from torchlight.boundary import early  # noqa: E402

early(__name__)              # a Ctrl-C during the imports below is one line

import numpy as np  # noqa: E402

from tools.ensemble import load_streams, topk  # noqa: E402
from net.text_features import read_dataset_info  # noqa: E402
from torchlight import options  # noqa: E402
from torchlight.io import StagedFiles, UserError, run_tool  # noqa: E402
from torchlight.readers import load_yaml, read_lines  # noqa: E402

EASY_ABOVE = 0.9    # easy: accuracy > 90%
HARD_BELOW = 0.8    # hard: accuracy < 80%; medium in between (inclusive)
LEVELS = ('easy', 'medium', 'hard')


def confusion_matrix(labels, preds, num_class):
    """``(num_class, num_class)`` int64 counts, ``cm[true, predicted]``."""
    cm = np.zeros((num_class, num_class), dtype=np.int64)
    np.add.at(cm, (np.asarray(labels, dtype=np.int64), np.asarray(preds, dtype=np.int64)), 1)
    return cm


def per_class_accuracy(cm):
    """``(accuracy, count, correct)`` per class from a confusion matrix; accuracy is NaN for classes
    without samples."""
    count = cm.sum(axis=1)
    correct = np.diag(cm).copy()
    with np.errstate(invalid='ignore', divide='ignore'):
        acc = np.where(count > 0, correct / np.maximum(count, 1), np.nan)
    return acc, count, correct


def difficulty_levels(acc, easy_above=EASY_ABOVE, hard_below=HARD_BELOW):
    """``{'easy': [ids], 'medium': [ids], 'hard': [ids]}``: easy > ``easy_above``, hard <
    ``hard_below``, medium otherwise; NaN accuracies (no samples) are left out."""
    levels = {name: [] for name in LEVELS}
    for c, a in enumerate(np.asarray(acc, dtype=np.float64)):
        if np.isnan(a):
            continue
        levels['easy' if a > easy_above else 'hard' if a < hard_below else 'medium'].append(c)
    return levels


def level_means(acc, levels):
    """Unweighted mean per-class accuracy of each level (NaN for an empty level)."""
    acc = np.asarray(acc, dtype=np.float64)
    return {name: (float(np.mean(acc[ids])) if ids else float('nan')) for name, ids in levels.items()}


def load_class_names(path, num_class=None):
    """Names from a description YAML (``classes[i].label``) or a text file (one name per line)."""
    if not os.path.isfile(path):
        raise UserError(f"class-names file '{path}' does not exist")
    if path.lower().endswith(('.yaml', '.yml')):
        data = load_yaml(path, 'class-names YAML')
        classes = data.get('classes') if isinstance(data, dict) else None
        if not isinstance(classes, list) or not classes:
            raise UserError(f"class-names YAML '{path}' needs a non-empty 'classes' list "
                            "(the config/text/descriptions format)")
        names = []
        for i, entry in enumerate(classes):
            label = entry.get('label') if isinstance(entry, dict) else entry   # dataset.yaml: plain names
            if not isinstance(label, str) or not label.strip():
                raise UserError(f"class-names YAML '{path}': classes[{i}] has no non-empty 'label'")
            names.append(label.strip())
    else:
        names = [line.strip() for line in read_lines(path, 'class-names file') if line.strip()]
        if not names:
            raise UserError(f"class-names file '{path}' has no names")
    if num_class is not None and len(names) != num_class:
        raise UserError(f"class-names file '{path}' has {len(names)} names but the result has "
                        f"{num_class} classes")
    return names


def _pct(x):
    return '     -' if np.isnan(x) else f'{100 * x:6.2f}'


def analyse(scores, labels, num_class=None):
    """Everything the report needs from ``(N, C)`` scores and labels -> dict."""
    scores = np.asarray(scores)
    num_class = scores.shape[1] if num_class is None else num_class
    preds = scores.argmax(axis=1)
    cm = confusion_matrix(labels, preds, num_class)
    acc, count, correct = per_class_accuracy(cm)
    levels = difficulty_levels(acc)
    return {'top1': topk(scores, labels, 1), 'top5': topk(scores, labels, 5), 'confusion': cm,
            'accuracy': acc, 'count': count, 'correct': correct, 'levels': levels,
            'level_means': level_means(acc, levels)}


def top_confusions(cm, n=10):
    """The ``n`` largest off-diagonal counts -> ``[(true, predicted, count)]``."""
    off = cm.copy()
    np.fill_diagonal(off, 0)
    order = np.argsort(-off, axis=None, kind='stable')[:n]
    pairs = [(int(i), int(j), int(off[i, j])) for i, j in zip(*np.unravel_index(order, off.shape))]
    return [p for p in pairs if p[2] > 0]


def format_report(stats, class_names, title=''):
    cm, acc = stats['confusion'], stats['accuracy']
    n, c = int(cm.sum()), len(acc)
    width = max(len('class'), *(len(x) for x in class_names))
    lines = [f'Class report{": " + title if title else ""}',
             f'{n} samples, {c} classes',
             f"top1 {100 * stats['top1']:.2f}%  top5 {100 * stats['top5']:.2f}%", '',
             f"{'id':>4}  {'class':<{width}}  {'count':>6}  {'correct':>7}  {'acc %':>6}  level"]
    level_of = {i: name for name, ids in stats['levels'].items() for i in ids}
    for i in range(c):
        lines.append(f'{i:>4}  {class_names[i]:<{width}}  {int(stats["count"][i]):>6}  '
                     f'{int(stats["correct"][i]):>7}  {_pct(acc[i])}  {level_of.get(i, "-")}')
    lines += ['', f'Difficulty levels (easy > {100 * EASY_ABOVE:g}%, medium {100 * HARD_BELOW:g}-'
                  f'{100 * EASY_ABOVE:g}%, hard < {100 * HARD_BELOW:g}%):']
    for name in LEVELS:
        ids = stats['levels'][name]
        mean = stats['level_means'][name]
        lines.append(f"  {name:<6} {len(ids):>4} classes, mean acc {_pct(mean).strip()}%"
                     + (': ' + ', '.join(f'{i} {class_names[i]}' for i in ids) if ids else ''))
    empty = [i for i in range(c) if stats['count'][i] == 0]
    if empty:
        lines.append(f'  no samples ({len(empty)} classes): ' + ', '.join(f'{i} {class_names[i]}' for i in empty))
    confusions = top_confusions(cm)
    if confusions:
        lines += ['', 'Most frequent confusions (true -> predicted: count):']
        lines += [f'  {class_names[t]} -> {class_names[p]}: {k}' for t, p, k in confusions]
    return '\n'.join(lines) + '\n'


def write_per_class_csv(path, stats, class_names):
    with open(path, 'w', newline='', encoding='utf-8') as f:       # path: a staged temporary (write_report)
        w = csv.writer(f)
        w.writerow(['class_id', 'name', 'count', 'correct', 'accuracy'])
        for i, name in enumerate(class_names):
            a = stats['accuracy'][i]
            w.writerow([i, name, int(stats['count'][i]), int(stats['correct'][i]),
                        '' if np.isnan(a) else f'{a:.6f}'])


def write_confusion_csv(path, cm, class_names):
    """Rows = true class, columns = predicted class, with a header row and column of names."""
    with open(path, 'w', newline='', encoding='utf-8') as f:
        w = csv.writer(f)
        w.writerow(['true \\ predicted'] + list(class_names))
        for name, row in zip(class_names, cm):
            w.writerow([name] + [int(x) for x in row])


def plot_confusion_png(path, cm, class_names):
    """Row-normalised heat map; returns False (writes nothing) when matplotlib is not importable."""
    try:
        import matplotlib
        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    c = len(class_names)
    rows = cm.sum(axis=1, keepdims=True)
    norm = cm / np.maximum(rows, 1)
    size = min(4 + 0.35 * c, 40)
    fig, ax = plt.subplots(figsize=(size, size))
    im = ax.imshow(norm, cmap='Blues', vmin=0, vmax=1)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    ticks = np.arange(c)
    fontsize = max(3, min(9, 400 // max(c, 1)))
    ax.set_xticks(ticks)
    ax.set_yticks(ticks)
    ax.set_xticklabels(class_names, rotation=90, fontsize=fontsize)
    ax.set_yticklabels(class_names, fontsize=fontsize)
    ax.set_xlabel('predicted')
    ax.set_ylabel('true')
    if c <= 20:
        for i in range(c):
            for j in range(c):
                if cm[i, j]:
                    ax.text(j, i, str(int(cm[i, j])), ha='center', va='center', fontsize=fontsize,
                            color='white' if norm[i, j] > 0.5 else 'black')
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)
    return True


def write_report(out_folder, stats, class_names, title=''):
    """Write report.txt, per_class.csv, confusion_matrix.csv (+ .png when matplotlib is available);
    returns ``(report_text, png_written)``."""
    text = format_report(stats, class_names, title)
    with StagedFiles() as staged:              # the files move into place together, or none does
        with open(staged.path(os.path.join(out_folder, 'report.txt')), 'w', encoding='utf-8') as f:
            f.write(text)
        write_per_class_csv(staged.path(os.path.join(out_folder, 'per_class.csv')), stats, class_names)
        write_confusion_csv(staged.path(os.path.join(out_folder, 'confusion_matrix.csv')), stats['confusion'],
                            class_names)
        png_path = os.path.join(out_folder, 'confusion_matrix.png')
        png = plot_confusion_png(staged.path(png_path), stats['confusion'], class_names)
    return text, png


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--label', type=options.input_file, required=True, help="the split's *_label.pkl")
    parser.add_argument('--result', type=options.input_file, required=True, help='test_result.pkl (or a tools/ensemble.py --out file)')
    parser.add_argument('--class-names', type=options.input_file, default=None,
                        help='description YAML (classes[i].label) or a text file with one name per line')
    parser.add_argument('--out-folder', type=options.output_folder, default=None,
                        help="output folder (default: report/ next to --result, i.e. in the run's work_dir)")
    args = parser.parse_args(argv)
    if args.out_folder is None:
        args.out_folder = os.path.join(os.path.dirname(os.path.abspath(args.result)), 'report')
    if args.class_names is None:            # a converted dataset (tools/custom_gendata.py) names its classes
        info = read_dataset_info(args.label)
        if info.get('classes'):
            args.class_names = info['path']

    _, labels, (scores,) = load_streams(args.label, [args.result])
    num_class = scores.shape[1]
    class_names = (load_class_names(args.class_names, num_class) if args.class_names
                   else [f'class {i}' for i in range(num_class)])
    stats = analyse(scores, labels, num_class)
    text, png = write_report(args.out_folder, stats, class_names, title=args.result)
    print(text, end='')
    print(f'\nwritten to {args.out_folder}/: report.txt, per_class.csv, confusion_matrix.csv'
          + (', confusion_matrix.png' if png else ''))
    if not png:
        print('notice: matplotlib is not installed; confusion_matrix.png skipped')


if __name__ == '__main__':
    run_tool(main)
