"""Your own skeleton dataset -> the family's ``{train,val}_position.npy`` + ``{train,val}_label.pkl``.

    python tools/custom_gendata.py --make-example data/own_example/raw     # a generated try-out input
    python tools/custom_gendata.py --recordings raw/joints --segments segments.csv --layout kinect_v1.yaml \
        --out data/mydata --split-by subject --val-values s02 s04 [--repeated-ids mean] [--segment-end inclusive]
    python tools/custom_gendata.py --clips my_clips/ --labels labels.csv --layout my_layout.yaml \
        --out data/mydata --dataset mydata [--split-column split | --val-values 3 --split-by view |
        --val-fraction 0.2] [--classes classes.txt] [--text-rows joint] [--preprocess ctrgcn] [--no-rotate]

Input (docs/DATA.md, "Your own dataset"):

- ``--clips``: a folder with one file per clip, named ``<name>.npy``, ``<name>.csv`` or ``<name>.txt``.
  ``.npy``: float ``(T, V, C)`` or ``(M, T, V, C)``.  ``.csv`` / ``.txt``: one frame per row (default),
  ``V*C`` numbers (or ``M*V*C``: person 0's joints first), or with ``--text-rows joint`` one joint per row
  (``x y z [confidence]``, V rows a frame, one person); ``--columns`` names one joint's numbers; commas
  and/or white space; ``#`` comments, blank lines and a non-numeric header row are skipped.  C = 3 (x, y,
  z; y up) or 2 (z = 0).  ``NaN`` (or an empty CSV cell) marks a missing joint.
- ``--labels``: a CSV ``name,label[,subject,view,split]`` with a header row naming the columns (``name``
  and ``label`` are required, other columns are free).  ``label``: a class name or an integer id.
- ``--layout``: the layout file (``V`` joints; docs/DATA.md, "Layout files").
- or, instead of ``--clips`` / ``--labels``: ``--recordings`` (continuous recordings, one skeleton a row after a
  frame id) and ``--segments`` (a CSV ``recording,label,start,end[,...]``): the clips are cut from the
  recordings (``tools/segments.py``: repeated frame ids, gaps, inclusive ends, skipped segments; docs/DATA.md,
  "Continuous recordings").

Per clip: NaN joints become missing; missing joints (NaN or all-zero xyz) inside a person's present span
are bridged by linear interpolation over the frames where the joint is present; a clip with more than
``--max-missing`` (default 0.3, always applied) of person 0's joint-frames missing is dropped (the report
counts the drops per class and split and says that the split changed); then the 50-frame step
(``feeder/preprocess.py``: crop, centre on the layout's origin joint, resample to ``--length`` frames by
interpolation over the valid frames, rotate the shoulder line to +x unless ``--no-rotate``), or with
``--preprocess ctrgcn`` CTR-GCN's (for the recognition configs; ``--length`` defaults to the longest clip).

Classes: with ``--classes`` (a text file, one name per line, line i = class id i, or a class-description
YAML for MICA, whose ``label`` entries give the names in order) labels may be those names or 0-based ids;
without it, class names are sorted alphabetically, integer ids are sorted and numbered 0..C-1.

Split: ``--split-column`` (default ``split`` when the CSV has it; values train / val / test (= val)), or
``--split-by <column> --val-values v1 v2`` (those values go to val, e.g. a view or subjects), or
``--val-fraction f`` (a seeded, class-stratified random fraction).

Output in ``--out``: ``{train,val}_position.npy`` float32 (N, 3, length, V, M), ``{train,val}_label.pkl``,
``dataset.yaml`` (dataset name, classes, layout, counts: MICA's text features are checked against it) and
``report.txt`` (the report printed at the end: counts per class and split, kept and dropped, frames,
missing joints, and the ridge floor of the written arrays, ``tools/floor.py``: the accuracy a linear
model reaches without learning features).
"""
import argparse
import csv
import dataclasses
import io
import os
import sys
from collections import Counter

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from torchlight.boundary import early  # noqa: E402

early(__name__)              # a Ctrl-C during the imports below is one line

import numpy as np  # noqa: E402
import yaml  # noqa: E402

from feeder.preprocess import (add_preprocess_arguments, interpolate_missing_joints,  # noqa: E402
                               missing_joint_fraction, preprocess_sequence, resolve_length, save_labels,
                               valid_span)
from net.text_features import DATASET_INFO, class_labels, load_descriptions  # noqa: E402
from net.utils.layouts import LAYOUTS, get_layout  # noqa: E402
from processor.recipes import recipe  # noqa: E402
from processor.small_data import classifier_advice, command_line, pretrain_advice  # noqa: E402
from tools.floor import baselines, floor_line  # noqa: E402
from tools.segments import REPEATED_IDS, SEGMENT_ENDS, cut_recordings  # noqa: E402
from torchlight import options  # noqa: E402
from torchlight.io import StagedFiles, atomic_write, check_finite, run_tool  # noqa: E402
from torchlight.readers import load_npy, read_lines, read_text  # noqa: E402
from torchlight.progress import Progress  # noqa: E402

