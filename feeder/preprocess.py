"""The "50-frame step" of the AimCLR/SkeletonCLR family, and the array/label writers shared by the
``tools/*_gendata.py`` scripts.

A sequence is a float array ``(C=3, T, V, M)``: xyz, frames, joints, persons. A person-frame (one
person in one frame) is *present* when any of its joints is non-zero; absent persons are all zeros.

``normalize_sequence`` does, in this order:

(a) crop to the valid span: from the first to the last frame in which any joint of any person is
    non-zero;
(b) centre: subtract, per frame, the origin joint (``layout.origin_joint``; NTU: joint 21, the spine
    shoulder) of person 0 from every present person; absent person-frames stay exactly zero;
(c) resize the valid span to ``length`` frames by linear interpolation over the frame index (sample
    positions ``np.linspace(0, Tv - 1, length)``); a 1-frame span is repeated. Where one of the two
    neighbouring person-frames is absent, the nearer one is taken instead of blending a skeleton with
    zeros;
(d) rotate about the y axis so that the shoulder line of person 0 (``layout.shoulders`` = (left,
    right); the vector right - left) in its first present frame is parallel to +x (z component 0, x
    positive). One rotation per sample, applied to all frames and persons. If that vector has no
    extent in the x-z plane the rotation is skipped.

All-zero sequences have no valid span: they raise ``ValueError`` (never NaN).

``normalize_sequence_mica`` is MICA's preprocessing (section 5.2, "Dataset Preprocessing": "3D joint
coordinates are centered at the hip joint and scaled by the average bone length ... resampled to 64
frames using linear interpolation. Missing or noisy joints are linearly interpolated from adjacent
frames ... samples with severely incomplete skeletons (typically more than 30% missing joints) are
excluded ... the joint coordinates are normalized to the range of [-1, 1]"), in this order:

(a) crop to the valid span, as above;
(b) missing joints: a joint of a person-frame is missing when its three coordinates are zero; the
    fraction of missing joints of person 0 (the main actor) over the valid span (frames where person
    0 is absent count as all joints missing) above ``max_missing`` (0.3) excludes the sample
    (``IncompleteSkeletonError``);
(c) within each person's present span, a missing joint is linearly interpolated over the frames in
    which that joint is present (held constant before its first / after its last present frame);
(d) centre: subtract, per frame, person 0's hip (``HIP_JOINTS``: NTU / NW-UCLA joint 1, the spine base /
    hip centre; OpenPose the mid-hip) from every present person;
(e) scale: divide by the average bone length of person 0 (mean over the layout's bones and its present
    frames);
(f) resample the span to ``length`` frames (64) exactly as step (c) above;
(g) [-1, 1]: divide by the largest absolute coordinate of the sample (after (e) this only rescales:
    the paper gives no other constant).  No view rotation (the paper names none).

``translate_sequence_ctrgcn`` is CTR-GCN's NTU preprocessing (``data/ntu/seq_transformation.py``:
``seq_translation`` then ``align_frames``), used by the supervised recognition configs:

(a) crop to the valid span, as above;
(b) one origin per sequence: joint 2 (0-based 1; NTU spine mid, NW-UCLA spine) of person 0 in its first
    present frame is subtracted from every present person-frame; absent person-frames stay zero (the
    reference re-zeroes them).  No per-frame centring, so global motion (jumping, sitting down,
    falling) stays in the data; no rotation, no resize;
(c) zero padding at the end to ``length`` frames (NTU: 300, the longest clip; NW-UCLA: the longest clip
    of the set, ``tools/ucla_gendata.py --preprocess ctrgcn``).  The feeder's crop (``valid_crop_resize``:
    a 50-100% crop of at least 64 frames, resized to 64) or CTR-GCN's NW-UCLA sampling then works on the
    native frames.

CTR-GCN's denoising of the raw NTU bodies (``get_raw_denoised_data.py``: noisy-body filters by length,
spread and motion) is not reproduced; the two bodies are chosen by the family's energy rule
(``select_bodies``).
"""
import os
import pickle
import warnings

import numpy as np

from torchlight import options
from torchlight.io import StagedFiles, UserError, check_finite
from torchlight.progress import Progress


def person_present(seq):
    """Boolean ``(T, M)``: True where a person has any non-zero joint in a frame."""
    return np.any(seq != 0, axis=(0, 2))


