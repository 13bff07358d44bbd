"""PKU-MMD Part I / Part II skeletons + action labels -> the AimCLR/CrosSCLR array format.

Every labelled action instance of a video becomes one sample named ``<video>_<index>`` (index 0-based
in the label file). Output, in ``<out>/pkummd/part1`` (or ``part2``): ``{train,val}_data.npy`` float32
(N, 3, 300, 25, 2), ``{train,val}_label.pkl`` = pickled ``(sample_names, labels)`` (labels 0-based)
and the 50-frame ``{train,val}_position.npy`` float32 (N, 3, 50, 25, 2). See docs/DATA.md.
``--preprocess mica`` writes MICA's 64-frame positions instead (``feeder.preprocess.normalize_sequence_mica``).

    python tools/pku_gendata.py --part 1 --skeleton-path PKU_Skeleton_Renew \\
        --label-path Train_Label_PKU_final --split-file cross-subject.txt
"""
import argparse
import math
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from torchlight.boundary import early, quote  # noqa: E402

early(__name__)              # a Ctrl-C during the imports below is one line

import numpy as np  # noqa: E402

from feeder.preprocess import (SplitWriter, write_splits, add_preprocess_arguments, has_skeleton, resolve_length,  # noqa: E402
                               select_bodies)
from net.utils.layouts import get_layout  # noqa: E402
from torchlight import options  # noqa: E402
from torchlight.io import UserError, run_tool  # noqa: E402
from torchlight.readers import read_lines, read_text  # noqa: E402
from torchlight.progress import Progress  # noqa: E402

NUM_CLASS = {1: 51, 2: 41}
NUM_JOINT = 25
NUM_PERSON = 2
MAX_FRAME = 300


def read_pku_skeleton(path):
    """A PKU-MMD skeleton file (one frame per line: 2 persons x 25 joints x xyz = 150 floats, person 2
    zero when absent) -> float64 ``(3, T, 25, 2)``. Blank lines are ignored; a line with another
    number of values or a non-numeric value raises ValueError naming the file and line."""
    rows = []
    for lineno, line in enumerate(read_lines(path, 'skeleton file'), 1):
        tokens = line.split()
        if not tokens:
            continue
        if len(tokens) != 150:
            raise UserError(f'{path}, line {lineno}: expected 150 values (2 persons x 25 joints x xyz), '
                             f'got {len(tokens)}')
        try:
            row = [float(x) for x in tokens]
        except ValueError:
            raise UserError(f'{path}, line {lineno}: non-numeric value in a skeleton row') from None
        if not all(math.isfinite(x) for x in row):
            raise UserError(f'{path}, line {lineno}: a NaN or infinite value in a skeleton row')
        rows.append(row)
    if not rows:
        raise UserError(f'{path}: no skeleton rows')
    data = np.asarray(rows).reshape(len(rows), NUM_PERSON, NUM_JOINT, 3)
    return data.transpose(3, 0, 2, 1)


def read_pku_labels(path, num_class):
    """A PKU-MMD label file -> ``[(label0, start, end, confidence)]``, one tuple per line
    ``label,start_frame,end_frame,confidence`` (label 1-based in the file, 0-based here)."""
    actions = []
    for lineno, line in enumerate(read_lines(path, 'label file'), 1):
        tokens = [t for t in re.split(r'[,\s]+', line.strip()) if t]
        if not tokens:
            continue
        if len(tokens) < 3:
            raise UserError(f"{path}, line {lineno}: expected 'label,start_frame,end_frame,confidence', "
                             f"got {quote(line.strip())}")
        try:
            label, start, end = (int(float(t)) for t in tokens[:3])
            conf = float(tokens[3]) if len(tokens) > 3 else 1.0
        except (ValueError, OverflowError):           # OverflowError: an infinite frame number
            raise UserError(f"{path}, line {lineno}: a field is not a finite number in "
                             f"{quote(line.strip())}") from None
        if not 1 <= label <= num_class:
            raise UserError(f'{path}, line {lineno}: label {label} outside 1..{num_class}')
        if start < 0 or end < start:
            raise UserError(f'{path}, line {lineno}: frames {start}..{end} are not an interval of frame '
                             'numbers (0 <= start <= end)')
        actions.append((label - 1, start, end, conf))
    return actions


