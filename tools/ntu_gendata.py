"""NTU RGB+D 60 / 120 raw ``.skeleton`` files -> the AimCLR/CrosSCLR array format.

For every benchmark (ntu60: xsub, xview; ntu120: xsub, xset) it writes, into one folder
``<out>/<ntu60|ntu120>/<benchmark>/``: ``{train,val}_data.npy`` float32 (N, 3, 300, 25, 2),
``{train,val}_label.pkl`` = pickled ``(sample_names, labels)`` (labels = action id - 1) and the
50-frame ``{train,val}_position.npy`` float32 (N, 3, 50, 25, 2). Each file is read once, whatever
the number of benchmarks. See docs/DATA.md.  ``--preprocess mica`` writes MICA's 64-frame positions
instead (``feeder.preprocess.normalize_sequence_mica``; samples with > 30% missing joints excluded),
e.g. into ``--out-folder data/mica64`` for the ``pretrain_mica64.yaml`` configs.  ``--preprocess ctrgcn``
writes CTR-GCN's positions for the supervised ``recognition_*.yaml`` configs: one origin per sequence
(joint 2 of the first frame), native frames zero-padded to 300 (``feeder.preprocess.translate_sequence_ctrgcn``),
into ``--out-folder data/ctrgcn``.

    python tools/ntu_gendata.py --data-path /path/to/nturgb+d_skeletons --dataset both
    python tools/ntu_gendata.py --data-path /path/to/nturgb+d_skeletons --preprocess mica --out-folder data/mica64
    python tools/ntu_gendata.py --data-path /path/to/nturgb+d_skeletons --preprocess ctrgcn --out-folder data/ctrgcn
"""
import argparse
import glob
import os
import re
import sys
import warnings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from torchlight.boundary import early, quote  # noqa: E402

early(__name__)              # a Ctrl-C during the imports below is one line

import numpy as np  # noqa: E402

from feeder.ntu_feeder import load_data, load_labels  # noqa: E402
from feeder.preprocess import (SplitWriter, write_splits, add_preprocess_arguments, has_skeleton, normalize_dataset,  # noqa: E402
                               resolve_length, select_bodies)
from net.utils.layouts import get_layout  # noqa: E402
from torchlight import options  # noqa: E402
from torchlight.io import StagedFiles, UserError, run_tool  # noqa: E402
from torchlight.readers import read_lines, read_text  # noqa: E402
from torchlight.progress import Progress  # noqa: E402

MAX_BODY = 4          # bodies read per frame
MAX_BODY_TRUE = 2     # bodies kept (the most energetic)
NUM_JOINT = 25
MAX_FRAME = 300

NTU60_XSUB_TRAIN = (1, 2, 4, 5, 8, 9, 13, 14, 15, 16, 17, 18, 19, 25, 27, 28, 31, 34, 35, 38)
NTU60_XVIEW_TRAIN_CAMERAS = (2, 3)
NTU120_XSUB_TRAIN = NTU60_XSUB_TRAIN + (45, 46, 47, 49, 50, 52, 53, 54, 55, 56, 57, 58, 59, 70, 74,
                                        78, 80, 81, 82, 83, 84, 85, 86, 89, 91, 92, 93, 94, 95, 97,
                                        98, 100, 103)
BENCHMARKS = {'ntu60': ('xsub', 'xview'), 'ntu120': ('xsub', 'xset')}

DEFAULT_IGNORED = [
    os.path.join(ROOT, '..', 'shared', 'realdata', 'ntu_metadata', 'ntu60', 'samples_with_missing_skeletons.txt'),
    os.path.join(ROOT, '..', 'shared', 'realdata', 'ntu_metadata', 'ntu120',
                 'NTU_RGBD120_samples_with_missing_skeletons.txt'),
]

DEFAULT_DATA_PATH = 'data/nturgb+d_skeletons'
_NAME = re.compile(r'S(\d{3})C(\d{3})P(\d{3})R(\d{3})A(\d{3})')


class SkeletonFormatError(ValueError):
    """A malformed or truncated ``.skeleton`` file; the message names the file and line."""


