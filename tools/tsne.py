"""t-SNE of an encoder's pooled features on one split of a config's data.

The encoder is the config's inference model (contrastive wrappers built with ``pretrain: False``, i.e.
``encoder_q`` with its classifier, as ``tools/complexity.py`` and linear evaluation build it; supervised
configs: the model itself).  Weights are loaded with ``torchlight.io``'s loader (``ignore_weights`` from
the config or ``--ignore-weights``; missing / unexpected keys are reported, shape mismatches refused).

Samples: the split's ``data_path`` / ``label_path`` from ``{split}_feeder_args``, prepared as the
evaluation does (``processor.build.build_feeder(cfg, split, augment=False)``): the config's test feeder
and its (non-augmenting) preprocessing, the first view, the stream (``stream`` of the config or
``--stream``).  Features: ``processor.build.extract_features`` (the encoder's ``forward_features`` in
eval mode, as linear evaluation), L2-normalised.

Selection: ``--classes 0 3 7`` or ``--num-classes K`` random classes (``--seed``), then at most
``--max-samples`` samples (seeded random subset).

t-SNE: scikit-learn's ``TSNE`` (PCA initialisation, ``--perplexity``, ``--iters``); scikit-learn is part
of the analysis extra (``pip install -r requirements-analysis.txt``), and without it the tool stops with
a one-line error saying so.

Outputs (``--out``, default ``<work_dir>/tsne_<split>.png``):
* ``<out>.npz`` always: ``embedding`` (n, 2), ``labels``, ``indices`` (sample indices in the split),
  ``features`` (n, D, L2-normalised), ``class_names``, ``sample_names``;
* the PNG scatter, coloured by class, legend with the class names (``--class-names`` descriptions
  YAML: ``classes[i].label``; or a text file, one name per line) when matplotlib is installed;
  without matplotlib a ``.csv`` (x, y, label, index) is written instead, with a hint how to plot it.

Usage::

    python tools/tsne.py --config config/ucla/linear_eval_mica.yaml \\
        --weights work_dir/ucla/mica_joint/pretext \\
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

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from torchlight.boundary import early  # noqa: E402

early(__name__)              # a Ctrl-C during the imports below is one line

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from processor.build import build_feeder, build_model, config_stream, load_config, model_layout  # noqa: E402
from processor.build import extract_features  # noqa: E402
from processor.checkpoint import resolve_weights  # noqa: E402
from tools.class_report import load_class_names  # noqa: E402
from torchlight import options  # noqa: E402
from torchlight.io import IO, StagedFiles, UserError, check_finite, run_tool  # noqa: E402


# ------------------------------------------------------------------------------------------------
# t-SNE (scikit-learn) and the selection

SKLEARN_MISSING = 'tools/tsne.py needs scikit-learn: pip install -r requirements-analysis.txt'


def run_tsne(features, perplexity=30.0, seed=0, n_iter=1000):
    """2-D embedding (n, 2) float64 of ``features`` by scikit-learn's ``TSNE`` (PCA initialisation); the
    perplexity is capped at (n - 1) / 3."""
    try:
        from sklearn.manifold import TSNE
    except ImportError:
        raise UserError(SKLEARN_MISSING) from None
    import inspect
    n = len(features)
    perplexity = min(float(perplexity), max(1.0, (n - 1) / 3.0))
    iterations = 'max_iter' if 'max_iter' in inspect.signature(TSNE).parameters else 'n_iter'   # >= 1.5 / older
    tsne = TSNE(n_components=2, perplexity=perplexity, init='pca', random_state=seed, **{iterations: n_iter})
    return np.asarray(tsne.fit_transform(np.asarray(features, dtype=np.float32)), dtype=np.float64)


def knn_purity(embedding, labels, k=5):
    """Mean fraction of each point's k nearest neighbours (excluding itself) that share its label."""
    x = np.asarray(embedding, dtype=np.float64)
    d = np.sum((x[:, None, :] - x[None, :, :]) ** 2, axis=2)
    np.fill_diagonal(d, np.inf)
    nn_idx = np.argsort(d, axis=1)[:, :k]
    labels = np.asarray(labels)
    return float((labels[nn_idx] == labels[:, None]).mean())


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


