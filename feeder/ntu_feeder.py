"""Feeders of the SkeletonCLR/AimCLR family for ``*_position.npy`` + ``*_label.pkl`` data
(NTU-60/120, PKU-MMD, NW-UCLA, the synthetic demo: any layout).

A feeder loads and checks the data and knows which augmented views its method needs:
``Feeder_single`` (one view: linear/finetune evaluation), ``Feeder_dual`` (two normal views:
SkeletonCLR), ``Feeder_triple`` (two normal views and an extreme one: AimCLR/MsMCLR) and
``Feeder_semi`` (a class-balanced labelled fraction).

Augmentation is batched: the training loop asks for raw samples (``batch_augment=True``), moves
the batch to its device and calls ``feeder.views(batch)``.  Indexing a feeder without that flag
returns augmented views per sample as the reference code does, through the same functions.
"""
import os

import numpy as np
import torch

from feeder import tools
from net.utils.layouts import LAYOUTS, flip_problem, get_layout
from torchlight.io import UserError, read_pickle
from torchlight.readers import load_npy

DEFAULT_LAYOUT_BY_JOINTS = {layout.num_node: name for name, layout in LAYOUTS.items()}

# AimCLR's ``aug_method`` digits for the extreme view; applied in this fixed order whatever the order
# of the digits in ``aug_method`` (the reference's ``_strong_aug``).
EXTREME_AUGMENTATIONS = {
    '1': 'random_spatial_flip',
    '2': 'random_rotate',
    '3': 'gaus_noise',
    '4': 'gaus_filter',
    '5': 'axis_mask',
    '6': 'random_time_flip',
}
# MsMCLR strong set (besides shear + crop), in order; 'aimclr' uses the AimCLR digits above.
MSMCLR_STRONG = ('random_rotate', 'gaus_noise', 'gaus_filter', 'joint_mask', 'channel_mask',
                 'random_joint_noise')
# ``aug_method`` as a list of names: applied in this order, which keeps both AimCLR's and MsMCLR's
STRONG_ORDER = ('random_spatial_flip', 'random_rotate', 'gaus_noise', 'gaus_filter', 'axis_mask', 'joint_mask',
                'channel_mask', 'random_joint_noise', 'random_time_flip')
# extra augmentations of the normal views (``normal_extra_aug``, after crop and shear)
NORMAL_EXTRA = ('joint_jitter', 'random_rotate')


def resolve_layout(feeder_layout, model_layout, split='train'):
    """The one layout of a feeder and its model: the feeder's own (``<split>_feeder_args.layout``) if
    given, else the model's (``model_args.graph_args.layout``); both given and different skeletons is an
    error naming both.  Either may be a name, a layout file path, a dict or a Layout; None: unknown."""
    if feeder_layout is None:
        return model_layout
    feeder_layout = get_layout(feeder_layout)
    if model_layout is not None:
        model_layout = get_layout(model_layout)
        differ = feeder_layout.differences(model_layout)
        if differ:
            raise UserError(f"{split}_feeder_args.layout is {feeder_layout.describe()} but the model's "
                            f"model_args.graph_args.layout is {model_layout.describe()}; they differ in "
                            f"{', '.join(differ)}: feeder and model must use one layout; drop the feeder's "
                            "layout (it takes the model's) or make them the same")
    return feeder_layout