def valid_span(seq):
    """``(first, last)`` frame indices (inclusive) of the frames with any non-zero joint, or None."""
    valid = np.flatnonzero(np.any(seq != 0, axis=(0, 2, 3)))
    if valid.size == 0:
        return None
    return int(valid[0]), int(valid[-1])


def _shoulder_rotation(seq, present, layout):
    """The 3x3 y-rotation that maps the shoulder line of person 0 to +x (identity if undefined)."""
    if layout.shoulders is None:
        return np.eye(3)
    frames = np.flatnonzero(present[:, 0])
    if frames.size == 0:
        return np.eye(3)
    left, right = layout.shoulders
    vec = seq[:, frames[0], right, 0] - seq[:, frames[0], left, 0]
    norm = np.hypot(vec[0], vec[2])
    if norm < 1e-8:
        return np.eye(3)
    c, s = vec[0] / norm, vec[2] / norm
    # x' = c x + s z, z' = -s x + c z: a proper rotation about y taking (vec_x, vec_z) to (norm, 0)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


PREPROCESSINGS = ('family', 'mica', 'ctrgcn')
CTRGCN_ORIGIN_JOINT = 1          # joint 2 (1-based) of the reference, in both of its NTU and NW-UCLA pipelines
HIP_JOINTS = {'ntu-rgb+d': (0,), 'nw-ucla': (0,), 'openpose': (8, 11)}


class IncompleteSkeletonError(ValueError):
    """A sequence with more missing joints than MICA's preprocessing admits (it is excluded)."""


def resample_frames(seq, present, length):
    """Resize ``(3, Tv, V, M)`` to ``length`` frames by linear interpolation over the frame index; the
    nearer person-frame where one of the two neighbours is absent (``present`` (Tv, M))."""
    tv = seq.shape[1]
    pos = np.linspace(0, tv - 1, length)
    i0 = np.floor(pos).astype(int)
    i1 = np.minimum(i0 + 1, tv - 1)
    w = (pos - i0)[None, :, None, None]
    blend = seq[:, i0] * (1 - w) + seq[:, i1] * w
    nearest = seq[:, np.where(pos - i0 <= 0.5, i0, i1)]
    both = (present[i0] & present[i1])[None, :, None, :]
    return np.where(both, blend, nearest)


def missing_joint_fraction(seq):
    """Fraction of person 0's joints that are missing (all three coordinates zero) over the frames of
    ``seq`` (3, T, V, M)."""
    return float(np.mean(np.all(seq[..., 0] == 0, axis=0)))


def interpolate_missing_joints(seq):
    """Step (c) of MICA's preprocessing on ``(3, T, V, M)`` (a copy)."""
    out = seq.copy()
    frames = np.arange(seq.shape[1])
    for m in range(seq.shape[3]):
        span = np.flatnonzero(np.any(seq[..., m] != 0, axis=(0, 2)))
        if span.size == 0:
            continue
        inside = frames[span[0]:span[-1] + 1]
        for v in range(seq.shape[2]):
            have = np.flatnonzero(np.any(seq[:, inside, v, m] != 0, axis=0))
            if have.size == 0 or have.size == inside.size:
                continue
            for c in range(3):
                out[c, inside, v, m] = np.interp(inside, inside[have], seq[c, inside[have], v, m])
    return out


def hip_joints(layout):
    if layout.name not in HIP_JOINTS:
        raise ValueError(f"MICA preprocessing: no hip joint known for layout '{layout.name}' "
                         f"(known: {', '.join(HIP_JOINTS)})")
    return list(HIP_JOINTS[layout.name])


def cropped_to_valid_span(seq, layout, length):
    """Step (a) of both preprocessings, with their input checks: ``seq`` (3, T, V, M) as float64,
    cropped to its valid span.  ValueError for a wrong shape, ``length`` < 1 or an all-zero sequence."""
    seq = np.asarray(seq, dtype=np.float64)
    if seq.ndim != 4 or seq.shape[0] != 3 or seq.shape[2] != layout.num_node:
        raise ValueError(f"expected a (3, T, {layout.num_node}, M) sequence for layout '{layout.name}', "
                         f"got shape {seq.shape}")
    if length < 1:
        raise ValueError(f'length must be >= 1, got {length}')
    span = valid_span(seq)
    if span is None:
        raise ValueError('sequence has no non-zero frame (all joints of all persons are zero)')
    return seq[:, span[0]:span[1] + 1]


