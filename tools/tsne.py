"""t-SNE of an encoder's pooled features on one split of a config's data.

The encoder is the config's inference model (contrastive wrappers built with ``pretrain: False``, i.e.
``encoder_q`` with its classifier, as ``tools/complexity.py`` and linear evaluation build it; supervised
configs: the model itself).  Weights are loaded with ``torchlight.io``'s loader (``ignore_weights`` from
the config or ``--ignore-weights``; missing / unexpected keys are reported, shape mismatches refused).

Samples: the split's ``data_path`` / ``label_path`` from ``{split}_feeder_args``, prepared as the
evaluation does: the feeder class of the config's ``test_feeder`` (default ``Feeder_single``) with the
*test* feeder's preprocessing arguments (no augmentation: for the train split its augmentations are not
used), ``feeder.views(batch)[0]``, then the stream (``stream`` of the config or ``--stream``: bone via
the layout's parents, motion by frame differences, ``feeder.tools.to_stream``).  Features:
``encoder.forward_features(x)`` (eval mode), L2-normalised.

Selection: ``--classes 0 3 7`` or ``--num-classes K`` random classes (``--seed``), then at most
``--max-samples`` samples (seeded random subset).

t-SNE: scikit-learn's ``TSNE`` when it is installed (``--backend auto``), otherwise (or with
``--backend numpy``) the exact t-SNE of this file (``exact_tsne``: perplexity-calibrated P, early
exaggeration 12 for 250 iterations, momentum 0.5 -> 0.8, gains, learning rate max(n / 48, 50); O(n^2)
memory and time per iteration, fine for a few thousand points).

Outputs (``--out``, default ``<work_dir>/tsne_<split>.png``):
* ``<out>.npz`` always: ``embedding`` (n, 2), ``labels``, ``indices`` (sample indices in the split),
  ``features`` (n, D, L2-normalised), ``class_names``, ``sample_names``;
* the PNG scatter, coloured by class, legend with the class names (``--class-names`` descriptions
  YAML: ``classes[i].label``; or a text file, one name per line) when matplotlib is installed;
  without matplotlib a ``.csv`` (x, y, label, index) is written instead, with a hint how to plot it.

Usage::

    python tools/tsne.py --config config/ucla/linear_eval_mica.yaml \\
        --weights work_dir/ucla/mica_joint/pretext/epoch300_model.pt \\
        --class-names config/text/descriptions/ucla.yaml --out work_dir/ucla/mica_joint/tsne.png
    python tools/tsne.py --config config/ntu60/xsub/linear_eval_mica.yaml --weights W.pt \\
        --num-classes 10 --seed 0 --max-samples 2000
    python tools/tsne.py --config config/ucla/recognition_ctrgcn.yaml \\
        --weights work_dir/ucla/ctrgcn_joint/recognition/best_model.pt --split test
"""
import argparse
import csv
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F
import yaml

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from torchlight.io import IO, UserError, import_class, run_tool  # noqa: E402
from tools.complexity import build_inference_model, graph_layout, load_config  # noqa: E402

DEFAULT_FEEDER = 'feeder.ntu_feeder.Feeder_single'
NO_AUGMENTATION = {'shear_amplitude': -1, 'temperal_padding_ratio': -1, 'random_rot': False}


# ------------------------------------------------------------------------------------------------
# exact t-SNE (numpy), the fallback when scikit-learn is absent

def _squared_distances(x):
    sq = np.sum(x * x, axis=1)
    d = sq[:, None] + sq[None, :] - 2.0 * (x @ x.T)
    np.maximum(d, 0.0, out=d)
    np.fill_diagonal(d, 0.0)
    return d