def load_labels(label_path, num_samples=None, data_path=None):
    """Read a ``(sample_names, labels)`` pickle and check it against the data."""
    content = read_pickle(label_path, 'label', 'the gendata tools in tools/ write it next to the '
                          '*_position.npy file; see docs/DATA.md')
    if not (isinstance(content, (tuple, list)) and len(content) == 2):
        raise UserError(f"label file '{label_path}' must hold a tuple (sample_names, labels)")
    try:
        names, labels = list(content[0]), np.asarray(content[1])
    except (TypeError, ValueError) as e:
        raise UserError(f"label file '{label_path}': (sample_names, labels) must be two lists ({e})") from e
    if labels.ndim != 1:
        raise UserError(f"label file '{label_path}': labels must be a flat list of class ids, got shape "
                        f"{labels.shape} (e.g. {content[1][0]!r} for the first sample)")
    if len(names) != len(labels):
        raise UserError(f"label file '{label_path}' has {len(names)} names but {len(labels)} labels")
    bad = next((n for n in names if not isinstance(n, (str, int, np.integer))), None)
    if bad is not None:
        raise UserError(f"label file '{label_path}': sample names must be strings, got {bad!r}")
    seen = {}
    for i, name in enumerate(names):
        if name in seen:
            raise UserError(f"label file '{label_path}': sample name {name!r} appears twice (samples {seen[name]} "
                            f"and {i}); names must be unique (test_result.pkl is keyed by them)")
        seen[name] = i
    if labels.size and not np.issubdtype(labels.dtype, np.integer):
        raise UserError(f"label file '{label_path}': labels must be integers, got dtype {labels.dtype}")
    if labels.size and labels.min() < 0:
        raise UserError(f"label file '{label_path}': negative label {int(labels.min())} "
                        f"(sample '{names[int(labels.argmin())]}'); labels are 0-based class ids")
    if num_samples is not None and len(labels) != num_samples:
        raise UserError(f"label file '{label_path}' has {len(labels)} labels but data file "
                        f"'{data_path}' has {num_samples} samples")
    return names, labels.astype(np.int64)


