"""A class-balanced, seeded subset of a converted training split, as a list of sample names (one a line)
for ``train_feeder_args.sample_list``: the rungs of a subset ladder, or a small-data trial of your set.

    python tools/subset_list.py data/ucla/train_label.pkl --per-class 10 --out config/ucla/subsets/xview_n100.txt

Each class keeps ``--per-class`` samples drawn without replacement (all of a smaller class), seeded.
"""
import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from torchlight.boundary import early  # noqa: E402

early(__name__)              # a Ctrl-C during the imports below is one line

import numpy as np  # noqa: E402

from feeder.ntu_feeder import load_labels  # noqa: E402
from torchlight import options  # noqa: E402
from torchlight.io import atomic_write, run_tool  # noqa: E402


def balanced_subset(labels, per_class, seed):
    """Sorted indices: ``per_class`` samples of every class (all of a smaller one), drawn with ``seed``."""
    rng = np.random.RandomState(seed)
    chosen = [rng.choice(np.flatnonzero(labels == c), min(per_class, int((labels == c).sum())), replace=False)
              for c in np.unique(labels)]
    return np.sort(np.concatenate(chosen))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('label_path', type=options.input_file, help="a split's label file ((names, labels) pickle)")
    parser.add_argument('--per-class', type=options.positive_int, required=True, help='samples kept of each class')
    parser.add_argument('--seed', type=options.seed, default=0, help='seed of the draw (default 0)')
    parser.add_argument('--out', type=options.output_file, required=True, help='the list file written (atomically)')
    args = parser.parse_args(argv)
    names, labels = load_labels(args.label_path)
    picked = balanced_subset(labels, args.per_class, args.seed)
    header = (f'# {len(picked)} of {len(names)} samples of {os.path.basename(args.label_path)}: '
              f'{args.per_class} a class, seed {args.seed} (tools/subset_list.py)\n')
    text = header + ''.join(f'{names[i]}\n' for i in picked)
    atomic_write(args.out, lambda f: f.write(text), mode='w')
    print(f'{args.out}: {len(picked)} samples, {len(set(labels[picked].tolist()))} classes')


if __name__ == '__main__':
    run_tool(main)