def joint_probabilities(x, perplexity=30.0, tol=1e-5, max_steps=100):
    """Symmetric P of t-SNE: per-point Gaussian conditionals whose entropy is log(perplexity) (found
    by bisection on the precision, all points at once), P = (P_cond + P_cond^T) / (2n)."""
    n = x.shape[0]
    d = _squared_distances(np.asarray(x, dtype=np.float64))
    off = ~np.eye(n, dtype=bool)
    # shift each row by its smallest off-diagonal distance (P and the entropy do not change)
    row_min = np.where(off, d, np.inf).min(axis=1, keepdims=True)
    d = np.where(off, d - row_min, 0.0)
    target = np.log(perplexity)
    beta = np.ones((n, 1))
    lo = np.full((n, 1), 0.0)
    hi = np.full((n, 1), np.inf)
    for _ in range(max_steps):
        p = np.exp(-d * beta) * off
        s = p.sum(axis=1, keepdims=True)
        entropy = np.log(s) + beta * (d * p).sum(axis=1, keepdims=True) / s
        diff = entropy - target
        if np.all(np.abs(diff) < tol):
            break
        too_flat = diff > 0              # entropy too high: sharpen (larger beta)
        lo = np.where(too_flat, beta, lo)
        hi = np.where(too_flat, hi, beta)
        beta = np.where(np.isinf(hi), beta * 2.0, (lo + hi) / 2.0)
    p = np.exp(-d * beta) * off
    p /= p.sum(axis=1, keepdims=True)
    p = (p + p.T) / (2.0 * n)
    return np.maximum(p, 1e-12)


def exact_tsne(x, perplexity=30.0, n_iter=1000, seed=0, early_exaggeration=12.0, exaggeration_iters=250,
               learning_rate=None, verbose=False):
    """2-D exact t-SNE (van der Maaten & Hinton 2008) of ``x`` (n, D); returns (n, 2) float64.

    Initialisation: the first two principal components scaled to std 1e-4 (as scikit-learn's
    ``init='pca'``), plus tiny seeded noise to break ties."""
    x = np.asarray(x, dtype=np.float64)
    n = x.shape[0]
    if n < 4:
        raise ValueError(f't-SNE needs at least 4 points, got {n}')
    perplexity = min(float(perplexity), (n - 1) / 3.0)
    p = joint_probabilities(x, perplexity)
    rng = np.random.RandomState(seed)
    xc = x - x.mean(axis=0)
    try:
        _, _, vt = np.linalg.svd(xc, full_matrices=False)
        y = xc @ vt[:2].T
        if y.shape[1] < 2:
            y = np.concatenate([y, rng.randn(n, 2 - y.shape[1])], axis=1)
    except np.linalg.LinAlgError:
        y = rng.randn(n, 2)
    y = y / (np.std(y[:, 0]) + 1e-12) * 1e-4 + rng.randn(n, 2) * 1e-6
    lr = learning_rate if learning_rate is not None else max(n / early_exaggeration / 4.0, 50.0)
    update = np.zeros_like(y)
    gains = np.ones_like(y)
    for it in range(n_iter):
        exaggerate = it < exaggeration_iters
        pe = p * early_exaggeration if exaggerate else p
        momentum = 0.5 if exaggerate else 0.8
        num = 1.0 / (1.0 + _squared_distances(y))
        np.fill_diagonal(num, 0.0)
        q = np.maximum(num / num.sum(), 1e-12)
        w = (pe - q) * num
        grad = 4.0 * (w.sum(axis=1, keepdims=True) * y - w @ y)
        same = (grad > 0) == (update > 0)
        gains = np.where(same, gains * 0.8, gains + 0.2)
        np.maximum(gains, 0.01, out=gains)
        update = momentum * update - lr * gains * grad
        y = y + update
        y -= y.mean(axis=0)
        if verbose and (it + 1) % 250 == 0:
            kl = float(np.sum(p * np.log(p / q)))
            print(f'  t-SNE iteration {it + 1}: KL {kl:.4f}', flush=True)
    return y