def selected_features(model, feeder, index, batch_size=64, device='cpu'):
    """L2-normalised features (n, D) float32 numpy of the samples ``index`` of ``feeder``, in that order
    (``processor.build.extract_features``, the features linear evaluation trains on); ``feeder`` gives raw
    batches (``batch_augment``)."""
    feeder.index = np.asarray(feeder.index)[index]        # the loader draws only the chosen samples
    loader = torch.utils.data.DataLoader(feeder, batch_size=batch_size, shuffle=False)
    model.to(device)
    feats, _, _ = extract_features(model, loader, device)
    return F.normalize(feats.float(), dim=1).cpu().numpy()


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
    parser.add_argument('--config', type=options.input_file, required=True, help='linear-eval / recognition (or pretrain) config')
    parser.add_argument('--weights', type=options.input_file, default=None,
                        help="state dict to load (default: the config's `weights`)")
    parser.add_argument('--ignore-weights', '--ignore_weights', dest='ignore_weights', type=options.text, nargs='*',
                        default=None,
                        help="key prefixes not to load (default: the config's ignore_weights)")
    parser.add_argument('--split', choices=('test', 'train'), default='test')
    group = parser.add_mutually_exclusive_group()
    group.add_argument('--classes', type=options.nonnegative_int, nargs='+', default=None, help='class ids to show')
    group.add_argument('--num-classes', type=options.positive_int, default=None, help='show this many random classes')
    parser.add_argument('--seed', type=options.seed, default=0, help='class / sample choice and t-SNE seed')
    parser.add_argument('--max-samples', type=options.integer(4), default=2000, help='random subset of at most this many')
    parser.add_argument('--stream', choices=('joint', 'bone', 'motion'), default=None,
                        help="input stream (default: the config's `stream`)")
    parser.add_argument('--class-names', type=options.input_file, default=None,
                        help='descriptions YAML (classes[i].label) or a text file with one name per line')
    parser.add_argument('--perplexity', type=options.positive_float, default=30.0)
    parser.add_argument('--iters', type=options.integer(250), default=1000, help='t-SNE iterations (scikit-learn max_iter)')
    parser.add_argument('--batch-size', type=options.positive_int, default=64)
    parser.add_argument('--device', type=options.device, default=None, help='cpu | cuda (default: cuda when available)')
    parser.add_argument('--out', type=options.output_file, default=None, help='PNG path (default: <work_dir>/tsne_<split>.png)')
    return parser


def main(argv=None):
    args = get_parser().parse_args(argv)
    cfg = load_config(args.config)
    weights = resolve_weights(args.weights if args.weights is not None else cfg.get('weights'))
    if not weights:
        raise UserError('give --weights (a state dict, e.g. work_dir/.../epoch30_model.pt or best_model.pt, or a pretraining work_dir); '
                        'the config has no `weights` either')
    out = args.out or os.path.join(cfg.get('work_dir') or '.', f'tsne_{args.split}.png')
    stem = os.path.splitext(out)[0]
    folder = os.path.dirname(os.path.abspath(out))
    device = torch.device(args.device or ('cuda' if torch.cuda.is_available() else 'cpu'))

    model = build_model(cfg, for_inference=True).eval()
    ignore = args.ignore_weights if args.ignore_weights is not None else (cfg.get('ignore_weights') or [])
    IO(folder, save_log=False).load_weights(model, weights, ignore)

    stream = args.stream or config_stream(cfg)
    feeder = build_feeder(cfg, args.split, augment=False, stream=stream, layout=model_layout(model),
                          batch_augment=True)
    index = select_samples(feeder.label, args.classes, args.num_classes, args.max_samples, args.seed)
    if len(index) < 4:
        raise UserError(f'only {len(index)} samples selected; t-SNE needs at least 4')
    labels = feeder.label[index]
    class_names = load_class_names(args.class_names) if args.class_names else None
    try:
        import sklearn.manifold  # noqa: F401    (every input read, before the features are extracted)
    except ImportError:
        raise UserError(SKLEARN_MISSING) from None
    print(f'Extracting {stream} features of {len(index)} {args.split} samples '
          f'({len(np.unique(labels))} classes) on {device} ...', flush=True)
    features = selected_features(model, feeder, index, args.batch_size, device)
    check_finite(features, f"features of '{weights}'", 'the weights give NaN/Inf features: check them')

    embedding, backend = run_tsne(features, args.perplexity, args.seed, args.iters), 'sklearn'
    purity = knn_purity(embedding, labels, k=min(5, len(index) - 1))
    print(f't-SNE ({backend}) done; 5-NN class purity of the 2-D embedding: {purity:.3f}')

    sample_names = [feeder.sample_name[i] for i in index]
    title = (f'{os.path.basename(args.config)} | {os.path.basename(weights)} | {args.split} | {stream} | '
             f'n={len(index)} | t-SNE {backend}')
    with StagedFiles() as staged:              # the files move into place together, or none does
        with open(staged.path(stem + '.npz'), 'wb') as f:
            np.savez(f, embedding=embedding.astype(np.float32), labels=labels, indices=index,
                     features=features, class_names=np.array(class_names or [], dtype=str),
                     sample_names=np.array(sample_names, dtype=str), backend=backend, knn_purity=purity)
        plotted = plot_embedding(staged.path(out), embedding, labels, class_names, title)
        if not plotted:
            write_csv(staged.path(stem + '.csv'), embedding, labels, index)
    print(f'wrote {stem}.npz (embedding, labels, indices, features, class_names, sample_names)')
    if plotted:
        print(f'wrote {out}')
    else:
        print(f'matplotlib is not installed: wrote {stem}.csv (x, y, label, index) instead of the PNG. '
              f'Plot it with `pip install matplotlib` and re-run, or e.g. in Python: '
              f"d = np.load('{stem}.npz'); plt.scatter(*d['embedding'].T, c=d['labels'], s=8, cmap='tab10')")
    return {'embedding': embedding, 'labels': labels, 'indices': index, 'backend': backend, 'purity': purity,
            'out': out}


if __name__ == '__main__':
    run_tool(main)
