"""Continuous recordings + a segment table -> clips, for ``tools/custom_gendata.py --recordings --segments``
(docs/DATA.md, "Continuous recordings").

A recording is one text file (``.txt`` / ``.csv``), one skeleton a row: the frame id (or a time) in column
``--frame-column`` (default 0), then the joints in the clip forms of custom_gendata (``--text-rows frame``: all
joints of the row, x y z joint after joint; ``--text-rows joint``: one joint a row, V consecutive rows of one
id a skeleton), or a ``.npy`` array ``(T, V, C)`` / ``(M, T, V, C)`` whose frame id is the row index.

The rules (each counted in the report):

* **Frame ids -> frames.** Integer ids are frame numbers; times (``--fps F``) become frame ``round(t * F)``.
  The frames run from the smallest id to the largest; an id that no row has (a gap) is a missing frame,
  bridged like a missing joint (linear interpolation between its neighbours) when the clip is converted, and
  counted against ``--max-missing``.
* **Repeated ids** (several rows of one frame id), ``--repeated-ids``: ``mean`` (default) averages the rows
  joint by joint (NaN joints left out): the rows are taken as repeated readings of one skeleton, as in
  Kinect-v1 recordings that write a frame twice with a refitted skeleton (a few cm apart), and the mean is the
  better estimate, with no row preferred; ``first`` / ``last`` keep one row; ``persons`` makes row j of an id
  person j (recordings that write one row per tracked body; no identity tracking beyond the row order).  The
  report gives the largest difference between rows of one id and warns when it is more than half the
  skeleton's size, where the rows are more likely two people than one.
* **Segments** (``--segments``, a CSV with a header naming ``recording``, ``label``, ``start``, ``end``; other
  columns, e.g. ``subject`` or ``split``, are kept for the split rules): ``start`` and ``end`` are frame ids
  (or times with ``--fps``) of the recording, the end included (``--segment-end inclusive``, the default, as
  PKU-MMD's and UTKinect's label files) or not (``exclusive``).  A row with an empty, NaN or non-numeric
  bound, an end before its start, or no frame of its recording inside it is skipped; a segment that runs past
  its recording is cut at the recording's ends.  A clip is named ``<recording>_<k>`` (k: the segment's place
  among its recording's rows of the table, from 0) unless the table has a ``name`` column.
"""
import csv
import io
import math
import os
from collections import Counter

import numpy as np

from torchlight.readers import load_npy, read_text

REPEATED_IDS = ('mean', 'first', 'last', 'persons')
SEGMENT_ENDS = ('inclusive', 'exclusive')
SEGMENT_COLUMNS = ('recording', 'label', 'start', 'end')
RECORDING_EXTENSIONS = ('.txt', '.csv', '.npy')


def read_segments(path):
    """The segment CSV -> list of dict rows (the header's column names, lower case)."""
    text = read_text(path, 'segment table')
    rows = [r for r in csv.reader(io.StringIO(text, newline='')) if r and not r[0].lstrip().startswith('#')]
    if not rows:
        raise ValueError(f"segment table '{path}' is empty")
    header = [h.strip().lower() for h in rows[0]]
    missing = [c for c in SEGMENT_COLUMNS if c not in header]
    if missing:
        raise ValueError(f"segment table '{path}': the header row must name the columns recording, label, start, "
                         f"end (missing {', '.join(missing)}; got {rows[0]})")
    out = []
    for line_no, row in enumerate(rows[1:], 2):
        if len(row) != len(header):
            raise ValueError(f"segment table '{path}', line {line_no}: {len(row)} columns, the header has "
                             f"{len(header)}")
        out.append(dict({k: v.strip() for k, v in zip(header, row)}, line=line_no))
    if not out:
        raise ValueError(f"segment table '{path}' has no segments")
    return out