def run_tsne(features, perplexity=30.0, seed=0, backend='auto', n_iter=1000):
    """(embedding (n, 2), backend used)."""
    n = len(features)
    perplexity = min(float(perplexity), max(1.0, (n - 1) / 3.0))
    if backend in ('auto', 'sklearn'):
        try:
            from sklearn.manifold import TSNE
        except ImportError:
            if backend == 'sklearn':
                raise UserError('--backend sklearn: scikit-learn is not installed (pip install scikit-learn)')
        else:
            tsne = TSNE(n_components=2, perplexity=perplexity, init='pca', random_state=seed)
            return np.asarray(tsne.fit_transform(np.asarray(features, dtype=np.float32)), dtype=np.float64), 'sklearn'
    if n > 5000:
        print(f'Notice: exact numpy t-SNE on {n} points is O(n^2) per iteration; consider --max-samples '
              'or installing scikit-learn.', flush=True)
    return exact_tsne(features, perplexity=perplexity, n_iter=n_iter, seed=seed), 'numpy'


def knn_purity(embedding, labels, k=5):
    """Mean fraction of each point's k nearest neighbours (excluding itself) that share its label."""
    d = _squared_distances(np.asarray(embedding, dtype=np.float64))
    np.fill_diagonal(d, np.inf)
    nn_idx = np.argsort(d, axis=1)[:, :k]
    labels = np.asarray(labels)
    return float((labels[nn_idx] == labels[:, None]).mean())


# ------------------------------------------------------------------------------------------------
# data, model, features

def read_class_names(path):
    """Names from a descriptions YAML (``classes[i].label``) or a text file (one per line)."""
    if not os.path.isfile(path):
        raise UserError(f"--class-names: '{path}' does not exist")
    if path.endswith(('.yaml', '.yml')):
        with open(path, encoding='utf-8') as f:
            data = yaml.safe_load(f)
        classes = data.get('classes') if isinstance(data, dict) else data
        if not isinstance(classes, list) or not classes:
            raise UserError(f"--class-names: '{path}' has no 'classes' list")
        return [str(c.get('label', i)) if isinstance(c, dict) else str(c) for i, c in enumerate(classes)]
    with open(path, encoding='utf-8') as f:
        return [line.strip() for line in f if line.strip()]


def build_feeder(cfg, split):
    """The split's feeder with the test feeder's (non-augmenting) preprocessing."""
    split_args = cfg.get(f'{split}_feeder_args') or {}
    if 'data_path' not in split_args or 'label_path' not in split_args:
        raise UserError(f'the config has no {split}_feeder_args with data_path and label_path '
                        f'(use --split {"train" if split == "test" else "test"}?)')
    test_args = cfg.get('test_feeder_args') or {}
    if test_args:
        name, args = cfg.get('test_feeder', DEFAULT_FEEDER), dict(test_args)
    else:
        name, args = cfg.get('train_feeder', DEFAULT_FEEDER), dict(split_args)
        args.update(NO_AUGMENTATION)
        if 'p_interval' in args:
            args['p_interval'] = [0.95]
    args['data_path'], args['label_path'] = split_args['data_path'], split_args['label_path']
    args['check_finite'] = False
    args.setdefault('mmap', True)
    num_class = (cfg.get('model_args') or {}).get('num_class')
    if num_class is not None:
        args.setdefault('num_class', num_class)
    feeder_class = import_class(name)
    try:
        return feeder_class(**args)
    except TypeError as e:
        raise UserError(f'feeder arguments do not fit {name}: {e}') from e


def select_samples(labels, classes=None, num_classes=None, max_samples=2000, seed=0):
    """Indices (sorted) of the chosen samples."""
    labels = np.asarray(labels)
    present = np.unique(labels)
    rng = np.random.RandomState(seed)
    if classes:
        missing = sorted(set(classes) - set(present.tolist()))
        if missing:
            raise UserError(f'--classes {missing} have no samples in this split (classes present: '
                            f'{present.min()}..{present.max()})')
        chosen = np.array(sorted(set(classes)))
    elif num_classes:
        if num_classes > len(present):
            raise UserError(f'--num-classes {num_classes}: the split has only {len(present)} classes')
        chosen = np.sort(rng.choice(present, num_classes, replace=False))
    else:
        chosen = present
    index = np.flatnonzero(np.isin(labels, chosen))
    if max_samples and len(index) > max_samples:
        index = np.sort(rng.choice(index, max_samples, replace=False))
    return index