def parse_name(name):
    """``'S001C002P003R001A004'`` -> dict(setup=1, camera=2, subject=3, replication=1, action=4)."""
    match = _NAME.fullmatch(name)
    if match is None:
        raise ValueError(f"'{name}' is not an NTU sample name like S001C001P001R001A001")
    return dict(zip(('setup', 'camera', 'subject', 'replication', 'action'), map(int, match.groups())))


def in_dataset(info, dataset):
    """NTU-60 is setups S001..S017 and actions A001..A060; NTU-120 is everything."""
    return dataset == 'ntu120' or (info['setup'] <= 17 and info['action'] <= 60)


def is_training(info, dataset, benchmark):
    """Whether a sample (``parse_name`` dict) is in the training part of ``dataset/benchmark``."""
    if benchmark == 'xsub':
        return info['subject'] in (NTU60_XSUB_TRAIN if dataset == 'ntu60' else NTU120_XSUB_TRAIN)
    if benchmark == 'xview':
        return info['camera'] in NTU60_XVIEW_TRAIN_CAMERAS
    if benchmark == 'xset':
        return info['setup'] % 2 == 0
    raise ValueError(f"unknown benchmark '{benchmark}' (xsub, xview, xset)")


def read_bodies(path, max_body=MAX_BODY, num_joint=NUM_JOINT):
    """Parse a ``.skeleton`` file (CRLF or LF) into float64 ``(max_body, T, num_joint, 3)`` xyz;
    bodies beyond ``max_body`` are read past, absent ones are zero; every body has exactly ``num_joint``
    joints (NTU's 25). Raises SkeletonFormatError."""
    lines = read_lines(path, '.skeleton file')
    pos = 0

    def take(what):
        nonlocal pos
        if pos >= len(lines):
            raise SkeletonFormatError(f'{path}, line {pos + 1}: unexpected end of file, expected {what}')
        pos += 1
        return lines[pos - 1].split()

    def take_int(what):
        tokens = take(what)
        if len(tokens) != 1 or not re.fullmatch(r'[0-9]{1,12}', tokens[0]):
            raise SkeletonFormatError(f"{path}, line {pos}: expected {what} (one integer), got "
                                      f"{quote(lines[pos - 1])}")
        return int(tokens[0])

    num_frame = take_int('the frame count')
    if num_frame > len(lines) - 1:          # every frame has at least its body-count line
        raise SkeletonFormatError(f'{path}, line 1: {num_frame} frames declared but the file has only '
                                  f'{len(lines) - 1} more lines')
    data = np.zeros((max_body, num_frame, num_joint, 3))
    for t in range(num_frame):
        num_body = take_int(f'the body count of frame {t + 1}/{num_frame}')
        count_line = pos
        for m in range(num_body):
            where = f'frame {t + 1}/{num_frame}, body {m + 1}/{num_body}'
            info = take(f'the body info line ({where}; is the body count {num_body} on line {count_line} right?)')
            if len(info) != 10:
                raise SkeletonFormatError(f'{path}, line {pos}: expected 10 body info values ({where}), '
                                          f'got {len(info)}; is the body count {num_body} on line {count_line} '
                                          'right?')
            nj = take_int(f'the joint count ({where})')
            if nj != num_joint:
                raise SkeletonFormatError(f'{path}, line {pos}: {nj} joints ({where}); an NTU RGB+D body has '
                                          f'{num_joint}: not an NTU .skeleton file')
            first = pos
            rows = []
            for j in range(nj):
                row = take(f'joint line {j + 1}/{nj} ({where})')
                if len(row) != 12:
                    raise SkeletonFormatError(f'{path}, line {pos}: expected 12 joint values '
                                              f'(joint {j + 1}/{nj}, {where}), got {len(row)}')
                rows.append(row)
            if m >= max_body:
                continue
            try:
                xyz = np.array([row[:3] for row in rows[:num_joint]], dtype=np.float64)
            except ValueError:
                bad = next(j for j, row in enumerate(rows[:num_joint]) if not _floats(row[:3]))
                raise SkeletonFormatError(f"{path}, line {first + bad + 1}: non-numeric joint value "
                                          f"{quote(lines[first + bad])}") from None
            data[m, t, :len(xyz)] = xyz.reshape(-1, 3)
    rest = [i for i in range(pos, len(lines)) if lines[i].strip()]
    if rest:
        raise SkeletonFormatError(f'{path}, line {rest[0] + 1}: unexpected data after the last frame '
                                  f'({num_frame} frames declared on line 1)')
    return data


