"""NW-UCLA ``all_sqe`` JSON skeletons -> the AimCLR/CrosSCLR position format (20-joint 'nw-ucla' layout).

Writes ``<out>/ucla/{train,val}_position.npy`` float32 (N, 3, length, 20, M) and
``<out>/ucla/{train,val}_label.pkl`` = pickled ``(sample_names, labels)`` (labels 0..9). Cross-view
protocol: views 1 and 2 train, view 3 val. See docs/DATA.md.  ``--preprocess mica`` writes MICA's
64-frame positions (``feeder.preprocess.normalize_sequence_mica``), e.g. into ``--out-folder data/mica64``
for ``config/ucla/pretrain_mica64.yaml``.  ``--preprocess ctrgcn`` keeps the native frames (translated by
joint 2 of the first frame, ``feeder.preprocess.translate_sequence_ctrgcn``) zero-padded to the longest clip
(or ``--length``), for the ``recognition_*.yaml`` configs and their CTR-GCN NW-UCLA sampling
(``feeder.ntu_feeder.ucla_sample``): ``--out-folder data/ctrgcn``.

    python tools/ucla_gendata.py --data-path ../shared/realdata/nw_ucla/all_sqe
    python tools/ucla_gendata.py --preprocess mica --out-folder data/mica64
    python tools/ucla_gendata.py --preprocess ctrgcn --out-folder data/ctrgcn
"""
import argparse
import glob
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from torchlight.boundary import early  # noqa: E402

early(__name__)              # a Ctrl-C during the imports below is one line

import numpy as np  # noqa: E402

from feeder.preprocess import (IncompleteSkeletonError, add_preprocess_arguments, preprocess_sequence,  # noqa: E402
                               resolve_length, save_labels)
from net.utils.layouts import get_layout  # noqa: E402
from tools.floor import dataset_baselines, floor_line  # noqa: E402
from torchlight import options  # noqa: E402
from torchlight.boundary import describe, quote  # noqa: E402
from torchlight.io import StagedFiles, UserError, check_finite, run_tool  # noqa: E402
from torchlight.progress import Progress  # noqa: E402
from torchlight.readers import load_json  # noqa: E402

NUM_CLASS = 10
TRAIN_VIEWS = (1, 2)
VAL_VIEWS = (3,)
DEFAULT_DATA_PATH = os.path.join(ROOT, '..', 'shared', 'realdata', 'nw_ucla', 'all_sqe')


def read_ucla_json(path, num_joint=20):
    """One ``all_sqe`` JSON -> ``(name, label0, view, seq)`` with seq float64 ``(3, T, 20, 1)``."""
    sample = load_json(path, 'NW-UCLA sample')
    try:
        name, label = sample['file_name'], int(sample['label'])
        skel = np.asarray(sample['skeletons'], dtype=np.float64)
        if not isinstance(name, str):
            raise TypeError(f'file_name {quote(name)} is not a name')
    except (ValueError, KeyError, TypeError, OverflowError) as e:
        raise ValueError(f'{path}: not an all_sqe sample ({describe(e)})') from None
    if skel.ndim != 3 or skel.shape[0] < 1 or skel.shape[1:] != (num_joint, 3):
        raise ValueError(f'{path}: skeletons must be [T][{num_joint}][3] with T >= 1, got shape {skel.shape}')
    check_finite(skel, f"{path}: 'skeletons' [frame, joint, xyz]", 'fix or remove the file')
    if not 1 <= label <= NUM_CLASS:
        raise ValueError(f'{path}: label {label} outside 1..{NUM_CLASS}')
    match = re.search(r'_v(\d+)$', name)
    if match is None:
        raise ValueError(f"{path}: file_name '{name}' has no _vVV view suffix")
    return name, label - 1, int(match.group(1)), skel.transpose(2, 0, 1)[..., None]


def gendata(data_path, out_folder, length=50, num_person=1, progress=True, preprocess='family', max_missing=0.3):
    """Convert all ``*.json`` in ``data_path``; returns ``{'train': N, 'val': N}`` (and prints how many
    samples MICA's preprocessing excluded).  ``length`` None (only with 'ctrgcn'): pad to the longest clip."""
    files = sorted(glob.glob(os.path.join(data_path, '*.json')))
    if not files:
        raise UserError(f"no .json files in '{data_path}' (set --data-path)")
    if num_person < 1:
        raise UserError(f'--num-person must be >= 1, got {num_person}')
    layout = get_layout('nw-ucla')
    parts = {'train': ([], [], []), 'val': ([], [], [])}   # names, labels, positions
    excluded = []
    for path in Progress(files, desc='nw-ucla', enabled=progress):
        name, label, view, seq = read_ucla_json(path, layout.num_node)
        if view in TRAIN_VIEWS:
            part = 'train'
        elif view in VAL_VIEWS:
            part = 'val'
        else:
            raise ValueError(f'{path}: view {view} is neither a training {TRAIN_VIEWS} nor a validation '
                             f'{VAL_VIEWS} view')
        try:
            pos = preprocess_sequence(seq, layout, length, preprocess, max_missing)   # (3, T', V, 1)
        except IncompleteSkeletonError:
            excluded.append(name)
            continue
        except ValueError as e:
            raise ValueError(f'{path}: {e}') from None
        for lst, item in zip(parts[part], (name, label, pos)):
            lst.append(item)
    if excluded:
        print(f'nw-ucla: {len(excluded)} samples excluded (more than {100 * max_missing:.0f}% missing joints)')
    if length is None:
        length = max(p.shape[1] for names, labels, positions in parts.values() for p in positions)
    folder = os.path.join(out_folder, 'ucla')
    counts = {}
    with StagedFiles() as staged:              # both splits move into place together, or neither does
        for part, (names, labels, positions) in parts.items():
            arr = np.zeros((len(positions), 3, length, layout.num_node, num_person), dtype=np.float32)
            for i, pos in enumerate(positions):
                arr[i, :, :pos.shape[1], :, :1] = pos
            check_finite(arr, f"{part} split of '{data_path}'", 'the converter writes no NaN/Inf: fix the file')
            np.save(staged.path(os.path.join(folder, f'{part}_position.npy')), arr)
            save_labels(staged.path(os.path.join(folder, f'{part}_label.pkl')), names, labels)
            counts[part] = len(names)
    return counts


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--data-path', type=options.input_folder, default=None,
                        help='folder of all_sqe *.json (default: ../shared/realdata/nw_ucla/all_sqe)')
    parser.add_argument('--out-folder', type=options.output_folder, default='data', help='output root (default: data)')
    add_preprocess_arguments(parser)
    parser.add_argument('--num-person', type=options.positive_int, default=1,
                        help='M of the output; persons beyond the first are zero (default: 1)')
    parser.add_argument('--no-progress', action='store_true', help='no progress bar')
    parser.add_argument('--no-floor', dest='floor', action='store_false',
                        help="skip the ridge floor of the written arrays (tools/floor.py; a few seconds)")
    args = parser.parse_args(argv)
    if not (args.preprocess == 'ctrgcn' and args.length is None):     # ctrgcn: native lengths by default
        resolve_length(args)
    counts = gendata(args.data_path or DEFAULT_DATA_PATH, args.out_folder, args.length, args.num_person, not args.no_progress,
                     args.preprocess, args.max_missing)
    folder = os.path.join(args.out_folder, 'ucla')
    for part, n in counts.items():
        print(f'{folder}: {part} {n} samples')
    if args.floor:
        print(floor_line(dataset_baselines(folder, num_class=10)))


if __name__ == '__main__':
    run_tool(main)