def stream_parents(feeder, cfg, encoder):
    if getattr(feeder, 'layout', None) is not None:
        return feeder.layout.parents
    return graph_layout(cfg.get('model_args') or {}, encoder).parents


@torch.no_grad()
def extract_features(encoder, feeder, index, stream='joint', parents=None, batch_size=64, device='cpu'):
    """L2-normalised ``forward_features`` of the samples ``index`` -> (n, D) float32 numpy."""
    from feeder.tools import to_stream
    encoder.eval().to(device)
    feats = []
    for start in range(0, len(index), batch_size):
        idx = index[start:start + batch_size]
        raw = torch.from_numpy(np.array(feeder.data[idx], dtype=np.float32))
        if not torch.isfinite(raw).all():
            raise UserError(f"data file '{feeder.data_path}' holds NaN/Inf values among samples {idx[0]}..{idx[-1]}")
        x = feeder.views(raw.to(device))[0]
        if stream != 'joint':
            x = to_stream(x, stream, parents if stream == 'bone' else None)
        feats.append(F.normalize(encoder.forward_features(x).float(), dim=1).cpu())
    return torch.cat(feats).numpy()


# ------------------------------------------------------------------------------------------------
# output

def plot_embedding(path, embedding, labels, class_names=None, title=None):
    """Scatter coloured by class with a legend; returns False when matplotlib is not installed."""
    try:
        import matplotlib
        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    classes = np.unique(labels)
    cmap = plt.get_cmap('tab10' if len(classes) <= 10 else 'tab20' if len(classes) <= 20 else 'gist_ncar')
    fig, ax = plt.subplots(figsize=(8, 7))
    for i, c in enumerate(classes):
        sel = labels == c
        name = class_names[c] if class_names is not None and c < len(class_names) else f'class {c}'
        color = cmap(i % cmap.N) if len(classes) <= 20 else cmap(i / max(1, len(classes) - 1))
        ax.scatter(embedding[sel, 0], embedding[sel, 1], s=8, color=color, label=f'{c}: {name}', alpha=0.8)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=9)
    if len(classes) <= 30:
        ax.legend(loc='center left', bbox_to_anchor=(1.0, 0.5), fontsize=7, markerscale=2, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=150, bbox_inches='tight')
    plt.close(fig)
    return True


def write_csv(path, embedding, labels, index):
    with open(path, 'w', newline='') as f:
        writer = csv.writer(f)
        writer.writerow(['x', 'y', 'label', 'index'])
        for (x, y), label, i in zip(embedding, labels, index):
            writer.writerow([f'{x:.6f}', f'{y:.6f}', int(label), int(i)])


def get_parser():
    parser = argparse.ArgumentParser(description='t-SNE of the pooled features of a trained encoder')
    parser.add_argument('--config', required=True, help='linear-eval / recognition (or pretrain) config')
    parser.add_argument('--weights', default=None,
                        help="state dict to load (default: the config's `weights`)")
    parser.add_argument('--ignore-weights', '--ignore_weights', dest='ignore_weights', nargs='*', default=None,
                        help="key prefixes not to load (default: the config's ignore_weights)")
    parser.add_argument('--split', choices=('test', 'train'), default='test')
    group = parser.add_mutually_exclusive_group()
    group.add_argument('--classes', type=int, nargs='+', default=None, help='class ids to show')
    group.add_argument('--num-classes', type=int, default=None, help='show this many random classes')
    parser.add_argument('--seed', type=int, default=0, help='class / sample choice and t-SNE seed')
    parser.add_argument('--max-samples', type=int, default=2000, help='random subset of at most this many')
    parser.add_argument('--stream', choices=('joint', 'bone', 'motion'), default=None,
                        help="input stream (default: the config's `stream`)")
    parser.add_argument('--class-names', default=None,
                        help='descriptions YAML (classes[i].label) or a text file with one name per line')
    parser.add_argument('--perplexity', type=float, default=30.0)
    parser.add_argument('--iters', type=int, default=1000, help='iterations of the numpy t-SNE')
    parser.add_argument('--backend', choices=('auto', 'sklearn', 'numpy'), default='auto',
                        help='auto: scikit-learn if installed, else the built-in exact t-SNE')
    parser.add_argument('--batch-size', type=int, default=64)
    parser.add_argument('--device', default=None, help='cpu | cuda (default: cuda when available)')
    parser.add_argument('--out', default=None, help='PNG path (default: <work_dir>/tsne_<split>.png)')
    return parser


