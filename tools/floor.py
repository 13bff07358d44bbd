"""The ridge floor of a converted dataset: the one definition every tool and table uses.

    python tools/floor.py data/ucla            # prints the floor line (and --json FILE writes it as data)

The floor (docs/DATA.md, "Baselines") is the val top-1 of a one-vs-all ridge regression on the
converted ``{train,val}_position.npy`` arrays themselves, flattened (3 x T x V x M numbers a clip) and
standardised with the training split's mean and std; targets one-hot minus 1/C; the regulariser alpha
is chosen from ``RIDGE_ALPHAS`` by 3-fold cross-validation on the training split (folds seeded), then
refitted on the whole training split.  It is the accuracy a linear model reaches on the joints without
learning features: a learned encoder is worth something above it.  The floor belongs to the arrays it
was computed on (the 50-frame arrays and CTR-GCN's native-length arrays of one dataset give different
floors), so every printed floor names its folder and shape.
"""
import argparse
import json
import os
import sys
from collections import Counter

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from torchlight.boundary import early  # noqa: E402

early(__name__)              # a Ctrl-C during the imports below is one line

import numpy as np  # noqa: E402

from feeder.ntu_feeder import load_data, load_labels  # noqa: E402
from torchlight import options  # noqa: E402
from torchlight.io import UserError, atomic_write, run_tool  # noqa: E402

RIDGE_ALPHAS = tuple(10.0 ** k for k in range(7))       # 1 .. 1e6
FOLDS = 3


def _ridge_fit(x, y, alphas):
    """Kernel-form ridge solutions ``x.T @ (x x^T + alpha I)^-1 y`` for every alpha (one eigendecomposition)."""
    s, u = np.linalg.eigh(x @ x.T)
    uy = u.T @ y
    return [x.T @ (u @ (uy / (s + alpha)[:, None])) for alpha in alphas]


def ridge_floor(train_x, train_y, val_x, val_y, alphas=RIDGE_ALPHAS, folds=FOLDS, seed=0):
    """(val top-1 %, alpha) of the ridge floor (module docstring); None without both splits."""
    found = ridge_scores(train_x, train_y, val_x, val_y, alphas, folds, seed)
    return found and found[:2]


def ridge_scores(train_x, train_y, val_x, val_y, alphas=RIDGE_ALPHAS, folds=FOLDS, seed=0):
    """(val top-1 %, alpha, cross-validated top-1 % on train at that alpha) of the ridge floor's fit; the
    last reads the training labels only.  None without both splits."""
    if not len(val_x) or len(train_x) < folds:
        return None
    train_y, val_y = np.asarray(train_y), np.asarray(val_y)
    xt, xv = train_x.reshape(len(train_x), -1).astype(np.float64), val_x.reshape(len(val_x), -1).astype(np.float64)
    mean, std = xt.mean(0), xt.std(0) + 1e-6
    xt, xv = (xt - mean) / std, (xv - mean) / std
    classes = int(max(train_y.max(), val_y.max())) + 1
    target = np.eye(classes)[train_y] - 1.0 / classes
    fold = np.random.RandomState(seed).permutation(len(xt)) % folds
    hits = np.zeros(len(alphas))
    for k in range(folds):
        fit, held = fold != k, fold == k
        for i, w in enumerate(_ridge_fit(xt[fit], target[fit], alphas)):
            hits[i] += np.sum((xt[held] @ w).argmax(1) == train_y[held])
    best = int(np.argmax(hits))
    w = _ridge_fit(xt, target, [alphas[best]])[0]
    return 100.0 * float(np.mean((xv @ w).argmax(1) == val_y)), alphas[best], 100.0 * float(hits[best]) / len(xt)


def baselines(train_x, train_y, val_x, val_y, num_class, folder):
    """The dataset's fixed reference points as data: ``{'folder', 'shape', 'ridge_floor', 'alpha',
    'majority', 'chance'}`` (percent; ridge entries None without both splits)."""
    floor = ridge_floor(train_x, train_y, val_x, val_y)
    val_y = np.asarray(val_y)
    majority = 100.0 * max(Counter(val_y.tolist()).values()) / len(val_y) if len(val_y) else None
    return {'folder': folder, 'shape': list(train_x.shape[1:]), 'ridge_floor': floor and floor[0],
            'alpha': floor and floor[1], 'majority': majority, 'chance': 100.0 / num_class}


def floor_line(info):
    """The one printed form of the floor (converters, this tool, the docs)."""
    shape = ' x '.join(str(s) for s in info['shape'])
    if info['ridge_floor'] is None:
        return f"ridge floor of {info['folder']}: none (needs a train and a val split)"
    return (f"ridge floor of {info['folder']} ({shape} numbers a clip): val top-1 {info['ridge_floor']:.1f}% "
            f"(alpha {info['alpha']:g} by {FOLDS}-fold cross-validation on train; majority class "
            f"{info['majority']:.1f}%, chance 1/C {info['chance']:.1f}%): a learned encoder should beat it")


def load_split(folder, split):
    """``(positions, labels)`` of ``folder/{split}_position.npy`` and ``{split}_label.pkl``, read and
    checked as the feeders read them (``load_data``: rank 5, float, finite; ``load_labels``: the
    restricted unpickler, one non-negative integer label per clip); an empty split is refused."""
    data_path = os.path.join(folder, f'{split}_position.npy')
    label_path = os.path.join(folder, f'{split}_label.pkl')
    x = load_data(data_path)
    if not len(x):
        raise UserError(f"data file '{data_path}' holds no clips: the {split} split is empty")
    _, labels = load_labels(label_path, len(x), data_path)
    return np.asarray(x), labels


def dataset_baselines(folder, num_class=None, sample_list=None):
    """``baselines`` of a converted folder (``num_class``: default the largest label + 1); ``sample_list``:
    only those training samples (``train_feeder_args.sample_list``)."""
    for split in ('train', 'val'):
        for suffix in ('_position.npy', '_label.pkl'):
            if not os.path.exists(os.path.join(folder, split + suffix)):
                raise UserError(f"'{folder}' has no {split}{suffix}: convert the dataset first (docs/DATA.md)")
    (tx, ty), (vx, vy) = load_split(folder, 'train'), load_split(folder, 'val')
    if tx.shape[1:] != vx.shape[1:]:
        raise UserError(f"'{folder}': train clips have shape {tx.shape[1:]} but val clips {vx.shape[1:]}; "
                        'convert both splits together')
    if sample_list is not None:
        from feeder.ntu_feeder import select_samples
        keep = select_samples(load_labels(os.path.join(folder, 'train_label.pkl'))[0], sample_list)
        tx, ty = tx[keep], ty[keep]
        folder = f'{folder} ({len(keep)} training samples of {sample_list})'
    num_class = num_class or int(max(ty.max(), vy.max())) + 1
    return baselines(tx, ty, vx, vy, num_class, folder)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('folder', type=options.input_folder,
                        help='a converted dataset folder ({train,val}_position.npy, _label.pkl)')
    parser.add_argument('--json', type=options.output_file, default=None,
                        help='also write the reference points to this JSON file')
    parser.add_argument('--sample-list', type=options.input_file, default=None,
                        help='only the training samples named in this file (tools/subset_list.py)')
    args = parser.parse_args(argv)
    info = dataset_baselines(args.folder, sample_list=args.sample_list)
    print(floor_line(info))
    if args.json:
        atomic_write(args.json, lambda f: json.dump(info, f, indent=1), mode='w')
    return info


if __name__ == '__main__':
    run_tool(main)