def load_data(data_path, mmap=True, check_finite=True, stats=None):
    """Memory-map a (N, C, T, V, M) float array and check its rank, dtype and values. With
    ``check_finite``, a data set whose samples are all zero is an error, and the indices of the
    all-zero samples go to ``stats['empty']`` (when a dict is given)."""
    if not os.path.exists(data_path):
        raise UserError(f"data file '{data_path}' does not exist (create it with the gendata tools in "
                        "tools/, e.g. tools/gen_synthetic.py or tools/ucla_gendata.py; see docs/DATA.md)")
    data = load_npy(data_path, 'data file', dims='N, C, T, V, M', kinds='f', mmap=mmap)
    if check_finite and len(data):
        chunk = max(1, (64 << 20) // max(1, data[0].nbytes))
        empty = []
        for start in range(0, len(data), chunk):
            block = np.asarray(data[start:start + chunk])
            if not np.isfinite(block).all():
                bad = start + int(np.argwhere(~np.isfinite(block).reshape(len(block), -1).all(1))[0, 0])
                raise UserError(f"data file '{data_path}' holds NaN/Inf values (first in sample {bad}); "
                                "regenerate it or clean the source skeletons")
            empty.extend((start + np.flatnonzero(~block.reshape(len(block), -1).any(1))).tolist())
        if len(empty) == len(data):
            raise UserError(f"data file '{data_path}': all {len(data)} samples are all zero (no skeleton); "
                            "regenerate it with the gendata tools in tools/")
        if stats is not None:
            stats['empty'] = empty
    return data


def listed_names(list_path):
    """The sample names of a ``sample_list`` file: one a line, ``#`` starts a comment, blank lines skipped."""
    from torchlight.readers import read_lines
    wanted = [line.split('#')[0].strip() for line in read_lines(list_path, 'sample_list')]
    return [w for w in wanted if w]


def select_samples(names, list_path):
    """Sorted indices into ``names`` of the sample names listed in ``list_path`` (``listed_names``); an unknown
    or repeated name is an error naming the file."""
    wanted = listed_names(list_path)
    position = {str(n): i for i, n in enumerate(names)}
    missing = [w for w in wanted if w not in position]
    if missing:
        raise UserError(f"sample_list '{list_path}': {len(missing)} name(s) are not in the label file, first "
                        f"{missing[0]!r}")
    if len(set(wanted)) != len(wanted) or not wanted:
        raise UserError(f"sample_list '{list_path}': {'repeats a name' if wanted else 'lists no sample'}")
    return np.sort(np.array([position[w] for w in wanted], dtype=np.int64))


class Feeder(torch.utils.data.Dataset):
    """Base feeder: data, labels, checks, and the view recipe.

    Args:
        data_path: ``*_position.npy`` (N, C, T, V, M) float32.
        label_path: pickled ``(sample_names, labels)``.
        shear_amplitude: r of ``shear``; <= 0 disables it.
        temperal_padding_ratio: crop padding T // ratio; <= 0 disables the crop.
        mmap: memory-map the data file.
        layout: skeleton layout name (default: from the number of joints) for the spatial flip.
        num_class: if given, labels >= num_class are an error.
        check_finite: scan the data for NaN/Inf once at load.
        normal_extra_aug: augmentations added to every normal view after crop and shear, in this order:
            ``joint_jitter`` (N(0, ``jitter_std``^2) on every coordinate) and ``random_rotate`` (AimCLR's
            rotation); MICA section 5.2's "temporal cropping, joint jittering, and random rotation".
            Default none (the family's shear + crop).
        sample_list: a text file of sample names, one a line: only these samples are used (a training
            subset, e.g. config/ucla/subsets/); every name must be in the label file.
    """
    view_kinds = ('normal',)

    def __init__(self, data_path, label_path, shear_amplitude=0.5, temperal_padding_ratio=6,
                 mmap=True, layout=None, num_class=None, check_finite=True, debug=False,
                 normal_extra_aug=(), jitter_std=0.01, batch_augment=False, stream='joint', sample_list=None,
                 **unused):
        self.data_path = data_path
        self.label_path = label_path
        self.shear_amplitude = shear_amplitude
        self.temperal_padding_ratio = temperal_padding_ratio
        extra = [normal_extra_aug] if isinstance(normal_extra_aug, str) else list(normal_extra_aug or ())
        unknown = [n for n in extra if n not in NORMAL_EXTRA]
        if unknown:
            raise UserError(f"train_feeder_args.normal_extra_aug: unknown augmentation(s) {unknown}; use "
                            f"{' and/or '.join(NORMAL_EXTRA)}")
        if not float(jitter_std) >= 0:
            raise UserError(f'train_feeder_args.jitter_std={jitter_std!r} must be a number >= 0')
        self.normal_extra_aug = [n for n in NORMAL_EXTRA if n in extra]
        self.jitter_std = float(jitter_std)
        stats = {}
        self.data = load_data(data_path, mmap=mmap, check_finite=check_finite, stats=stats)
        self.empty_samples = stats.get('empty', [])        # all-zero samples (reported, kept)
        self.sample_name, self.label = load_labels(label_path, len(self.data), data_path)
        if num_class is not None and self.label.size and self.label.max() >= num_class:
            raise UserError(f"label file '{label_path}' has label {int(self.label.max())} but the model has "
                            f"num_class={num_class}; labels must be in 0..{num_class - 1}")
        V = self.data.shape[3]
        if layout is None:
            layout = DEFAULT_LAYOUT_BY_JOINTS.get(V)
        self.layout = get_layout(layout) if layout is not None else None
        if self.layout is not None and self.layout.num_node != V:
            raise UserError(f"data file '{data_path}' has V={V} joints but layout '{self.layout.name}' "
                            f"has V={self.layout.num_node}: feeder and model use one layout "
                            "(train_feeder_args.layout, else model_args.graph_args.layout); set it to the data's")
        self.index = np.arange(len(self.label)) if sample_list is None else \
            select_samples(self.sample_name, sample_list)
        self.batch_augment = batch_augment      # True: items are raw (data, label, index), views() augments
        if stream not in tools.STREAMS:
            raise UserError(f"stream/view '{stream}' is unknown; use one of {', '.join(tools.STREAMS)}")
        self.stream = stream                    # the views' stream (processor.build.stream_views)
        self.stream_parents = self.parents if stream in tools.PARENT_STREAMS else None
        if debug:
            self.index = self.index[:100]

    def __len__(self):
        return len(self.index)

    @property
    def parents(self):
        if self.layout is None:
            raise UserError(f"data '{self.data_path}' has no known layout: set train_feeder_args.layout")
        return self.layout.parents

    def __getitem__(self, i):
        index = int(self.index[i])
        data = torch.from_numpy(np.array(self.data[index], dtype=np.float32))
        label = int(self.label[index])
        if self.batch_augment:
            return data, label, index
        views = [v[0] for v in self.views(data[None])]
        return (views[0] if len(views) == 1 else views), label

    # -- augmentation ---------------------------------------------------------------------------
    def normal_aug(self, x):
        """Crop then shear (SkeletonCLR ``_aug``)."""
        if self.temperal_padding_ratio > 0:
            x = tools.temperal_crop(x, self.temperal_padding_ratio)
        if self.shear_amplitude > 0:
            x = tools.shear(x, self.shear_amplitude)
        for name in self.normal_extra_aug:
            x = tools.gaus_noise(x, std=self.jitter_std, p=1.0) if name == 'joint_jitter' else tools.random_rotate(x)
        return x

    def strong_aug(self, x):
        return self.normal_aug(x)

    def check_layout(self):
        """Every configured augmentation must find what it needs in the layout: a one-line error (here:
        nothing to check)."""

    def views(self, batch):
        """The augmented views of a raw batch (N, C, T, V, M), one tensor per ``view_kinds`` entry."""
        batch = batch.float()
        return [self.strong_aug(batch) if kind == 'strong' else self.normal_aug(batch)
                for kind in self.view_kinds]


class Feeder_single(Feeder):
    """One view (evaluation protocols); set shear_amplitude / temperal_padding_ratio to -1 for none."""
    view_kinds = ('normal',)


class Feeder_dual(Feeder):
    """Two normal views (SkeletonCLR)."""
    view_kinds = ('normal', 'normal')


class Feeder_triple(Feeder):
    """Two normal views and one extreme view (AimCLR; MsMCLR's strong branch).

    ``aug_method``: AimCLR digits '123456' (spatial flip, rotate, Gaussian noise, Gaussian blur,
    axis mask, time flip; always applied in that order, as in the reference), or one of 'none' |
    'aimclr' (= '12345') | 'msmclr' (MsMCLR Table 6).
    MsMCLR's random-joint noise (``aug_method: msmclr``): ``joint_noise_joints`` (5) joints,
    uniform noise in +-``joint_noise_scale`` (0.5) x the coordinate range of the sample taken from
    ``joint_noise_range``: 'original' (the raw sample, before any augmentation; empty person slots
    are not noised: section 3.3's reading) or 'view' (the augmented view, every slot noised: the
    earlier behaviour, with scale 0.1).
    """
    view_kinds = ('normal', 'normal', 'strong')

    def __init__(self, *args, aug_method='12345', joint_noise_joints=5, joint_noise_scale=0.5,
                 joint_noise_range='original', **kwargs):
        super().__init__(*args, **kwargs)
        self.aug_method = aug_method if isinstance(aug_method, (list, tuple)) else str(aug_method)
        self.strong_ops = self.parse_aug_method(self.aug_method)
        if joint_noise_range not in ('original', 'view'):
            raise UserError(f"train_feeder_args.joint_noise_range={joint_noise_range!r}: use 'original' or 'view'")
        if float(joint_noise_scale) < 0:
            raise UserError(f'train_feeder_args.joint_noise_scale={joint_noise_scale} must be >= 0')
        V = self.data.shape[3]
        if not 0 <= int(joint_noise_joints) <= V:
            raise UserError(f'train_feeder_args.joint_noise_joints={joint_noise_joints} must be in 0..{V}')
        self.joint_noise_joints, self.joint_noise_scale = int(joint_noise_joints), float(joint_noise_scale)
        self.joint_noise_range = joint_noise_range

    @staticmethod
    def parse_aug_method(aug_method):
        """The strong view's operations: AimCLR digits, 'none' | 'aimclr' | 'msmclr', or a list of names
        (``STRONG_ORDER``: e.g. ``[random_spatial_flip, random_rotate, gaus_noise, gaus_filter, axis_mask]``
        is AimCLR's '12345')."""
        if isinstance(aug_method, (list, tuple)):
            unknown = [n for n in aug_method if n not in STRONG_ORDER]
            if unknown:
                raise UserError(f"train_feeder_args.aug_method: unknown augmentation(s) {unknown}; names are "
                                f"{', '.join(STRONG_ORDER)}")
            return [n for n in STRONG_ORDER if n in aug_method]
        if aug_method == 'none':
            return []
        if aug_method == 'aimclr':             # MsMCLR Table 6: AimCLR's own set (its configs' '12345')
            aug_method = '12345'
        if aug_method == 'msmclr':
            return list(MSMCLR_STRONG)
        unknown = [d for d in aug_method if d not in EXTREME_AUGMENTATIONS]
        if unknown:
            raise UserError(f"train_feeder_args.aug_method={aug_method!r}: unknown code(s) {unknown}; use "
                            "digits 1-6 (flip, rotate, noise, blur, axis mask, time flip), or "
                            "none | aimclr | msmclr")
        return [EXTREME_AUGMENTATIONS[d] for d in sorted(set(aug_method))]

    def check_layout(self):
        """The spatial flip needs the layout's ``flip``: a one-line error naming the augmentation to drop."""
        missing = tools.missing_layout_fields(self.strong_ops, self.layout)
        if not missing:
            return
        op, key = missing[0]
        layout, aug = self.layout, self.aug_method
        if isinstance(aug, (list, tuple)):
            rest = [name for name in aug if name != op]
            drop = f"aug_method without {op} ([{', '.join(rest)}])"
            aug = f"[{', '.join(aug)}]"
        else:
            drop = ({'random_spatial_flip': "aug_method '2345' (the AimCLR set without 1, the flip)"
                     if aug in ('12345', 'aimclr') else f"aug_method without the digit 1 (e.g. "
                     f"'{''.join(d for d in aug if d != '1') or 'none'}')"}.get(op, 'the augmentation'))
        state = (f"layout '{layout.name}': {flip_problem(layout)}" if layout is not None
                 else 'no layout is known for the data')
        raise UserError(f"train_feeder_args.aug_method={aug!r} includes {op}, which needs the layout's `{key}` "
                        f"(left/right mirror permutation), but {state}: add `{key}` (or joint_names with left/right "
                        f"in them) to the layout, or drop the augmentation: {drop}")

    def joint_noise(self, x, raw):
        """MsMCLR's random-joint noise on the view x, scaled by the range of the raw sample (or of x)."""
        if self.joint_noise_range == 'view':
            persons = torch.ones(x.size(0), x.size(4), dtype=torch.bool, device=x.device)
            return tools.random_joint_noise(x, self.joint_noise_joints, self.joint_noise_scale, persons=persons)
        return tools.random_joint_noise(x, self.joint_noise_joints, self.joint_noise_scale,
                                        coord_range=tools.coordinate_range(raw), persons=tools.present_persons(raw))

    def strong_aug(self, x):
        raw = x
        x = self.normal_aug(x)
        for name in self.strong_ops:
            if name == 'random_spatial_flip':
                x = tools.random_spatial_flip(x, self.layout.flip if self.layout else None)
            elif name == 'random_joint_noise':
                x = self.joint_noise(x, raw)
            else:
                x = getattr(tools, name)(x)
        return x


class Feeder_supervised(Feeder):
    """One view for supervised training and testing, with the CTR-GCN family's options:
    ``window_size`` (valid-frame crop resized to this many frames; <= 0: keep the data as is),
    ``p_interval`` (crop ratio range in training, e.g. [0.5, 1]; one value = centred crop, e.g. [0.95]
    for testing), ``random_rot`` (rotation by U(-rot_theta, rot_theta) about each axis).
    Shear and crop of the contrastive recipes are off by default.

    ``sampling``: 'crop_resize' (default: the valid-frame crop resized to ``window_size``, CTR-GCN's NTU
    feeder) or 'ucla' (CTR-GCN's NW-UCLA feeder, ``ucla_sample``: centre, random view and scale in
    training, min-max to [-1, 1], ``window_size`` frames drawn at random (training, ``ucla_train``) or
    evenly spaced; needs native-length data, ``tools/ucla_gendata.py --preprocess ctrgcn``).
    ``repeat``: each sample appears this many times per epoch (CTR-GCN's NW-UCLA ``repeat: 5``)."""
    view_kinds = ('normal',)
    SAMPLINGS = ('crop_resize', 'ucla')

    def __init__(self, *args, window_size=64, p_interval=(0.5, 1.0), random_rot=False, rot_theta=0.3,
                 shear_amplitude=-1, temperal_padding_ratio=-1, sampling='crop_resize', ucla_train=True,
                 random_view=True, repeat=1, **kwargs):
        super().__init__(*args, shear_amplitude=shear_amplitude, temperal_padding_ratio=temperal_padding_ratio,
                         **kwargs)
        p_interval = [float(p) for p in (p_interval if isinstance(p_interval, (list, tuple)) else [p_interval])]
        if not 1 <= len(p_interval) <= 2 or not all(0 < p <= 1 for p in p_interval):
            raise UserError(f'feeder_args.p_interval={p_interval}: give one or two ratios in (0, 1]')
        if sampling not in self.SAMPLINGS:
            raise UserError(f"feeder_args.sampling={sampling!r}: use one of {', '.join(self.SAMPLINGS)}")
        if isinstance(repeat, bool) or not isinstance(repeat, int) or repeat < 1:
            raise UserError(f'feeder_args.repeat={repeat!r}: must be an integer >= 1')
        if sampling == 'ucla' and int(window_size) < 1:
            raise UserError(f"feeder_args.window_size={window_size!r}: sampling 'ucla' needs a window >= 1")
        self.window_size, self.p_interval = int(window_size), p_interval
        self.random_rot, self.rot_theta = bool(random_rot), float(rot_theta)
        self.sampling, self.ucla_train, self.random_view = sampling, bool(ucla_train), bool(random_view)
        self.repeat = repeat
        self.index = np.tile(self.index, repeat)

    def normal_aug(self, x):
        if self.sampling == 'ucla':
            x = ucla_sample(x, self.window_size, train=self.ucla_train, random_view=self.random_view)
        elif self.window_size > 0:
            x = tools.valid_crop_resize(x, self.p_interval, self.window_size, min_length=min(64, self.window_size))
        if self.random_rot:
            x = tools.random_rot(x, self.rot_theta)
        return super().normal_aug(x)


def ucla_view_matrix(angle_x, angle_y, scale):
    """(N, 3, 3) maps of CTR-GCN's NW-UCLA ``rand_view_transform`` (angles in degrees): the row vector of
    every joint times Ry(angle_y) Rx(angle_x) S(scale), given in ``tools.apply_channel_matrix``'s form."""
    ax, ay = torch.deg2rad(angle_x), torch.deg2rad(angle_y)
    one, zero = torch.ones_like(ax), torch.zeros_like(ax)
    rx = torch.stack([one, zero, zero, zero, ax.cos(), ax.sin(), zero, -ax.sin(), ax.cos()], 1).view(-1, 3, 3)
    ry = torch.stack([ay.cos(), zero, -ay.sin(), zero, one, zero, ay.sin(), zero, ay.cos()], 1).view(-1, 3, 3)
    row_map = ry @ rx * scale.view(-1, 1, 1)
    return row_map.transpose(1, 2)


def ucla_frame_indices(lengths, window, train=True):
    """(N, window) frame indices of CTR-GCN's NW-UCLA feeder for clips of ``lengths`` frames.

    Training: ``window`` draws without replacement from 100 copies of each frame index, sorted (the
    reference's ``random.sample(list(range(L)) * 100, window)``); testing: ``linspace(0, L - 1, window)``
    rounded down."""
    lengths = lengths.long().clamp_min(1)
    if not train:
        steps = torch.linspace(0, 1, window, device=lengths.device, dtype=torch.float64)
        return (steps.view(1, -1) * (lengths.view(-1, 1) - 1)).floor().long()
    copies = 100
    pool = copies * int(lengths.max())
    score = torch.rand(lengths.numel(), pool, device=lengths.device)
    item = torch.arange(pool, device=lengths.device).view(1, -1)
    score = score.masked_fill(item >= copies * lengths.view(-1, 1), float('inf'))
    picked = score.topk(window, dim=1, largest=False).indices
    return (picked % lengths.view(-1, 1)).sort(dim=1).values


def ucla_sample(x, window=52, train=True, random_view=True, angles=None, scales=None, frames=None):
    """CTR-GCN's NW-UCLA sampling (``feeders/feeder_ucla.py``) of a batch of zero-padded native-length clips
    (N, C, T, V, M): subtract joint 2 (0-based 1) of the first frame, in training (``random_view``) rotate
    by integer angles U{-60..60} degrees about x and y and scale by U(0.5, 1.5), min-max each coordinate
    over the clip to [-1, 1], then take ``window`` frames (``ucla_frame_indices``).  ``angles`` (N, 2)
    degrees, ``scales`` (N,) and ``frames`` (N, window) fix the random draws."""
    N, C, T, V, M = x.shape
    present = (x != 0).flatten(3).any(dim=1).any(dim=2)                          # (N, T)
    ramp = torch.arange(1, T + 1, device=x.device)
    lengths = (present * ramp).amax(dim=1).clamp_min(1)                           # last non-empty frame + 1
    inside = (ramp.view(1, -1) <= lengths.view(-1, 1)).view(N, 1, T, 1, 1)
    x = (x - x[:, :, :1, 1:2, :1]) * inside
    if train and (random_view or angles is not None or scales is not None):
        if angles is None:
            angles = torch.randint(-60, 61, (N, 2), device=x.device).to(x.dtype)
        if scales is None:
            scales = torch.rand(N, device=x.device, dtype=x.dtype) + 0.5
        x = tools.apply_channel_matrix(x, ucla_view_matrix(angles[:, 0].to(x), angles[:, 1].to(x), scales.to(x)))
    big = torch.finfo(x.dtype).max
    low = torch.where(inside, x, x.new_tensor(big)).amin(dim=(2, 3, 4), keepdim=True)
    high = torch.where(inside, x, x.new_tensor(-big)).amax(dim=(2, 3, 4), keepdim=True)
    x = (x - low) / (high - low).clamp_min(1e-12) * 2 - 1
    if frames is None:
        frames = ucla_frame_indices(lengths, window, train)
    index = frames.to(x.device).view(N, 1, window, 1, 1).expand(N, C, window, V, M)
    return torch.gather(x, 2, index)


class Feeder_semi(Feeder_single):
    """A class-balanced, seeded fraction ``label_percent`` of the labelled samples."""

    def __init__(self, *args, label_percent=0.1, semi_seed=0, **kwargs):
        super().__init__(*args, **kwargs)
        if not 0 < float(label_percent) <= 1:
            raise UserError(f'train_feeder_args.label_percent={label_percent} must be in (0, 1]')
        self.label_percent = float(label_percent)
        self.semi_seed = semi_seed
        rng = np.random.RandomState(semi_seed)
        chosen = []
        for c in np.unique(self.label):
            members = np.flatnonzero(self.label == c)
            count = max(1, int(round(self.label_percent * len(members))))
            chosen.append(rng.choice(members, count, replace=False))
        self.index = np.sort(np.concatenate(chosen)) if chosen else self.index[:0]