def main(argv=None):
    args = get_parser().parse_args(argv)
    cfg = load_config(args.config)
    weights = args.weights if args.weights is not None else cfg.get('weights')
    if not weights:
        raise UserError('give --weights (a state dict, e.g. work_dir/.../epoch300_model.pt or best_model.pt); '
                        'the config has no `weights` either')
    out = args.out or os.path.join(cfg.get('work_dir') or '.', f'tsne_{args.split}.png')
    stem = os.path.splitext(out)[0]
    folder = os.path.dirname(os.path.abspath(out))
    os.makedirs(folder, exist_ok=True)
    if args.max_samples is not None and args.max_samples < 4:
        raise UserError(f'--max-samples must be >= 4, got {args.max_samples}')
    device = torch.device(args.device or ('cuda' if torch.cuda.is_available() else 'cpu'))

    model, encoder = build_inference_model(cfg)
    ignore = args.ignore_weights if args.ignore_weights is not None else (cfg.get('ignore_weights') or [])
    IO(folder, save_log=False).load_weights(model, weights, ignore)

    feeder = build_feeder(cfg, args.split)
    index = select_samples(feeder.label, args.classes, args.num_classes, args.max_samples, args.seed)
    if len(index) < 4:
        raise UserError(f'only {len(index)} samples selected; t-SNE needs at least 4')
    labels = feeder.label[index]
    stream = args.stream or cfg.get('stream') or 'joint'
    parents = stream_parents(feeder, cfg, encoder) if stream == 'bone' else None
    print(f'Extracting {stream} features of {len(index)} {args.split} samples '
          f'({len(np.unique(labels))} classes) on {device} ...', flush=True)
    features = extract_features(encoder, feeder, index, stream, parents, args.batch_size, device)

    embedding, backend = run_tsne(features, args.perplexity, args.seed, args.backend, args.iters)
    purity = knn_purity(embedding, labels, k=min(5, len(index) - 1))
    print(f't-SNE ({backend}) done; 5-NN class purity of the 2-D embedding: {purity:.3f}')

    class_names = read_class_names(args.class_names) if args.class_names else None
    sample_names = [feeder.sample_name[i] for i in index]
    np.savez(stem + '.npz', embedding=embedding.astype(np.float32), labels=labels, indices=index,
             features=features, class_names=np.array(class_names or [], dtype=str),
             sample_names=np.array(sample_names, dtype=str), backend=backend, knn_purity=purity)
    print(f'wrote {stem}.npz (embedding, labels, indices, features, class_names, sample_names)')
    title = (f'{os.path.basename(args.config)} | {os.path.basename(weights)} | {args.split} | {stream} | '
             f'n={len(index)} | t-SNE {backend}')
    if plot_embedding(out, embedding, labels, class_names, title):
        print(f'wrote {out}')
    else:
        write_csv(stem + '.csv', embedding, labels, index)
        print(f'matplotlib is not installed: wrote {stem}.csv (x, y, label, index) instead of the PNG. '
              f'Plot it with `pip install matplotlib` and re-run, or e.g. in Python: '
              f"d = np.load('{stem}.npz'); plt.scatter(*d['embedding'].T, c=d['labels'], s=8, cmap='tab10')")
    return {'embedding': embedding, 'labels': labels, 'indices': index, 'backend': backend, 'purity': purity,
            'out': out}


if __name__ == '__main__':
    run_tool(main)
