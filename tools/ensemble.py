"""Multi-stream score fusion of evaluation results (2S/3S/4S ensembles: joint, bone, motion, ...).

Each ``--results`` file is a ``test_result.pkl`` written by an evaluation run (processors
``linear_evaluation``, ``recognition``, ...): a pickled dict ``{sample_name: scores (num_class,)}``.
The labels come from the split's ``*_label.pkl`` (pickled ``(sample_names, labels)``).

Fusion is a weighted sum of the scores, ``fused = sum_i w_i * scores_i``. By default the scores are
used **raw** (the logits as saved, no normalisation), as the reference AimCLR/CrosSCLR ensemble
scripts do; ``--softmax`` applies a softmax over the classes to each stream first. Default weights:
``0.6 0.6 0.4`` for three streams (joint, bone, motion: the family convention, in the order the
files are given), ``0.6 0.6 0.4 0.4`` for four (joint, bone, joint motion, bone motion: CTR-GCN's
``ensemble.py`` 4-stream ``alpha``, the 4S of the CSRE tables), ``1.0`` for every stream otherwise
(2S = joint + bone with equal weights, as CTR-GCN's default ``--alpha 1``); ``--weights`` must give one
weight per file.

Every result file must hold exactly the label file's sample names and all of them the same number
of classes. Prints per-stream and fused top-1/top-5; ``--out`` writes the fused scores in the same
``{sample_name: scores}`` format (float32), so the fused result can be fed back to this tool or to
``tools/class_report.py``.

    python tools/ensemble.py --label data/ntu60/xsub/val_label.pkl \\
        --results work/joint/test_result.pkl work/bone/test_result.pkl work/motion/test_result.pkl \\
        [--weights 0.6 0.6 0.4] [--softmax] [--out fused.pkl]
    python tools/ensemble.py --label data/ctrgcn/ucla/val_label.pkl --results joint/test_result.pkl \
        bone/test_result.pkl motion/test_result.pkl bone_motion/test_result.pkl      # 4S: 0.6 0.6 0.4 0.4
"""
import argparse
import os
import pickle
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from torchlight.boundary import early  # noqa: E402

early(__name__)              # a Ctrl-C during the imports below is one line

import numpy as np  # noqa: E402

from feeder.ntu_feeder import load_labels  # noqa: E402
from torchlight import options  # noqa: E402
from torchlight.io import UserError, atomic_write, check_finite, read_pickle, run_tool  # noqa: E402

THREE_STREAM_WEIGHTS = (0.6, 0.6, 0.4)        # joint, bone, motion
FOUR_STREAM_WEIGHTS = (0.6, 0.6, 0.4, 0.4)    # joint, bone, joint motion, bone motion (CTR-GCN)
PRESETS = {3: THREE_STREAM_WEIGHTS, 4: FOUR_STREAM_WEIGHTS}


def default_weights(num_streams):
    """``[0.6, 0.6, 0.4]`` for 3 streams (joint, bone, motion), ``[0.6, 0.6, 0.4, 0.4]`` for 4 (joint,
    bone, joint motion, bone motion), ``[1.0] * n`` otherwise."""
    return list(PRESETS.get(num_streams, [1.0] * num_streams))


def _few(items, n=5):
    items = sorted(items, key=str)
    shown = ', '.join(repr(x) for x in items[:n])
    return shown + (f', ... ({len(items)} in all)' if len(items) > n else '')


def load_results(path):
    """Read a ``test_result.pkl`` -> ``{sample_name: float64 scores (num_class,)}``; checks that it is a
    non-empty dict of equally long, finite 1-D score vectors."""
    content = read_pickle(path, 'result', 'evaluation runs write <work_dir>/test_result.pkl')
    if not isinstance(content, dict) or not content:
        raise UserError(f"result file '{path}' must hold a non-empty dict {{sample_name: scores}}, "
                        f"got {type(content).__name__}{' (empty)' if isinstance(content, dict) else ''}")
    results, num_class = {}, None
    for name, value in content.items():
        try:
            scores = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError) as e:
            raise UserError(f"result file '{path}': scores of sample {name!r} are not numeric ({e})") from None
        if scores.ndim != 1 or scores.size == 0:
            raise UserError(f"result file '{path}': scores of sample {name!r} must be a 1-D vector "
                            f"(num_class,), got shape {scores.shape}")
        if num_class is None:
            num_class = scores.size
        elif scores.size != num_class:
            raise UserError(f"result file '{path}': sample {name!r} has {scores.size} scores but "
                            f"others have {num_class}")
        check_finite(scores, f"result file '{path}', sample {name!r}", 'evaluate again or drop the file')
        results[name] = scores
    return results


def align(results, names, path='<results>'):
    """Stack ``results`` in the order of ``names`` -> ``(N, num_class)``; the sample names must match
    exactly (the error names ``path`` and a few missing/extra samples)."""
    if len(set(names)) != len(names):
        dup = [n for n in set(names) if names.count(n) > 1]
        raise UserError(f'the label file has duplicate sample names: {_few(dup)}')
    missing = set(names) - set(results)
    extra = set(results) - set(names)
    if missing or extra:
        parts = []
        if missing:
            parts.append(f'{len(missing)} label-file samples missing: {_few(missing)}')
        if extra:
            parts.append(f'{len(extra)} samples not in the label file: {_few(extra)}')
        raise UserError(f"result file '{path}' does not match the label file's {len(names)} samples "
                        f"({'; '.join(parts)}); was it evaluated on another split?")
    return np.stack([results[n] for n in names])