CLIP_EXTENSIONS = ('.npy', '.csv', '.txt')
SPLITS = {'train': 'train', 'val': 'val', 'test': 'val', 'validation': 'val'}


TEXT_ROWS = ('frame', 'joint')
COORDINATES = ('x', 'y', 'z')


def default_columns(per_joint):
    """The column names of one joint's ``per_joint`` numbers when ``--columns`` is not given."""
    return {2: ('x', 'y'), 3: COORDINATES, 4: COORDINATES + ('confidence',)}.get(per_joint)


def parse_columns(text):
    """``--columns 'x,y,z,confidence'`` -> a tuple of names; x and y are required, z optional, any other
    name (confidence, id, ...) is a column that is read past."""
    columns = tuple(c.strip().lower() for c in text.split(',') if c.strip())
    if 'x' not in columns or 'y' not in columns or any(columns.count(c) > 1 for c in COORDINATES):
        raise ValueError(f"--columns {text!r}: name each joint's columns in order, with x and y once each "
                         "(z optional; other names, e.g. confidence, are skipped), e.g. x,y,z,confidence")
    return columns


def read_text_rows(path):
    """The numeric rows of a .csv / .txt clip (comments, blank lines and a header row skipped)."""
    rows = []
    for line_no, line in enumerate(read_lines(path, 'clip file'), 1):
        line = line.split('#', 1)[0].strip()
        if not line:
            continue
        values = [c.strip() for c in line.split(',')] if ',' in line else line.split()
        try:
            rows.append([float(v) if v != '' else np.nan for v in values])
        except ValueError:
            if not rows:                   # a header row
                continue
            raise ValueError(f'{path}, line {line_no}: non-numeric value in {line[:60]!r}') from None
    if not rows:
        raise ValueError(f'{path}: no frames')
    width = len(rows[0])
    bad = next((i for i, r in enumerate(rows) if len(r) != width), None)
    if bad is not None:
        raise ValueError(f'{path}: row {bad + 1} has {len(rows[bad])} values, the first row {width}')
    return np.asarray(rows)


COLUMNS = options.Checked("one joint's column names with x and y, e.g. x,y,z,confidence", parse_columns, 'x,y,z')