def bound(text):
    """A segment bound -> float, or None when it is empty, NaN or not a number."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(value) or math.isinf(value) else value


def recording_file(folder, name):
    """The file of recording ``name`` in ``folder`` (``name`` itself, or ``name`` + a recording extension)."""
    for candidate in [name] + [name + ext for ext in RECORDING_EXTENSIONS]:
        path = os.path.join(folder, candidate)
        if os.path.isfile(path) and path.lower().endswith(RECORDING_EXTENSIONS):
            return path
    return None


def read_recording(path, num_joint, read_rows, text_clip, form='frame', columns=None, frame_column=0):
    """A recording file -> (ids (R,) float, skeletons (R, M, V, 3) float64 with NaN where a joint is missing):
    one entry per skeleton row (``read_rows`` / ``text_clip``: custom_gendata's text readers)."""
    if path.lower().endswith('.npy'):
        arr = np.asarray(load_npy(path, 'recording file', mmap=False), dtype=np.float64)
        if arr.ndim == 3:
            arr = arr[None]
        if arr.ndim != 4 or arr.shape[2] != num_joint or arr.shape[3] not in (2, 3):
            raise ValueError(f'{path}: expected (T, {num_joint}, C) or (M, T, {num_joint}, C), got {arr.shape}')
        if arr.shape[3] == 2:
            arr = np.concatenate([arr, np.zeros(arr.shape[:3] + (1,))], axis=3)
        return np.arange(arr.shape[1], dtype=np.float64), arr.transpose(1, 0, 2, 3)
    rows = read_rows(path)
    if frame_column is None:
        ids, values = None, rows
    else:
        if not -rows.shape[1] <= frame_column < rows.shape[1]:
            raise ValueError(f'{path}: --frame-column {frame_column}, but a row has {rows.shape[1]} values')
        ids, values = rows[:, frame_column], np.delete(rows, frame_column, axis=1)
    clip = text_clip(values, path, num_joint, form, columns)            # (M, T, V, 3): T skeleton rows
    skeletons = clip.transpose(1, 0, 2, 3)
    if ids is None:
        return np.arange(len(skeletons), dtype=np.float64), skeletons
    if form == 'joint':                                    # V rows a skeleton: one id for all of them
        grouped = ids.reshape(len(skeletons), num_joint)
        bad = np.flatnonzero(np.any(grouped != grouped[:, :1], axis=1))
        if bad.size:
            raise ValueError(f'{path}: rows {bad[0] * num_joint + 1}-{(bad[0] + 1) * num_joint} (one skeleton of '
                             f'{num_joint} joint rows) carry more than one frame id')
        ids = grouped[:, 0]
    if np.isnan(ids).any():
        raise ValueError(f'{path}: row {int(np.flatnonzero(np.isnan(ids))[0]) + 1} has no frame id in column '
                         f'{frame_column}')
    return ids, skeletons


def frame_numbers(ids, fps, path):
    """Frame ids (or times with ``fps``) -> integer frame numbers."""
    if fps:
        return np.rint(ids * fps).astype(np.int64)
    if not np.allclose(ids, np.rint(ids)):
        raise ValueError(f'{path}: frame ids are not integers (e.g. {ids[~np.isclose(ids, np.rint(ids))][0]:g}): '
                         'if they are times, give --fps')
    return np.rint(ids).astype(np.int64)


def to_frames(frames, skeletons, rule):
    """Skeleton rows with their frame numbers -> (first frame, (3, T, V, M) with NaN for a missing joint and
    for the frames of a gap, Counter of what the rule met)."""
    order = np.argsort(frames, kind='stable')
    frames, skeletons = frames[order], skeletons[order]
    first, last = int(frames[0]), int(frames[-1])
    unique, starts, counts = np.unique(frames, return_index=True, return_counts=True)
    persons = skeletons.shape[1] * (int(counts.max()) if rule == 'persons' else 1)
    out = np.full((last - first + 1, persons) + skeletons.shape[2:], np.nan)
    stats = Counter(ids_repeated=int((counts > 1).sum()), rows_merged=int((counts - 1).sum()),
                    gap_frames=int(last - first + 1 - unique.size))
    spread, size = 0.0, []
    for frame, start, count in zip(unique, starts, counts):
        rows = skeletons[start:start + count]                       # (count, M, V, 3)
        if count > 1:
            centre = np.nanmean(rows, axis=0) if not np.isnan(rows).all() else rows[0]
            gaps = np.linalg.norm(rows - centre[None], axis=-1)
            if np.isfinite(gaps).any():
                spread = max(spread, 2 * float(np.nanmax(gaps)))
        if rule == 'mean':
            with np.errstate(invalid='ignore'):
                value = np.nanmean(rows, axis=0) if count > 1 else rows[0]
        elif rule in ('first', 'last'):
            value = rows[0 if rule == 'first' else -1]
        else:
            value = rows.reshape((-1,) + rows.shape[2:])          # row j -> person j
        out[frame - first, :len(value)] = value
        body = rows[0, 0]
        if np.isfinite(body).all(axis=-1).sum() >= 2:
            good = body[np.isfinite(body).all(axis=-1)]
            size.append(float(np.linalg.norm(good.max(0) - good.min(0))))
    stats['largest_difference'] = spread
    stats['skeleton_size'] = float(np.median(size)) if size else 0.0
    return first, out.transpose(3, 0, 2, 1), stats                  # (T, M, V, 3) -> (3, T, V, M)


def cut_recordings(args, num_joint, read_rows, text_clip):
    """The segment table's clips: (rows with 'name' and 'label' and the table's other columns, {name: (3, T, V,
    M) float64 with NaN for missing joints}, report lines).  ``args``: recordings, segments, fps, frame_column,
    repeated_ids, segment_end, text_rows, columns."""
    if not os.path.isdir(args.recordings):
        raise ValueError(f"--recordings '{args.recordings}' is not a folder")
    segments = read_segments(args.segments)
    skipped, cut, lines = Counter(), Counter(), []
    examples = {}
    per_recording = Counter()
    rows, clips = [], {}
    loaded = {}
    totals = Counter()
    largest = (0.0, 0.0, None)          # the largest difference between rows of one id, the skeleton's size, file
    for seg in segments:
        name = seg['recording']
        k = per_recording[name]
        per_recording[name] += 1
        start, end = bound(seg['start']), bound(seg['end'])
        why = ('no start or end (empty, NaN or not a number)' if start is None or end is None else
               'end before start' if end < start else None)
        if why is None and name not in loaded:
            path = recording_file(args.recordings, name)
            if path is None:
                raise ValueError(f"segment table '{args.segments}', line {seg['line']}: recording {name!r} has no file "
                                 f"{name}.txt/.csv/.npy in '{args.recordings}'")
            ids, skeletons = read_recording(path, num_joint, read_rows, text_clip, args.text_rows, args.columns,
                                            args.frame_column)
            if not len(ids):
                raise ValueError(f'{path}: no skeleton rows')
            first, seq, stats = to_frames(frame_numbers(ids, args.fps, path), skeletons, args.repeated_ids)
            loaded[name] = (path, first, seq)
            totals.update({k2: v for k2, v in stats.items() if k2 not in ('largest_difference', 'skeleton_size')})
            totals['recordings'] += 1
            if stats['largest_difference'] > largest[0]:
                largest = (stats['largest_difference'], stats['skeleton_size'], path)
        if why is None:
            path, first, seq = loaded[name]
            scale = args.fps or 1
            lo = math.ceil(start * scale - 1e-9)
            hi = (math.floor(end * scale + 1e-9) if args.segment_end == 'inclusive' else
                  math.ceil(end * scale - 1e-9) - 1)
            last = first + seq.shape[1] - 1
            if hi < first or lo > last or hi < lo:
                why = 'no frame of its recording inside it'
            else:
                if lo < first or hi > last:
                    cut['cut at its recording\'s first or last frame'] += 1
                lo, hi = max(lo, first), min(hi, last)
        if why is not None:
            skipped[why] += 1
            examples.setdefault(why, []).append(f"line {seg['line']} ({name}, {seg['label']}: {seg['start']!r}, "
                                                f"{seg['end']!r})")
            continue
        clip_name = seg.get('name') or f'{os.path.splitext(name)[0]}_{k}'
        if clip_name in clips:
            raise ValueError(f"segment table '{args.segments}', line {seg['line']}: clip name {clip_name!r} twice")
        clips[clip_name] = seq[:, lo - first:hi - first + 1]
        rows.append(dict({c: v for c, v in seg.items() if c not in ('line', 'start', 'end')}, name=clip_name))
    if not rows:
        raise ValueError(f"segment table '{args.segments}': no segment left to cut ({sum(skipped.values())} "
                         'skipped)')
    end_rule = 'end frame included' if args.segment_end == 'inclusive' else 'end frame excluded'
    unit = f'times at {args.fps:g} frames/s' if args.fps else 'frame ids'
    lines.append(f'segments: {len(segments)} in the table, {len(rows)} cut from {totals["recordings"]} recordings '
                 f'({unit}, {end_rule}), {sum(skipped.values())} skipped'
                 + ''.join(f'; {n} {why}: {", ".join(examples[why][:3])}' + (' ...' if n > 3 else '')
                           for why, n in skipped.items())
                 + ''.join(f'; {n} {why}' for why, n in cut.items()))
    lines.append(f"frame ids: {totals['ids_repeated']} repeated ({totals['rows_merged']} extra rows, "
                 f"--repeated-ids {args.repeated_ids}), {totals['gap_frames']} frames missing in gaps "
                 '(bridged when inside a clip)')
    if totals['ids_repeated'] and largest[2]:
        lines.append(f"repeated ids: the rows of one id differ by up to {largest[0]:.3g} (data units) in "
                     f"'{largest[2]}', where a skeleton spans {largest[1]:.3g}")
        if args.repeated_ids != 'persons' and largest[0] > 0.5 * max(largest[1], 1e-12):
            lines.append('NOTICE: rows of one frame id differ by more than half a skeleton: they look like '
                         'different people; --repeated-ids persons keeps them apart')
    return rows, clips, lines