def read_pku_split(path):
    """The cross-subject (or cross-view) split file -> ``(train_videos, val_videos)``.

    Lenient: video names (tokens with a digit and a hyphen, e.g. ``0002-L``, ``A01N01-M``) separated by commas
    and/or whitespace, after a header word starting with 'train' and one starting with 'valid'
    (also 'Validataion') or 'test'; other words are ignored."""
    tokens = [t.strip(':;') for t in re.split(r'[,\s]+', read_text(path, 'split file')) if t.strip(':;')]
    split = {'train': [], 'val': []}
    current = None
    for token in tokens:
        low = token.lower()
        if low.startswith('train'):
            current = 'train'
        elif low.startswith('valid') or low.startswith('test'):
            current = 'val'
        elif re.fullmatch(r'[A-Za-z0-9]*\d[A-Za-z0-9]*-[A-Za-z0-9]+', token):
            if current is None:
                raise UserError(f"{path}: video name '{token}' before any 'Training'/'Validation' header")
            split[current].append(token)
    for key, header in (('train', 'Training'), ('val', 'Validation')):
        if not split[key]:
            raise UserError(f"{path}: no video names under a '{header}' header")
    return split['train'], split['val']


def segment(seq, start, end):
    """Frames ``start..end`` (inclusive, 0-based rows of the skeleton file) of ``(3, T, V, M)``,
    clipped to the sequence; None if the interval lies outside it."""
    start, end = max(start, 0), min(end, seq.shape[1] - 1)
    if start > end:
        return None
    return seq[:, start:end + 1]


def gendata(skeleton_path, label_path, split_file, out_folder, part=1, length=50, skip_missing=False,
            progress=True, preprocess='family', max_missing=0.3):
    """Convert one PKU-MMD part; returns ``{'train': N, 'val': N}``."""
    num_class = NUM_CLASS[part]
    train, val = read_pku_split(split_file)
    videos = [(v, 'train') for v in train] + [(v, 'val') for v in val]
    missing = [v for v, _ in videos if not (os.path.exists(os.path.join(skeleton_path, v + '.txt'))
                                            and os.path.exists(os.path.join(label_path, v + '.txt')))]
    if missing and not skip_missing:
        raise UserError(f"{len(missing)} video(s) of {split_file} lack a skeleton or label file, e.g. "
                         f"'{missing[0]}.txt' in {skeleton_path} / {label_path}; pass --skip-missing to ignore")
    missing = set(missing)
    videos = [(v, p) for v, p in videos if v not in missing]
    if not videos:
        raise UserError(f'no video of {split_file} has both a skeleton and a label file')

    labels = {v: read_pku_labels(os.path.join(label_path, v + '.txt'), num_class) for v, _ in videos}
    layout = get_layout('ntu-rgb+d')
    folder = os.path.join(out_folder, 'pkummd', f'part{part}')
    writers = {p: SplitWriter(folder, p, sum(len(labels[v]) for v, q in videos if q == p), layout,
                              NUM_PERSON, MAX_FRAME, length, preprocess=preprocess, max_missing=max_missing)
               for p in ('train', 'val')}
    def fill():
        for video, p in Progress(videos, desc=f'pku part{part}', enabled=progress):
            seq = read_pku_skeleton(os.path.join(skeleton_path, video + '.txt'))
            for index, (label, start, end, _) in enumerate(labels[video]):
                name = f'{video}_{index}'
                clip = segment(seq, start, end)
                if clip is None:
                    raise UserError(f'{os.path.join(label_path, video + ".txt")}, action {index + 1}: '
                                     f'frames {start}..{end} outside the {seq.shape[1]} skeleton frames')
                clip = select_bodies(clip.transpose(3, 1, 2, 0), NUM_PERSON)
                if has_skeleton(clip, name):
                    writers[p].add(name, label, clip)

    counts = write_splits(writers, fill)
    return counts


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--part', type=int, choices=(1, 2), default=1,
                        help='PKU-MMD part: 1 (51 classes) or 2 (41 classes)')
    parser.add_argument('--skeleton-path', type=options.input_folder, required=True, help='folder of <video>.txt skeleton files')
    parser.add_argument('--label-path', type=options.input_folder, required=True, help='folder of <video>.txt label files')
    parser.add_argument('--split-file', type=options.input_file, required=True, help='cross-subject split file (Training/Validation lists)')
    parser.add_argument('--out-folder', type=options.output_folder, default='data', help='output root (default: data)')
    add_preprocess_arguments(parser)
    parser.add_argument('--skip-missing', action='store_true',
                        help='skip split videos without skeleton/label file instead of failing')
    parser.add_argument('--no-progress', action='store_true', help='no progress bar')
    args = parser.parse_args(argv)
    resolve_length(args)
    counts = gendata(args.skeleton_path, args.label_path, args.split_file, args.out_folder, args.part,
                     args.length, args.skip_missing, not args.no_progress, args.preprocess, args.max_missing)
    for p, n in counts.items():
        print(f"{os.path.join(args.out_folder, 'pkummd', f'part{args.part}')}: {p} {n} samples")


if __name__ == '__main__':
    run_tool(main)