def softmax(scores):
    """Row-wise softmax of ``(N, C)`` scores."""
    z = scores - scores.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def fuse(streams, weights=None, use_softmax=False):
    """Weighted sum ``sum_i weights[i] * streams[i]`` of ``(N, C)`` score arrays (raw scores unless
    ``use_softmax``, which softmaxes each stream over the classes first). ``weights`` defaults to
    :func:`default_weights`; it must have one weight per stream."""
    streams = [np.asarray(s, dtype=np.float64) for s in streams]
    if not streams:
        raise UserError('no result streams to fuse')
    if weights is None:
        weights = default_weights(len(streams))
    if len(weights) != len(streams):
        raise UserError(f'got {len(weights)} weights for {len(streams)} result files; give one weight '
                        'per result file')
    check_finite(np.asarray(weights, dtype=np.float64), '--weights', 'give finite fusion weights')
    shape = streams[0].shape
    for i, s in enumerate(streams):
        if s.ndim != 2 or s.shape != shape:
            raise UserError(f'stream {i} has scores of shape {s.shape}, stream 0 has {shape}')
    fused = np.zeros(shape, dtype=np.float64)
    with np.errstate(over='ignore', invalid='ignore'):
        for w, s in zip(weights, streams):
            fused += float(w) * (softmax(s) if use_softmax else s)
    check_finite(fused, 'the fused scores', 'the weighted sum overflows: scale the scores or the --weights down')
    return fused


def topk(scores, labels, k=1):
    """Fraction of samples whose label is among the ``k`` highest scores (ties: lower class id first)."""
    scores, labels = np.asarray(scores), np.asarray(labels)
    if len(labels) == 0:
        return float('nan')
    k = min(k, scores.shape[1])
    top = np.argsort(-scores, axis=1, kind='stable')[:, :k]
    return float(np.mean(np.any(top == labels[:, None], axis=1)))


def load_streams(label_path, result_paths):
    """Labels and the aligned ``(N, C)`` scores of every result file -> ``(names, labels, [scores])``;
    checks sample names, num_class equality and that labels are below num_class."""
    names, labels = load_labels(label_path)
    streams = [align(load_results(p), names, p) for p in result_paths]
    num_class = streams[0].shape[1]
    for p, s in zip(result_paths, streams):
        if s.shape[1] != num_class:
            raise UserError(f"result file '{p}' has {s.shape[1]} classes but '{result_paths[0]}' has "
                            f"{num_class}")
    if len(labels) and labels.max() >= num_class:
        i = int(labels.argmax())
        raise UserError(f"label file '{label_path}': label {int(labels[i])} of sample '{names[i]}' is "
                        f"out of range for {num_class}-class results")
    return names, labels, streams


def save_results(path, names, scores):
    """Write ``{name: float32 scores}`` atomically (no temporary file is left on failure)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    atomic_write(path, lambda f: pickle.dump({n: s.astype(np.float32) for n, s in zip(names, scores)}, f))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--label', type=options.input_file, required=True, help="the split's *_label.pkl")
    parser.add_argument('--results', type=options.input_file, nargs='+', required=True, help='test_result.pkl of each stream')
    parser.add_argument('--weights', nargs='+', type=options.finite_float, default=None,
                        help='one weight per result file (default: 0.6 0.6 0.4 for 3 streams, 0.6 0.6 0.4 0.4 '
                             'for 4 (joint, bone, joint motion, bone motion), else 1.0 each)')
    parser.add_argument('--softmax', action='store_true',
                        help='softmax each stream over the classes before weighting (default: raw scores)')
    parser.add_argument('--out', type=options.output_file, default=None, help='write the fused {sample_name: scores} pkl here')
    args = parser.parse_args(argv)

    weights = default_weights(len(args.results)) if args.weights is None else args.weights
    if len(weights) != len(args.results):
        raise UserError(f'got {len(weights)} --weights for {len(args.results)} --results files; give one '
                        'weight per result file')
    names, labels, streams = load_streams(args.label, args.results)
    fused = fuse(streams, weights, args.softmax)
    width = max(len(p) for p in args.results)
    wlen = max(len(f'{w:g}') for w in weights)
    print(f'{len(names)} samples, {streams[0].shape[1]} classes, '
          f"{'softmax' if args.softmax else 'raw'} scores")
    rows = [(p, f'{w:g}', s) for p, w, s in zip(args.results, weights, streams)] + [('fused', '', fused)]
    for name, w, s in rows:
        print(f'{name:<{width}}  weight {w:<{wlen}}  top1 {100 * topk(s, labels, 1):6.2f}%  '
              f'top5 {100 * topk(s, labels, 5):6.2f}%')
    if args.out:
        save_results(args.out, names, fused)
        print(f'fused result written to {args.out}')


if __name__ == '__main__':
    run_tool(main)