def text_clip(rows, path, num_joint, form='frame', columns=None):
    """Numeric rows -> float64 ``(M, T, V, 3)``.  ``form`` 'frame': one frame a row, the joints of person
    0 then of person 1, ...; 'joint': one joint a row, ``V`` rows a frame (one person).  ``columns``: the
    names of one joint's numbers (default by count: x y | x y z | x y z confidence)."""
    width = rows.shape[1]
    if form == 'joint':
        if columns is None and default_columns(width) is None:
            raise ValueError(f'{path}: {width} values a row; one joint a row (--text-rows joint) reads 2 (x y), '
                             '3 (x y z) or 4 (x y z confidence): name them with --columns')
        columns = columns or default_columns(width)
        if width != len(columns):
            raise ValueError(f'{path}: {width} values a row, --columns names {len(columns)} ({",".join(columns)})')
        if len(rows) % num_joint:
            raise ValueError(f'{path}: {len(rows)} rows is not a multiple of the layout\'s {num_joint} joints '
                             '(--text-rows joint: one row per joint, frame after frame)')
        groups = rows.reshape(len(rows) // num_joint, 1, num_joint, width)
    else:
        if columns is None:
            per = next((c for c in (3, 2) if width % (num_joint * c) == 0), None)
            if per is None:
                hint = (' (one joint a row? give --text-rows joint)' if default_columns(width) else '')
                raise ValueError(f'{path}: {width} values a row is not a multiple of V*3 or V*2 (V={num_joint})'
                                 f'{hint}')
            columns = default_columns(per)
        if width % (num_joint * len(columns)):
            raise ValueError(f'{path}: {width} values a row is not a multiple of V x {len(columns)} columns '
                             f'(V={num_joint}, --columns {",".join(columns)})')
        groups = rows.reshape(len(rows), width // (num_joint * len(columns)), num_joint, len(columns))
    xyz = [groups[..., columns.index(c)] if c in columns else np.zeros(groups.shape[:3]) for c in COORDINATES]
    return np.stack(xyz, axis=-1).transpose(1, 0, 2, 3)          # (T, M, V, 3) -> (M, T, V, 3)


def read_clip(path, num_joint, form='frame', columns=None):
    """One clip file -> float64 ``(3, T, V, M)`` with NaN where a joint is missing (``form`` and
    ``columns``: how a .csv / .txt file is laid out, ``text_clip``)."""
    if path.endswith('.npy'):
        arr = np.asarray(load_npy(path, 'clip file', mmap=False), dtype=np.float64)
        if arr.ndim == 3:
            arr = arr[None]
        if arr.ndim != 4 or arr.shape[2] != num_joint or arr.shape[3] not in (2, 3):
            raise ValueError(f'{path}: expected (T, {num_joint}, C) or (M, T, {num_joint}, C) with C = 2 or 3, '
                             f'got shape {arr.shape}')
        if arr.shape[3] == 2:
            arr = np.concatenate([arr, np.zeros(arr.shape[:3] + (1,))], axis=3)
    else:
        arr = text_clip(read_text_rows(path), path, num_joint, form, columns)
    if np.isinf(arr).any():                   # NaN marks a missing joint; an infinite one is an error
        raise ValueError(f'{path}: an infinite value (first at [person, frame, joint, xyz] '
                         f'{[int(i) for i in np.argwhere(np.isinf(arr))[0]]}); fix the clip')
    return arr.transpose(3, 1, 2, 0)          # (M, T, V, C) -> (C, T, V, M)


def read_labels(path):
    """The label CSV -> list of dict rows (keys: the header's column names, lower case)."""
    text = read_text(path, 'label CSV')
    try:
        rows = [r for r in csv.reader(io.StringIO(text, newline='')) if r and not r[0].lstrip().startswith('#')]
    except csv.Error as e:
        raise ValueError(f"label CSV '{path}': {e}") from None
    if not rows:
        raise ValueError(f"label CSV '{path}' is empty")
    header = [h.strip().lower() for h in rows[0]]
    for need in ('name', 'label'):
        if need not in header:
            raise ValueError(f"label CSV '{path}': the header row must name the columns, with 'name' and 'label' "
                             f"(got {rows[0]})")
    out = []
    for line_no, row in enumerate(rows[1:], 2):
        if len(row) != len(header):
            raise ValueError(f"label CSV '{path}', line {line_no}: {len(row)} columns, the header has {len(header)}")
        out.append({k: v.strip() for k, v in zip(header, row)})
    if not out:
        raise ValueError(f"label CSV '{path}' has no clips")
    names = [r['name'] for r in out]
    twice = next((n for n in names if names.count(n) > 1), None)
    if twice is not None:
        raise ValueError(f"label CSV '{path}': clip {twice!r} appears twice")
    return out


def class_ids(labels, classes=None):
    """Labels (names or integer strings) -> (0-based ids, class names or None)."""
    if classes is not None:
        index = {c: i for i, c in enumerate(classes)}
        ids = []
        for label in labels:
            if label in index:
                ids.append(index[label])
            elif label.lstrip('-').isdigit() and 0 <= int(label) < len(classes):
                ids.append(int(label))
            else:
                raise ValueError(f'label {label!r} is neither a name of --classes nor an id 0..{len(classes) - 1}')
        return ids, list(classes)
    if all(label.lstrip('-').isdigit() for label in labels):
        order = sorted({int(label) for label in labels})
        return [order.index(int(label)) for label in labels], None
    order = sorted(set(labels))
    return [order.index(label) for label in labels], order


def assign_splits(rows, ids, args):
    """'train' / 'val' for every row, by a split column, a column rule or a stratified fraction."""
    column = args.split_column or ('split' if 'split' in rows[0] and not args.split_by and args.val_fraction is None
                                   else None)
    if column:
        if column not in rows[0]:
            raise ValueError(f"--split-column {column!r} is not a column of the label CSV ({', '.join(rows[0])})")
        bad = next((r for r in rows if r[column].lower() not in SPLITS), None)
        if bad is not None:
            raise ValueError(f"clip {bad['name']!r}: split {bad[column]!r} is not one of {', '.join(SPLITS)}")
        return [SPLITS[r[column].lower()] for r in rows]
    if args.split_by:
        if args.split_by not in rows[0]:
            raise ValueError(f"--split-by {args.split_by!r} is not a column of the label CSV ({', '.join(rows[0])})")
        if not args.val_values:
            raise ValueError('--split-by needs --val-values (the column values that go to val)')
        val = set(args.val_values)
        return ['val' if r[args.split_by] in val else 'train' for r in rows]
    if args.val_fraction is not None:
        if not 0 < args.val_fraction < 1:
            raise ValueError(f'--val-fraction must be in (0, 1), got {args.val_fraction}')
        rng = np.random.RandomState(args.seed)
        split = ['train'] * len(rows)
        for c in sorted(set(ids)):
            members = [i for i, k in enumerate(ids) if k == c]
            for i in rng.permutation(members)[:int(round(args.val_fraction * len(members)))]:
                split[i] = 'val'
        return split
    raise ValueError("no split given: add a 'split' column to the label CSV, or give --split-by COLUMN "
                     '--val-values V ..., or --val-fraction F')


def size_advice(num_clips, reference='config/ucla/pretrain_skeletonclr.yaml'):
    """{'pretraining': options, 'probe': options} advised for ``num_clips`` training clips with the shipped
    small-data recipe's batch and lr (``processor/small_data.py``); empty for a large set."""
    values = recipe((reference,))
    pretraining = pretrain_advice(num_clips, values['batch_size'], values['base_lr'])
    if not pretraining:
        return {}
    return {'pretraining': command_line(pretraining),
            'probe': command_line(classifier_advice(num_clips, values['batch_size']))}


def clip_files(args, rows):
    """{clip name: its file in --clips} for the label CSV's rows (a one-line error for a missing one)."""
    if not os.path.isdir(args.clips):
        raise ValueError(f"--clips '{args.clips}' is not a folder")
    files = {}
    for entry in sorted(os.listdir(args.clips)):
        stem, ext = os.path.splitext(entry)
        if ext.lower() in CLIP_EXTENSIONS:
            files.setdefault(stem, os.path.join(args.clips, entry))
    absent = [r['name'] for r in rows if r['name'] not in files]
    if absent:
        raise ValueError(f"clip {absent[0]!r} of '{args.labels}' has no file {absent[0]}.npy/.csv/.txt in "
                         f"'{args.clips}' ({len(absent)} missing)")
    return files


def bridge_missing(seq):
    """NaN -> missing; missing joints inside each person's span interpolated -> (seq, missing fraction of
    person 0 before bridging, joint-frames bridged, (V,) joint-frames bridged per joint)."""
    seq = np.where(np.isnan(seq).any(axis=0, keepdims=True), 0.0, seq)
    span = valid_span(seq)
    if span is None:
        return seq, 1.0, 0, np.zeros(seq.shape[2], dtype=int)
    crop = seq[:, span[0]:span[1] + 1]
    missing = missing_joint_fraction(crop)
    bridged = interpolate_missing_joints(crop)
    per_joint = (np.all(crop == 0, axis=0) & ~np.all(bridged == 0, axis=0)).sum(axis=(0, 2))
    seq = seq.copy()
    seq[:, span[0]:span[1] + 1] = bridged
    return seq, missing, int(per_joint.sum()), per_joint


def convert(args):
    layout = get_layout(args.layout)
    step_layout = dataclasses.replace(layout, shoulders=None) if args.no_rotate else layout
    if not args.no_rotate and layout.shoulders is None:
        print(f"notice: layout '{layout.name}' has no shoulders (and no joint names to derive them): the "
              'rotation step is skipped')
    recordings = getattr(args, 'recordings', None)
    if recordings:                            # continuous recordings cut by a segment table (tools/segments.py)
        rows, cut, segment_lines = cut_recordings(args, layout.num_node, read_text_rows, text_clip)
    else:
        rows, cut, segment_lines = read_labels(args.labels), None, []
    classes = None
    if args.classes and args.classes.lower().endswith(('.yaml', '.yml')):      # MICA's class descriptions
        classes = class_labels(load_descriptions(args.classes))
    elif args.classes:
        classes = [line.strip() for line in read_lines(args.classes, 'class-names file') if line.strip()]
    table = args.segments if recordings else args.labels
    try:
        ids, class_names = class_ids([r['label'] for r in rows], classes)
    except ValueError as e:
        raise ValueError(f"{'segment table' if recordings else 'label CSV'} '{table}': {e}") from None
    splits = assign_splits(rows, ids, args)
    files = {name: f'{recordings} ({name})' for name in cut} if cut is not None else clip_files(args, rows)
    clips, frames, report, dropped = [], [], Counter(), Counter()
    joint_bridged = np.zeros(layout.num_node, dtype=int)
    for row, label, split in Progress(list(zip(rows, ids, splits)), desc='convert', enabled=not args.no_progress):
        seq = cut[row['name']] if cut is not None else read_clip(files[row['name']], layout.num_node, args.text_rows,
                                                                   args.columns)
        frames.append(seq.shape[1])
        report['nan joint-frames'] += int(np.isnan(seq).any(axis=0).sum())
        seq, missing, bridged, per_joint = bridge_missing(seq)
        report['joint-frames bridged'] += bridged
        joint_bridged += per_joint
        if missing > args.max_missing:
            dropped[(label, split)] += 1
            print(f"{row['name']}: dropped, {100 * missing:.0f}% of person 0's joint-frames are missing "
                  f"(--max-missing {args.max_missing})")
            continue
        clips.append((row['name'], label, split, seq))
    if not clips:
        raise ValueError(f'no clip left to write (all {len(rows)} dropped by --max-missing {args.max_missing})')
    num_person = args.num_person or max(seq.shape[3] for *_, seq in clips)
    positions = {}
    for name, _, _, seq in clips:
        try:
            positions[name] = preprocess_sequence(seq[..., :num_person], step_layout, args.length,
                                                  args.preprocess, args.max_missing)
        except ValueError as e:
            raise ValueError(f"{files[name]}: {e}") from None
    length = args.length or max(p.shape[1] for p in positions.values())     # ctrgcn: the longest clip
    os.makedirs(args.out, exist_ok=True)
    out = {}
    for part in ('train', 'val'):
        chosen = [c for c in clips if c[2] == part]
        arr = np.zeros((len(chosen), 3, length, layout.num_node, num_person), dtype=np.float32)
        for i, (name, _, _, _) in enumerate(chosen):
            pos = positions[name]
            arr[i, :, :pos.shape[1], :, :pos.shape[3]] = pos
        check_finite(arr, f"{part} split of '{args.out}'", 'the converter writes no NaN/Inf: rescale the clips')
        labels = np.array([c[1] for c in chosen], dtype=np.int64)
        out[part] = (arr, labels, [c[0] for c in chosen])
    num_class = len(class_names) if class_names else int(max(ids)) + 1
    info = {'dataset': args.dataset or os.path.basename(os.path.normpath(args.out)), 'num_class': num_class,
            'classes': class_names, 'layout': args.layout if isinstance(args.layout, str) else layout.name,
            'num_joint': layout.num_node, 'num_person': num_person, 'length': length,
            'train': len(out['train'][1]), 'val': len(out['val'][1]),
            'rotated': not args.no_rotate and layout.shoulders is not None}
    info_text = yaml.safe_dump(info, sort_keys=False)
    lines = [f"{args.out}: dataset {info['dataset']!r}, {num_class} classes, layout {layout.name!r} "
             f"({layout.num_node} joints), {num_person} person(s), {length} frames ({args.preprocess})"]
    names = class_names or [str(c) for c in range(num_class)]
    lines.append('class | train | val | dropped (train, val)')
    for c in range(num_class):
        lines.append(f"{names[c]} | {int((out['train'][1] == c).sum())} | {int((out['val'][1] == c).sum())} | "
                     f"{dropped[(c, 'train')]}, {dropped[(c, 'val')]}")
    lost = {part: sum(n for (_, p), n in dropped.items() if p == part) for part in ('train', 'val')}
    lines.append(f"total | {len(out['train'][1])} | {len(out['val'][1])} | {lost['train']}, {lost['val']}")
    lines += segment_lines
    lines.append(f'frames per clip: min {min(frames)}, median {int(np.median(frames))}, max {max(frames)}'
                 + (f'; longer spans cut at {length}' if max(frames) > length and args.preprocess == 'ctrgcn'
                    else ''))
    lines.append(f"missing joints: {report['nan joint-frames']} NaN joint-frames, {report['joint-frames bridged']} "
                 f"joint-frames bridged, {sum(dropped.values())} clips dropped")
    if dropped:
        lines.append(f"NOTICE: {sum(dropped.values())} clips dropped (more than {100 * args.max_missing:g}% of person "
                     f"0's joint-frames missing, --max-missing {args.max_missing}): {lost['train']} train, "
                     f"{lost['val']} val; the split is no longer the dataset's standard one, so results are not "
                     'comparable with published ones unless the same clips are dropped (--max-missing 1 keeps all)')
    if joint_bridged.any():
        worst = [j for j in np.argsort(-joint_bridged, kind='stable')[:3] if joint_bridged[j]]
        lines.append('most bridged: ' + ', '.join(f'{layout.joint(j)} {joint_bridged[j]}' for j in worst))
    info['baselines'] = baselines(*out['train'][:2], *out['val'][:2], num_class, args.out)
    lines.append(floor_line(info['baselines']))
    advice = size_advice(len(out['train'][1]))
    if advice:
        info['size_advice'] = advice
        lines.append(f"size advice for the {len(out['train'][1])} training clips (processor/small_data.py; each run "
                     f"prints it too): pretraining from a config/ucla/ recipe {advice['pretraining']}; linear probe "
                     f"{advice['probe']}")
    text = '\n'.join(lines)
    with StagedFiles() as staged:              # every output moves into place together, or none does
        for part, (arr, labels, sample_names) in out.items():
            np.save(staged.path(os.path.join(args.out, f'{part}_position.npy')), arr)
            save_labels(staged.path(os.path.join(args.out, f"{part}_label.pkl")), sample_names, labels)
        for name, content in ((DATASET_INFO, info_text), ('report.txt', text + '\n')):
            with open(staged.path(os.path.join(args.out, name)), 'w', encoding='utf-8') as f:
                f.write(content)
    print(text)
    return info


# ---------------------------------------------------------------------------------------------
# --make-example: a small generated dataset in the input format above (the worked example of docs/DATA.md)

EXAMPLE_JOINTS = ('pelvis', 'spine', 'neck', 'head', 'l_shoulder', 'r_shoulder', 'l_elbow', 'r_elbow', 'l_wrist',
                  'r_wrist', 'l_hand', 'r_hand', 'l_hip', 'r_hip', 'l_knee', 'r_knee', 'l_ankle', 'r_ankle',
                  'l_foot', 'r_foot')
EXAMPLE_EDGES = (('pelvis', 'spine'), ('spine', 'neck'), ('neck', 'head'), ('pelvis', 'r_hip'), ('r_hip', 'r_knee'),
                 ('r_knee', 'r_ankle'), ('r_ankle', 'r_foot'), ('pelvis', 'l_hip'), ('l_hip', 'l_knee'),
                 ('l_knee', 'l_ankle'), ('l_ankle', 'l_foot'), ('neck', 'r_shoulder'), ('r_shoulder', 'r_elbow'),
                 ('r_elbow', 'r_wrist'), ('r_wrist', 'r_hand'), ('neck', 'l_shoulder'), ('l_shoulder', 'l_elbow'),
                 ('l_elbow', 'l_wrist'), ('l_wrist', 'l_hand'))
# rest pose in metres (x to the person's left, y up, z forward)
EXAMPLE_POSE = {'pelvis': (0, 1.0, 0), 'spine': (0, 1.25, 0), 'neck': (0, 1.5, 0), 'head': (0, 1.7, 0),
                'r_hip': (-0.1, 0.95, 0), 'r_knee': (-0.1, 0.52, 0), 'r_ankle': (-0.1, 0.1, 0),
                'r_foot': (-0.1, 0.03, 0.12), 'l_hip': (0.1, 0.95, 0), 'l_knee': (0.1, 0.52, 0),
                'l_ankle': (0.1, 0.1, 0), 'l_foot': (0.1, 0.03, 0.12), 'r_shoulder': (-0.2, 1.45, 0),
                'r_elbow': (-0.25, 1.18, 0), 'r_wrist': (-0.27, 0.93, 0), 'r_hand': (-0.28, 0.85, 0),
                'l_shoulder': (0.2, 1.45, 0), 'l_elbow': (0.25, 1.18, 0), 'l_wrist': (0.27, 0.93, 0),
                'l_hand': (0.28, 0.85, 0)}
EXAMPLE_DATASET = 'own_example'       # the descriptions' dataset: give the converter the same --dataset
EXAMPLE_CLASSES = ('wave right hand', 'wave left hand', 'squat down', 'kick forward')
EXAMPLE_DESCRIPTIONS = {
    'wave right hand': ('A person raises the right hand above the shoulder and waves it from side to side.',
                        'The head stays upright and faces forward while the hand waves.',
                        'The right arm lifts and the right hand swings left and right while the left arm hangs.',
                        'The hips and legs stay still and straight during the whole wave.',
                        'The feet stay planted on the floor while the person waves.'),
    'wave left hand': ('A person raises the left hand above the shoulder and waves it from side to side.',
                       'The head stays upright and faces forward while the hand waves.',
                       'The left arm lifts and the left hand swings left and right while the right arm hangs.',
                       'The hips and legs stay still and straight during the whole wave.',
                       'The feet stay planted on the floor while the person waves.'),
    'squat down': ('A person bends both knees to lower the body into a squat and stands up again.',
                   'The head moves down and up with the trunk as the body lowers and rises.',
                   'The arms move forward a little to keep balance while the body goes down.',
                   'The hips drop toward the floor and the knees bend deeply before both legs straighten.',
                   'Both feet stay flat on the floor while the knees bend and extend.'),
    'kick forward': ('A person swings the right leg forward in a kick and puts the foot back down.',
                     'The head stays level and looks forward while the leg kicks.',
                     'The arms hang by the sides and swing slightly to balance the kick.',
                     'The right hip flexes and the right knee straightens as the leg swings forward.',
                     'The right foot leaves the floor and moves forward while the left foot stays planted.'),
}


def example_clip(rng, label):
    """One generated clip (T, 20, 3) of class ``label`` (EXAMPLE_CLASSES), metres, random yaw and size."""
    T = int(rng.randint(30, 71))
    idx = {n: i for i, n in enumerate(EXAMPLE_JOINTS)}
    rest = np.array([EXAMPLE_POSE[n] for n in EXAMPLE_JOINTS], dtype=np.float64) * rng.uniform(0.85, 1.15)
    phase = np.linspace(0, 1, T) ** rng.uniform(0.6, 1.6)           # uneven speed
    amp = rng.uniform(0.5, 1.5)
    clip = np.repeat(rest[None], T, axis=0)
    for name in ('l_wrist', 'l_hand', 'r_wrist', 'r_hand'):         # fidgeting hands in every class
        clip[:, idx[name]] += 0.08 * np.sin(2 * np.pi * rng.uniform(0.5, 3) * phase[:, None] + rng.uniform(0, 6, 3))
    if label in (0, 1):                                   # wave: arm up, hand oscillates sideways
        side = 'r' if label == 0 else 'l'
        sign = -1.0 if side == 'r' else 1.0
        lift = np.clip(phase * 4, 0, 1) * np.clip((1 - phase) * 4, 0, 1)
        swing = 0.15 * amp * np.sin(2 * np.pi * rng.uniform(2, 4) * phase) * lift
        for name, height in (('elbow', 0.35), ('wrist', 0.75), ('hand', 0.9)):
            j = idx[f'{side}_{name}']
            clip[:, j, 1] += height * lift * amp
            clip[:, j, 0] += sign * 0.1 * lift + swing * (height / 0.9)
    elif label == 2:                                      # squat: everything above the knees goes down
        depth = 0.35 * amp * np.sin(np.pi * phase) ** 2
        for name in EXAMPLE_JOINTS:
            if not name.endswith(('ankle', 'foot')):
                scale = 0.5 if name.endswith('knee') else 1.0
                clip[:, idx[name], 1] -= depth * scale
            if name.endswith('knee'):
                clip[:, idx[name], 2] += 0.6 * depth
            if name.endswith(('wrist', 'hand')):
                clip[:, idx[name], 2] += 0.8 * depth
    else:                                                 # kick: right leg swings forward
        kick = np.sin(np.pi * np.clip((phase - 0.2) / 0.6, 0, 1)) * amp
        for name, reach in (('knee', 0.25), ('ankle', 0.55), ('foot', 0.65)):
            j = idx[f'r_{name}']
            clip[:, j, 2] += reach * kick
            clip[:, j, 1] += 0.5 * reach * kick
    yaw = rng.uniform(-0.6, 0.6)
    c, s = np.cos(yaw), np.sin(yaw)
    clip = clip @ np.array([[c, 0, -s], [0, 1, 0], [s, 0, c]]).T
    clip[..., [0, 2]] += rng.uniform(-1, 1, 2)
    clip += rng.normal(0, 0.02, clip.shape)
    return clip


def write_joint_rows(path, clip):
    """A clip ``(T, V, 3)`` as text, one joint a row (``x y z confidence``), V rows a frame; a NaN joint is
    written as ``nan nan nan 0``, as a tracker that lost it."""
    rows = clip.reshape(-1, 3)
    confidence = np.where(np.isnan(rows).any(axis=1), 0.0, 1.0)
    np.savetxt(path, np.column_stack([rows, confidence]), fmt='%.5f', header='x y z confidence')


def make_example(folder, per_class=(40, 10), seed=0):
    """Write ``folder/{clips/, labels.csv, layout.yaml, descriptions.yaml}``: a generated 20-joint dataset
    (joint order ``EXAMPLE_JOINTS``, not NW-UCLA's), clips as .npy and as .txt with one joint a row
    (convert with ``--text-rows joint``), a few NaN joints."""
    with StagedFiles() as staged:             # every file moves into place at the end, or none does
        rows = write_example(staged, folder, per_class, seed)
    print(f'{folder}: {len(rows)} clips, labels.csv, layout.yaml, descriptions.yaml')
    return folder


def write_example(staged, folder, per_class, seed):
    """The files of ``make_example`` at the temporary paths of ``staged``; -> the label rows."""
    rng = np.random.RandomState(seed)
    clips = os.path.join(folder, 'clips')
    rows = []
    for split, count in zip(('train', 'val'), per_class):
        for label, name in enumerate(EXAMPLE_CLASSES):
            for k in range(count):
                clip_name = f'{split}_{label}_{k:03d}'
                clip = example_clip(rng, label)
                if rng.rand() < 0.2:                      # a tracking drop-out: NaN joints for a few frames
                    t = rng.randint(1, len(clip) - 4)
                    clip[t:t + 3, rng.randint(0, 20)] = np.nan
                if k % 2:                                 # one joint a row: x y z confidence
                    write_joint_rows(staged.path(os.path.join(clips, f'{clip_name}.txt')), clip)
                else:
                    np.save(staged.path(os.path.join(clips, f'{clip_name}.npy')), clip.astype(np.float32))
                rows.append((clip_name, name, f's{k % 5 + 1}', split))
    def write_csv(f):
        writer = csv.writer(f)
        writer.writerow(['name', 'label', 'subject', 'split'])
        writer.writerows(rows)
    with open(staged.path(os.path.join(folder, 'labels.csv')), 'w', newline='', encoding='utf-8') as f:
        write_csv(f)
    layout = {'name': 'example20', 'joint_names': list(EXAMPLE_JOINTS), 'edges': [list(e) for e in EXAMPLE_EDGES],
              'center': 'spine', 'origin': 'neck',
              'parts': [['pelvis', 'spine'], ['neck', 'head'], ['r_hip', 'r_knee'], ['r_ankle', 'r_foot'],
                        ['l_hip', 'l_knee'], ['l_ankle', 'l_foot'], ['r_shoulder', 'r_elbow'],
                        ['r_wrist', 'r_hand'], ['l_shoulder', 'l_elbow'], ['l_wrist', 'l_hand']],
              'part_names': ['torso', 'head', 'right thigh', 'right foot', 'left thigh', 'left foot',
                             'right upper arm', 'right hand', 'left upper arm', 'left hand'],
              'bodies': [['pelvis', 'spine', 'neck', 'head'], ['r_hip', 'r_knee', 'r_ankle', 'r_foot'],
                         ['l_hip', 'l_knee', 'l_ankle', 'l_foot'], ['r_shoulder', 'r_elbow', 'r_wrist', 'r_hand'],
                         ['l_shoulder', 'l_elbow', 'l_wrist', 'l_hand']],
              'body_names': ['trunk', 'right leg', 'left leg', 'right arm', 'left arm']}
    with open(staged.path(os.path.join(folder, 'layout.yaml')), 'w', encoding='utf-8') as f:
        f.write('# layout of the generated example (docs/DATA.md, "Layout files"); flip and shoulders are '
                'derived from the joint names\n')
        yaml.safe_dump(layout, f, sort_keys=False, default_flow_style=None)
    descriptions = {'dataset': EXAMPLE_DATASET, 'classes': [
        dict(zip(('label', 'global', 'head', 'hands', 'hips', 'feet'), (name,) + EXAMPLE_DESCRIPTIONS[name]))
        for name in EXAMPLE_CLASSES]}
    with open(staged.path(os.path.join(folder, 'descriptions.yaml')), 'w', encoding='utf-8') as f:
        yaml.safe_dump(descriptions, f, sort_keys=False, width=200)
    return rows


def _frame_column(text):
    """``--frame-column``: a column index >= 0, or 'none' (the row order is the frame id)."""
    if str(text).lower() == 'none':
        return None
    value = int(text)
    if value < 0:
        raise ValueError(f'a column index must be >= 0, got {value}')
    return value


frame_column = options.Checked("a column index >= 0 or 'none'", _frame_column, '0', bad=('-1',))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--make-example', metavar='FOLDER', type=options.output_folder, default=None,
                        help='write a small generated input (clips/, labels.csv, layout.yaml, descriptions.yaml) '
                             'into FOLDER and stop (the worked example of docs/DATA.md)')
    parser.add_argument('--clips', type=options.input_folder, help='folder of per-clip .npy / .csv / .txt files')
    parser.add_argument('--labels', type=options.input_file, help='label CSV: name,label[,subject,view,split] with a header')
    parser.add_argument('--layout', type=options.input_file_or_name(LAYOUTS), help='layout file (.yaml) or layout name')
    parser.add_argument('--out', type=options.output_folder, help='output folder (e.g. data/mydata)')
    parser.add_argument('--dataset', type=options.text, default=None, help='dataset name (default: the name of --out)')
    parser.add_argument('--classes', type=options.input_file, default=None,
                        help="class names, one per line (line i = class id i), or MICA's descriptions .yaml "
                             '(its labels, in order)')
    parser.add_argument('--split-column', type=options.text, default=None, help="column with train/val/test (default: 'split')")
    parser.add_argument('--split-by', type=options.text, default=None, help='column whose --val-values go to val (e.g. view)')
    parser.add_argument('--val-values', type=options.text, nargs='+', default=None, help='values of --split-by that go to val')
    parser.add_argument('--val-fraction', type=options.open_fraction, default=None, help='class-stratified random val fraction')
    parser.add_argument('--seed', type=options.seed, default=0, help='seed of --val-fraction (default 0)')
    parser.add_argument('--num-person', type=options.positive_int, default=None, help='M of the output (default: the most found)')
    parser.add_argument('--no-rotate', action='store_true', help='skip the shoulder-line rotation')
    parser.add_argument('--no-progress', action='store_true', help='no progress bar')
    parser.add_argument('--text-rows', choices=TEXT_ROWS, default='frame',
                        help='what a row of a .csv / .txt clip holds: frame (default: all joints of a frame, '
                             'x y z joint after joint) or joint (one joint a row, x y z [confidence], V rows a '
                             'frame, one person)')
    parser.add_argument('--columns', type=COLUMNS, default=None,
                        help="the names of one joint's numbers in a text row, in order, e.g. x,y,z,confidence "
                             '(default by count: x,y | x,y,z | x,y,z,confidence); names other than x, y, z are '
                             'skipped')
    parser.input_modes = [('clips', 'labels'), ('recordings', 'segments')]      # one or the other
    recordings = parser.add_argument_group('continuous recordings (tools/segments.py; instead of --clips/--labels)')
    recordings.add_argument('--recordings', type=options.input_folder, default=None,
                            help='folder of recordings, one skeleton a row: a frame id (or time) column, then the '
                                 'joints (.txt/.csv), or .npy (T, V, C) with the row index as frame id')
    recordings.add_argument('--segments', type=options.input_file, default=None,
                            help='segment CSV: recording,label,start,end[,subject,split,...] with a header')
    recordings.add_argument('--frame-column', type=frame_column, default=0,
                            help="the column of a recording row with the frame id or time (default 0; 'none': the "
                                 'row order)')
    recordings.add_argument('--fps', type=options.positive_float, default=None,
                            help='frame ids and segment bounds are times in seconds at this frame rate')
    recordings.add_argument('--repeated-ids', choices=REPEATED_IDS, default='mean',
                            help='rows of one frame id: mean (default: readings of one skeleton, averaged), first, '
                                 'last, or persons (row j = person j)')
    recordings.add_argument('--segment-end', choices=SEGMENT_ENDS, default='inclusive',
                            help="a segment's end frame: inclusive (default, PKU-MMD / UTKinect) or exclusive")
    add_preprocess_arguments(parser)
    args = parser.parse_args(argv)
    if not (args.preprocess == 'ctrgcn' and args.length is None):     # ctrgcn: the longest clip by default
        resolve_length(args)
    if args.make_example:
        make_example(args.make_example)
        return
    if args.recordings or args.segments:
        if args.clips or args.labels:
            parser.error('--recordings/--segments cut recordings into clips: not with --clips/--labels')
        needed = ('recordings', 'segments', 'layout', 'out')
    else:
        needed = ('clips', 'labels', 'layout', 'out')
    missing = [f'--{k}' for k in needed if not getattr(args, k)]
    if missing:
        parser.error(f"the following arguments are required: {', '.join(missing)}")
    if args.fps is not None and not args.fps > 0:
        parser.error(f'--fps must be > 0, got {args.fps}')
    convert(args)


if __name__ == '__main__':
    run_tool(main)