def add_preprocess_arguments(parser):
    """``--length``, ``--preprocess`` and ``--max-missing`` of the data tools (tools/*_gendata.py)."""
    parser.add_argument('--length', type=options.positive_int, default=None,
                        help='frames of *_position.npy (default: 50, with --preprocess mica 64, with --preprocess '
                             'ctrgcn the zero-padded native length: NTU 300, NW-UCLA and your own data the longest '
                             'clip; a longer clip is resampled (50-frame, mica) or cut (ctrgcn) to it)')
    parser.add_argument('--preprocess', choices=PREPROCESSINGS, default='family',
                        help="family: the 50-frame step (default); mica: MICA's section 5.2 preprocessing; "
                             "ctrgcn: CTR-GCN's (one origin per sequence, native frames zero-padded) for the "
                             "recognition configs")
    parser.add_argument('--max-missing', type=options.fraction, default=0.3,
                        help="drop a clip with more than this fraction of person 0's joint-frames missing "
                             '(default 0.3): tools/custom_gendata.py always (1 keeps every clip), the NTU, PKU '
                             'and NW-UCLA tools with --preprocess mica only')


def resolve_length(args, native=None):
    """The default ``--length`` of the chosen preprocessing: 50 (family), 64 (MICA, section 5.2) or, for
    'ctrgcn', ``native`` (the length the tool pads its native frames to; a tool without one needs
    ``--length``)."""
    if args.length is None:
        if args.preprocess == 'ctrgcn' and native is None:
            raise UserError('--preprocess ctrgcn needs --length (the frames to zero-pad to) with this tool')
        args.length = {'mica': 64, 'ctrgcn': native}.get(args.preprocess, 50)
    return args


def translate_sequence_ctrgcn(seq, layout, length=None):
    """CTR-GCN's steps (a)-(c) (module docstring) for one sample ``(3, T, V, M)``; float32
    ``(3, length, V, M)`` (``length`` None: the valid span's own length; a longer span is cut at
    ``length``, as ``align_frames`` with NTU's 300).  ValueError for an all-zero sequence or a wrong shape."""
    seq = cropped_to_valid_span(seq, layout, length or 1)                       # (a)
    present = person_present(seq)
    if layout.num_node <= CTRGCN_ORIGIN_JOINT:
        raise ValueError(f"CTR-GCN preprocessing: layout '{layout.name}' has no joint {CTRGCN_ORIGIN_JOINT + 1}")
    first = int(np.flatnonzero(present[:, 0])[0]) if present[:, 0].any() else 0
    origin = seq[:, first, CTRGCN_ORIGIN_JOINT, 0]                             # (b)
    seq = (seq - origin[:, None, None, None]) * present[None, :, None, :]
    return fit_frames(seq, seq.shape[1] if length is None else length)          # (c)


def normalize_sequence_mica(seq, layout, length=64, max_missing=0.3):
    """MICA's steps (a)-(g) (module docstring) for one sample ``(3, T, V, M)``; float32
    ``(3, length, V, M)``.  Raises ``IncompleteSkeletonError`` for an excluded sample, ValueError for an
    all-zero one or a wrong shape."""
    seq = cropped_to_valid_span(seq, layout, length)                           # (a)
    missing = missing_joint_fraction(seq)                                      # (b)
    if missing > max_missing:
        raise IncompleteSkeletonError(f'{100 * missing:.1f}% of the joints are missing (more than '
                                      f'{100 * max_missing:.0f}%)')
    seq = interpolate_missing_joints(seq)                                      # (c)
    present = person_present(seq)
    hip = seq[:, :, hip_joints(layout), 0:1].mean(axis=2, keepdims=True)       # (d)
    seq = (seq - hip) * present[None, :, None, :]
    frames = present[:, 0]
    bones = np.array(layout.edges)                                             # (e)
    lengths = np.linalg.norm(seq[:, frames][:, :, bones[:, 0], 0] - seq[:, frames][:, :, bones[:, 1], 0], axis=0)
    bone = float(lengths.mean()) if lengths.size else 0.0
    if bone > 1e-8:
        seq = seq / bone
    out = resample_frames(seq, present, length)                                # (f)
    peak = np.abs(out).max()                                                   # (g)
    if peak > 0:
        out = out / peak
    return out.astype(np.float32)