def _floats(tokens):
    try:
        [float(x) for x in tokens]
        return True
    except ValueError:
        return False


def read_xyz(path, max_body=MAX_BODY, keep=MAX_BODY_TRUE):
    """A ``.skeleton`` file -> float64 ``(3, T, 25, keep)``: the ``keep`` most energetic of the first
    ``max_body`` bodies (AimCLR/CrosSCLR selection, see ``feeder.preprocess.body_energy``)."""
    return select_bodies(read_bodies(path, max_body), keep)


def read_ignored(paths):
    """The union of sample names listed (whitespace separated) in the given files."""
    names = set()
    for path in paths:
        names.update(read_text(path, 'missing-skeleton list').split())
    return names


def plan_targets(datasets, benchmarks):
    """``[(dataset, benchmark)]`` for the requested combination; benchmarks a dataset lacks are skipped."""
    targets = [(d, b) for d in datasets for b in BENCHMARKS[d] if benchmarks is None or b in benchmarks]
    if not targets:
        raise UserError(f'no benchmark of {", ".join(datasets)} among {", ".join(benchmarks)} '
                         f'(ntu60: xsub xview; ntu120: xsub xset)')
    return targets


def gendata(data_path, out_folder, datasets=('ntu60', 'ntu120'), benchmarks=None, ignored=(), length=50,
            num_workers=1, progress=True, preprocess='family', max_missing=0.3):
    """Convert the ``.skeleton`` files in ``data_path``; returns ``{(dataset, benchmark, part): N}``."""
    files = sorted(glob.glob(os.path.join(data_path, '*.skeleton')))
    if not files:
        raise UserError(f"no .skeleton files in '{data_path}' (set --data-path)")
    layout = get_layout('ntu-rgb+d')
    targets = plan_targets(datasets, benchmarks)
    ignored = set(ignored)

    jobs = []  # (path, name, label, [(dataset, benchmark, part)])
    for path in files:
        name = os.path.splitext(os.path.basename(path))[0]
        if name in ignored:
            continue
        info = parse_name(name)
        dests = [(d, b, 'train' if is_training(info, d, b) else 'val') for d, b in targets if in_dataset(info, d)]
        if dests:
            jobs.append((path, name, info['action'] - 1, dests))
    if not jobs:
        raise UserError(f"none of the {len(files)} files in '{data_path}' belongs to "
                         f"{', '.join(datasets)} after removing ignored samples")

    writers = {}
    for d, b in targets:
        for part in ('train', 'val'):
            capacity = sum((d, b, part) in job[3] for job in jobs)
            writers[(d, b, part)] = SplitWriter(os.path.join(out_folder, d, b), part, capacity, layout,
                                                MAX_BODY_TRUE, MAX_FRAME, length, preprocess=preprocess,
                                                max_missing=max_missing)
    paths = [job[0] for job in jobs]
    if num_workers > 1:
        import multiprocessing
        pool = multiprocessing.Pool(num_workers)
        sequences = pool.imap(read_xyz, paths, chunksize=8)
    else:
        pool, sequences = None, map(read_xyz, paths)
    def fill():
        for job, seq in zip(Progress(jobs, desc='ntu .skeleton', enabled=progress), sequences):
            _, name, label, dests = job
            if not has_skeleton(seq, name):
                continue
            for dest in dests:
                writers[dest].add(name, label, seq)
        if not any(writer.names for writer in writers.values()):
            raise ValueError(f"all {len(jobs)} .skeleton files in '{data_path}' hold no skeleton (all joints "
                             "zero): nothing written; check the files or --data-path")

    try:
        counts = write_splits(writers, fill)
    finally:
        if pool is not None:
            pool.terminate()
    return counts


def positions_only(out_folder, datasets, benchmarks, length=50, progress=True):
    """Recompute ``{train,val}_position.npy`` from existing ``{train,val}_data.npy`` (ours or the
    reference ntu_gendata's) in ``<out>/<dataset>/<benchmark>/``."""
    layout = get_layout('ntu-rgb+d')
    done = 0
    with StagedFiles() as staged:            # every position file moves into place at the end, or none does
        for d, b in plan_targets(datasets, benchmarks):
            for part in ('train', 'val'):
                folder = os.path.join(out_folder, d, b)
                src = os.path.join(folder, f'{part}_data.npy')
                if not os.path.exists(src):
                    continue
                data = load_data(src)                       # (N, 3, T, 25, M) float, finite
                if data.shape[1] != 3 or data.shape[3] != layout.num_node:
                    raise UserError(f"data file '{src}' has shape {data.shape}; expected (N, 3, T, "
                                    f"{layout.num_node}, M)")
                load_labels(os.path.join(folder, f'{part}_label.pkl'), len(data), src)   # exists, same count
                out = np.lib.format.open_memmap(staged.path(os.path.join(folder, f'{part}_position.npy')),
                                                mode='w+', dtype=np.float32,
                                                shape=data.shape[:2] + (length,) + data.shape[3:])
                normalize_dataset(data, layout, length, progress, out=out, desc=f'{d}/{b}/{part}')
                out.flush()
                del out
                done += 1
        if not done:
            raise UserError(f"no {{train,val}}_data.npy under '{out_folder}' for the chosen benchmarks")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--data-path', type=options.input_folder, default=None,
                        help=f'folder of NTU .skeleton files (NTU-60 and/or NTU-120; any subset; default {DEFAULT_DATA_PATH})')
    parser.add_argument('--out-folder', type=options.output_folder, default='data', help='output root (default: data)')
    parser.add_argument('--dataset', choices=('ntu60', 'ntu120', 'both'), default='both')
    parser.add_argument('--benchmark', nargs='+', choices=('xsub', 'xview', 'xset'), default=None,
                        help='subset of benchmarks (default: all of the chosen dataset(s))')
    parser.add_argument('--ignored-sample-path', type=options.input_file, nargs='*', default=None,
                        help='missing-skeleton list(s) to skip (default: the NTU-60 and NTU-120 lists in '
                             '../shared/realdata/ntu_metadata when present; give no path to skip none)')
    add_preprocess_arguments(parser)
    parser.add_argument('--num-workers', type=options.integer(1, 256), default=1, help='parallel file readers (default: 1)')
    parser.add_argument('--positions-only', action='store_true',
                        help='only recompute *_position.npy from existing *_data.npy in --out-folder')
    parser.add_argument('--no-progress', action='store_true', help='no progress bar')
    args = parser.parse_args(argv)
    resolve_length(args, native=MAX_FRAME)

    datasets = ('ntu60', 'ntu120') if args.dataset == 'both' else (args.dataset,)
    if args.positions_only:
        if args.preprocess != 'family':
            raise UserError(f'--positions-only recomputes the family 50-frame step only: run the full '
                             f'conversion for --preprocess {args.preprocess}')
        positions_only(args.out_folder, datasets, args.benchmark, args.length, not args.no_progress)
        return
    if args.ignored_sample_path is None:
        ignored_paths = [p for p in DEFAULT_IGNORED if os.path.exists(p)]
        if not ignored_paths:
            warnings.warn('no missing-skeleton list found; pass --ignored-sample-path (empty samples are '
                          'still skipped)')
    else:
        ignored_paths = args.ignored_sample_path
        for p in ignored_paths:
            if not os.path.exists(p):
                raise UserError(f"--ignored-sample-path '{p}' does not exist")
    counts = gendata(args.data_path or DEFAULT_DATA_PATH, args.out_folder, datasets, args.benchmark, read_ignored(ignored_paths),
                     args.length, args.num_workers, not args.no_progress, args.preprocess, args.max_missing)
    for (d, b, part), n in counts.items():
        print(f'{os.path.join(args.out_folder, d, b)}: {part} {n} samples')


if __name__ == '__main__':
    run_tool(main)