def preprocess_sequence(seq, layout, length, preprocess='family', max_missing=0.3):
    """``normalize_sequence`` ('family', the 50-frame step), ``normalize_sequence_mica`` ('mica') or
    ``translate_sequence_ctrgcn`` ('ctrgcn')."""
    if preprocess not in PREPROCESSINGS:
        raise ValueError(f"preprocess={preprocess!r}: use one of {', '.join(PREPROCESSINGS)}")
    if preprocess == 'mica':
        return normalize_sequence_mica(seq, layout, length, max_missing)
    if preprocess == 'ctrgcn':
        return translate_sequence_ctrgcn(seq, layout, length)
    return normalize_sequence(seq, layout, length)


def normalize_sequence(seq, layout, length=50):
    """Steps (a)-(d) above for one sample ``(3, T, V, M)``; returns float32 ``(3, length, V, M)``.

    Raises ValueError when the sequence has no non-zero frame or its shape does not match the layout."""
    # (a) crop
    seq = cropped_to_valid_span(seq, layout, length)
    present = person_present(seq)                                   # (Tv, M), before centring
    # (b) centre on person 0's origin joint, keep absent person-frames at zero
    seq = seq - seq[:, :, layout.origin_joint:layout.origin_joint + 1, 0:1]
    seq = seq * present[None, :, None, :]
    # (c) resize by linear interpolation; nearest neighbour where a neighbour is absent
    out = resample_frames(seq, present, length)
    # (d) rotate about y (the rotation is taken on the crop, where frame indices are exact)
    rot = _shoulder_rotation(seq, present, layout)
    out = np.einsum('ij,jtvm->itvm', rot, out)
    return out.astype(np.float32)


def normalize_dataset(data, layout, length=50, progress=True, out=None, desc='normalize'):
    """``normalize_sequence`` over a batch ``(N, 3, T, V, M)`` (array or read-only mmap).

    Writes into ``out`` (e.g. an ``open_memmap``) if given, else returns a new float32 array
    ``(N, 3, length, V, M)``. An all-zero sample raises ValueError naming its index."""
    n, c, _, v, m = data.shape
    if out is None:
        out = np.zeros((n, c, length, v, m), dtype=np.float32)
    indices = range(n)
    if progress:
        indices = Progress(indices, desc=desc)
    for i in indices:
        try:
            out[i] = normalize_sequence(data[i], layout, length)
        except ValueError as e:
            raise ValueError(f'sample {i}: {e}') from None
    return out


def fit_frames(seq, max_frame=300, num_person=None):
    """Crop or zero-pad ``(3, T, V, M)`` to ``max_frame`` frames (and ``num_person`` persons)."""
    c, t, v, m = seq.shape
    num_person = m if num_person is None else num_person
    if m > num_person:
        raise ValueError(f'sequence has {m} persons, more than num_person={num_person}')
    out = np.zeros((c, max_frame, v, num_person), dtype=np.float32)
    t = min(t, max_frame)
    out[:, :t, :, :m] = seq[:, :t]
    return out


def body_energy(body):
    """The AimCLR/CrosSCLR body energy of one person ``(T, V, 3)``: over its non-zero frames, the sum
    over x, y, z of the std of that coordinate (over frames and joints); 0 for an absent person."""
    frames = body[np.any(body != 0, axis=(1, 2))]
    if len(frames) == 0:
        return 0.0
    return float(sum(frames[:, :, k].std() for k in range(3)))


def select_bodies(bodies, keep=2):
    """Keep the ``keep`` most energetic persons of ``bodies`` ``(B, T, V, 3)``, most energetic first
    (ties keep file order); returns ``(3, T, V, keep)``, zero-padded if ``B < keep``."""
    energy = np.array([body_energy(b) for b in bodies])
    order = np.argsort(-energy, kind='stable')[:keep]
    b, t, v, _ = bodies.shape
    out = np.zeros((3, t, v, keep), dtype=bodies.dtype)
    out[..., :len(order)] = bodies[order].transpose(3, 1, 2, 0)
    return out


def save_labels(path, names, labels):
    """Write the family's ``*_label.pkl``: a pickled tuple ``(sample_names, labels)``, labels 0-based
    (to ``path`` as given: the callers stage it with ``torchlight.io.StagedFiles``)."""
    with open(path, 'wb') as f:
        pickle.dump((list(names), [int(x) for x in labels]), f)


class SplitWriter:
    """Writes one split of a benchmark into ``folder``: ``<part>_data.npy`` (optional, float32
    ``(N, 3, max_frame, V, M)``), ``<part>_position.npy`` (float32 ``(N, 3, length, V, M)``) and
    ``<part>_label.pkl``, all side by side.

    ``capacity`` is the most samples the split can get; the arrays are filled through memory maps
    (``*.partial`` files) and shrunk to the samples actually added by :meth:`close`.  ``preprocess``
    'mica' uses MICA's preprocessing; the samples it excludes are listed in ``excluded``."""

    def __init__(self, folder, part, capacity, layout, num_person=2, max_frame=300, length=50,
                 write_data=True, preprocess='family', max_missing=0.3):
        if preprocess not in PREPROCESSINGS:
            raise ValueError(f"preprocess={preprocess!r}: use one of {', '.join(PREPROCESSINGS)}")
        os.makedirs(folder, exist_ok=True)
        self.folder, self.part, self.layout = folder, part, layout
        self.preprocess, self.max_missing, self.excluded = preprocess, max_missing, []
        self.length, self.max_frame, self.num_person = length, max_frame, num_person
        self.names, self.labels = [], []
        v = layout.num_node
        self.arrays = {}
        shapes = {'position': (capacity, 3, length, v, num_person)}
        if write_data:
            shapes['data'] = (capacity, 3, max_frame, v, num_person)
        for key, shape in shapes.items():
            partial = self._path(key) + '.partial'
            self.arrays[key] = (partial, np.lib.format.open_memmap(partial, mode='w+', dtype=np.float32,
                                                                   shape=shape))

    def _path(self, key):
        return os.path.join(self.folder, f'{self.part}_{key}.npy')

    def add(self, name, label, seq):
        """Add one sample ``(3, T, V, M')`` with ``M' <= num_person`` (float, any T >= 1); returns False
        (and records the name in ``excluded``) when MICA's preprocessing excludes it."""
        check_finite(seq, f'sample {name!r}', 'the converters write no NaN/Inf: fix or drop the sample')
        i = len(self.names)
        capacity = self.arrays['position'][1].shape[0]
        if i >= capacity:
            raise RuntimeError(f'{self.part} split in {self.folder} is full ({capacity} samples)')
        padded = fit_frames(seq, seq.shape[1], self.num_person)
        try:
            position = preprocess_sequence(padded, self.layout, self.length, self.preprocess, self.max_missing)
        except IncompleteSkeletonError:
            self.excluded.append(name)
            return False
        self.arrays['position'][1][i] = position
        if 'data' in self.arrays:
            self.arrays['data'][1][i] = fit_frames(padded, self.max_frame)
        self.names.append(name)
        self.labels.append(label)
        return True

    def abort(self):
        """Remove the partial files (after an error)."""
        for partial, mm in self.arrays.values():
            del mm
            if os.path.exists(partial):
                os.remove(partial)
        self.arrays = {}

    def close(self, staged):
        """Flush, shrink to the samples added and write the label pkl, all to the temporary paths of
        ``staged`` (``torchlight.io.StagedFiles``): the split appears only when the whole run commits."""
        n = len(self.names)
        for key, (partial, mm) in self.arrays.items():
            mm.flush()
            final = staged.path(self._path(key))
            if mm.shape[0] == n:
                del mm
                os.replace(partial, final)
                continue
            out = np.lib.format.open_memmap(final, mode='w+', dtype=np.float32, shape=(n,) + mm.shape[1:])
            for s in range(0, n, 1024):
                out[s:s + 1024] = mm[s:min(s + 1024, n)]
            out.flush()
            del out, mm
            os.remove(partial)
        self.arrays = {}
        save_labels(staged.path(os.path.join(self.folder, f'{self.part}_label.pkl')), self.names, self.labels)
        return n


def write_splits(writers, fill):
    """Run ``fill()``, which adds the samples to ``writers`` (a dict of :class:`SplitWriter`), then move
    every split into place together (``StagedFiles``); on any error remove the partial files instead.
    Reports each split's exclusions and returns ``{key: samples written}``."""
    try:
        fill()
        with StagedFiles() as staged:
            counts = {key: writer.close(staged) for key, writer in writers.items()}
    except BaseException:
        for writer in writers.values():
            writer.abort()
        raise
    for writer in writers.values():
        if writer.excluded:
            print(f'{writer.folder}: {writer.part}: {len(writer.excluded)} samples excluded '
                  f'(more than {100 * writer.max_missing:.0f}% missing joints)')
    return counts


def has_skeleton(seq, name):
    """True if ``seq`` has a non-zero joint; otherwise warn (naming the sample) and return False."""
    if valid_span(seq) is None:
        warnings.warn(f"{name}: no skeleton data (all joints zero); sample skipped", stacklevel=2)
        return False
    return True
