"""Skeleton augmentations and streams, written once as batched torch ops.

Every function takes a batch ``x`` of shape (N, C, T, V, M) on any device and draws its random
parameters per sample from torch's generator on that device, so the same code serves the CPU
DataLoader path and whole batches on the GPU.  Names and parameters follow the SkeletonCLR/AimCLR
``feeder/tools.py`` (``shear``, ``temperal_crop`` [sic], ``random_spatial_flip``, ``random_rotate``,
``gaus_noise``, ``gaus_filter``, ``axis_mask``, ``random_time_flip``) and the MsMCLR strong set
(``joint_mask``, ``channel_mask``, ``random_joint_noise``).  Functions that take optional explicit
parameters (e.g. ``shear(x, matrix=...)``) apply them exactly, for tests.
"""
import functools
import math

import torch
import torch.nn.functional as F


def _uniform(shape, low, high, like):
    return torch.rand(shape, device=like.device, dtype=like.dtype) * (high - low) + low


def _bernoulli(n, p, like):
    """(n,) boolean mask, True with probability p."""
    return torch.rand(n, device=like.device) < p


@functools.lru_cache(maxsize=32)
def _joint_index(index, device):
    """A layout's joint permutation as a long tensor on ``device``, made once (no host-to-device copy
    per batch, which a CUDA graph could not capture)."""
    return torch.tensor(index, dtype=torch.long, device=device)


def _per_sample(mask, x):
    return mask.view(-1, *([1] * (x.dim() - 1)))


def apply_channel_matrix(x, matrix):
    """y[n, d] = sum_c matrix[n, d, c] * x[n, c]: a per-sample linear map of the coordinates."""
    return torch.einsum('ndc,nctvm->ndtvm', matrix, x)


def shear(x, r=0.5, matrix=None):
    """Shear (SkeletonCLR): coordinates times [[1, s1a, s2a], [s1b, 1, s2b], [s1c, s2c, 1]]^T with
    every s ~ U(-r, r) per sample.  ``matrix`` (N, 3, 3) applies a given map instead."""
    if matrix is None:
        n = x.size(0)
        s1 = _uniform((n, 3), -r, r, x)
        s2 = _uniform((n, 3), -r, r, x)
        one = torch.ones(n, device=x.device, dtype=x.dtype)
        # rows as in the reference R; the reference multiplies x by R^T, i.e. applies R.
        matrix = torch.stack([
            torch.stack([one, s1[:, 0], s2[:, 0]], dim=1),
            torch.stack([s1[:, 1], one, s2[:, 1]], dim=1),
            torch.stack([s1[:, 2], s2[:, 2], one], dim=1),
        ], dim=1)
    return apply_channel_matrix(x, matrix)


def temporal_window(x, start, length):
    """Frames start[n] .. start[n] + length - 1 of every sample (per-sample gather along T)."""
    N, C, T, V, M = x.shape
    index = (start.view(N, 1) + torch.arange(length, device=x.device).view(1, length))
    index = index.view(N, 1, length, 1, 1).expand(N, C, length, V, M)
    return torch.gather(x, 2, index)


def temperal_crop(x, temperal_padding_ratio=6, start=None):
    """Temporal crop (SkeletonCLR): pad T // ratio mirrored frames (edge included) at both ends and
    take a random window of the original length.  ``start`` (N,) in [0, 2 * pad] fixes the window."""
    N, C, T, V, M = x.shape
    pad = T // temperal_padding_ratio
    if pad == 0:
        return x
    padded = torch.cat([x[:, :, :pad].flip(2), x, x[:, :, -pad:].flip(2)], dim=2)
    if start is None:
        start = torch.randint(0, 2 * pad + 1, (N,), device=x.device)
    return temporal_window(padded, start, T)


# What an augmentation needs from the skeleton layout (``net/utils/layouts.py``): checked before training
# (``missing_layout_fields``) so that a missing field is a one-line error at start, not a traceback later.
LAYOUT_NEEDS = {'random_spatial_flip': ('flip',)}


def missing_layout_fields(ops, layout):
    """``[(op, field), ...]`` for the augmentations in ``ops`` whose layout field is absent (None layout:
    every needed field is absent)."""
    return [(op, key) for op in ops for key in LAYOUT_NEEDS.get(op, ())
            if layout is None or getattr(layout, key, None) is None]


def random_spatial_flip(x, flip_index, p=0.5, mask=None):
    """Swap left and right joints (AimCLR) with probability p per sample; ``flip_index`` is the
    layout's mirror permutation."""
    if flip_index is None:
        raise ValueError('random_spatial_flip needs the layout to define a left/right flip permutation')
    mask = _bernoulli(x.size(0), p, x) if mask is None else mask
    flipped = x.index_select(3, _joint_index(tuple(flip_index), x.device))
    return torch.where(_per_sample(mask, x), flipped, x)


def random_time_flip(x, p=0.5, mask=None):
    """Play the sequence backwards (AimCLR) with probability p per sample."""
    mask = _bernoulli(x.size(0), p, x) if mask is None else mask
    return torch.where(_per_sample(mask, x), x.flip(2), x)


def rotation_matrix(axis, angle):
    """(N, 3, 3) rotation about axis 0/1/2 (x/y/z) by ``angle`` (N,) radians, in the convention of
    the AimCLR ``random_rotate`` (coordinates times R^T)."""
    c, s = torch.cos(angle), torch.sin(angle)
    one, zero = torch.ones_like(angle), torch.zeros_like(angle)
    if axis == 0:
        rows = [[one, zero, zero], [zero, c, s], [zero, -s, c]]
    elif axis == 1:
        rows = [[c, zero, -s], [zero, one, zero], [s, zero, c]]
    else:
        rows = [[c, s, zero], [-s, c, zero], [zero, zero, one]]
    return torch.stack([torch.stack(r, dim=1) for r in rows], dim=1)


def random_rotate(x, main_angle=30.0, minor_angle=1.0, main_axis=None, angles=None):
    """Rotate (AimCLR): about x, then y, then z; the randomly chosen main axis by U(0, 30) degrees,
    the other two by U(0, 1) degrees.  ``angles`` (N, 3) in degrees fixes the angles."""
    N = x.size(0)
    if angles is None:
        if main_axis is None:
            main_axis = torch.randint(0, 3, (N,), device=x.device)
        main = _uniform((N,), 0.0, main_angle, x)
        minor = _uniform((N, 3), 0.0, minor_angle, x)
        is_main = main_axis.view(N, 1) == torch.arange(3, device=x.device)     # one-hot, no range check (sync)
        angles = torch.where(is_main, main.view(N, 1).expand(N, 3), minor)
    radians = angles * (math.pi / 180.0)
    matrix = torch.eye(3, device=x.device, dtype=x.dtype).expand(N, 3, 3)
    for axis in range(3):
        matrix = rotation_matrix(axis, radians[:, axis]) @ matrix
    return apply_channel_matrix(x, matrix)


def gaus_noise(x, mean=0.0, std=0.01, p=0.5, mask=None):
    """Add N(mean, std^2) noise to every coordinate with probability p per sample (AimCLR)."""
    mask = _bernoulli(x.size(0), p, x) if mask is None else mask
    noise = torch.randn_like(x) * std + mean
    return torch.where(_per_sample(mask, x), x + noise, x)


def gaussian_kernel(sigma, kernel=15, normalize=False):
    """(N, kernel) temporal Gaussian weights exp(-i^2 / 2 sigma^2), i = -r..r.

    The AimCLR ``GaussianBlurConv`` does not normalise the kernel (its gain is about
    sigma * sqrt(2 pi) for sigma > 0.5); ``normalize=True`` makes it sum to one."""
    radius = kernel // 2
    index = torch.arange(-radius, radius + 1, device=sigma.device, dtype=sigma.dtype)
    weights = torch.exp(-index.pow(2).view(1, -1) / (2.0 * sigma.view(-1, 1).pow(2)))
    if normalize:
        weights = weights / weights.sum(dim=1, keepdim=True)
    return weights


def gaus_filter(x, kernel=15, sigma=(0.1, 2.0), p=0.5, normalize=False, sigmas=None, mask=None):
    """Gaussian blur along time (AimCLR ``gaus_filter``): with probability p per sample, convolve every
    joint trajectory with a Gaussian of sigma ~ U(sigma) (zero padding keeps the length)."""
    N, C, T, V, M = x.shape
    mask = _bernoulli(N, p, x) if mask is None else mask
    if sigmas is None:
        sigmas = _uniform((N,), sigma[0], sigma[1], x)
    weights = gaussian_kernel(sigmas, kernel, normalize)                # (N, k)
    # one grouped conv over all samples: channels = N * C * V * M, each with its sample's kernel
    signal = x.permute(0, 1, 3, 4, 2).reshape(1, N * C * V * M, T)
    w = weights.view(N, 1, 1, kernel).expand(N, C * V * M, 1, kernel).reshape(N * C * V * M, 1, kernel)
    blurred = F.conv1d(signal, w, padding=kernel // 2, groups=N * C * V * M)
    blurred = blurred.view(N, C, V, M, T).permute(0, 1, 4, 2, 3)
    return torch.where(_per_sample(mask, x), blurred, x)


def channel_mask(x, p=0.5, mask=None, channel=None):
    """Zero one random coordinate channel (x, y or z) of a sample with probability p
    (AimCLR's ``axis_mask``; the 'Channel Mask' of MsMCLR's strong set)."""
    N, C = x.shape[:2]
    mask = _bernoulli(N, p, x) if mask is None else mask
    if channel is None:
        channel = torch.randint(0, C, (N,), device=x.device)
    keep = (channel.view(N, 1) != torch.arange(C, device=x.device)) | ~mask.view(N, 1)
    return x * keep.to(x.dtype).view(N, C, 1, 1, 1)


axis_mask = channel_mask  # the AimCLR name


def random_joint_subset(N, V, count, device):
    """(N, V) boolean mask with exactly ``count`` random joints set per sample."""
    scores = torch.rand(N, V, device=device)
    chosen = scores.topk(count, dim=1).indices
    return torch.zeros(N, V, dtype=torch.bool, device=device).scatter_(1, chosen, True)


def joint_mask(x, num_joints=5, p=0.5, mask=None, joints=None):
    """Zero ``num_joints`` random joints (all frames, all persons) with probability p per sample."""
    N, C, T, V, M = x.shape
    mask = _bernoulli(N, p, x) if mask is None else mask
    if joints is None:
        joints = random_joint_subset(N, V, num_joints, x.device)
    drop = (joints & mask.view(N, 1)).view(N, 1, 1, V, 1)
    return x.masked_fill(drop, 0.0)


def coordinate_range(x):
    """(N,) max - min over all coordinates of each sample of x (N, C, T, V, M)."""
    flat = x.reshape(x.size(0), -1)
    return flat.max(dim=1).values - flat.min(dim=1).values


def present_persons(x):
    """(N, M) boolean: True where a person slot of a sample holds any non-zero coordinate."""
    return x.ne(0).any(dim=3).any(dim=2).any(dim=1)


def random_joint_noise(x, num_joints=5, scale=0.5, joints=None, coord_range=None, persons=None):
    """MsMCLR's random-joint noise (section 3.3, after Yoon et al.): "randomly selected joints are fixed
    to 5 nodes. The noise is determined based on the range between the minimum and maximum values of
    the coordinates of the original skeleton sample".  Uniform noise in +-scale * R on ``num_joints``
    random joints (all frames, every coordinate), R = ``coord_range`` (N,) (give the original sample's,
    ``coordinate_range(raw)``; default: the range of x); scale 0.5 makes the noise interval as wide as
    [min, max].  Only the person slots in ``persons`` (N, M) are noised (default: the non-empty slots
    of x), so an empty second-person slot stays zero."""
    N, C, T, V, M = x.shape
    if joints is None:
        joints = random_joint_subset(N, V, num_joints, x.device)
    if coord_range is None:
        coord_range = coordinate_range(x)
    if persons is None:
        persons = present_persons(x)
    noise = (torch.rand_like(x) * 2 - 1) * scale * coord_range.to(x.dtype).view(N, 1, 1, 1, 1)
    where = joints.view(N, 1, 1, V, 1) & persons.view(N, 1, 1, 1, M)
    return x + noise * where.to(x.dtype)


# ---------------------------------------------------------------------------------------------
# Supervised-training options of the CTR-GCN family (random_rot, valid_crop_resize), batched.

def random_rot(x, theta=0.3, angles=None):
    """CTR-GCN's ``random_rot``: rotate about x, y and z by angles ~ U(-theta, theta) radians per sample.
    ``angles`` (N, 3) in radians fixes them."""
    N = x.size(0)
    if angles is None:
        angles = _uniform((N, 3), -theta, theta, x)
    matrix = torch.eye(3, device=x.device, dtype=x.dtype).expand(N, 3, 3)
    for axis in range(3):
        matrix = rotation_matrix(axis, angles[:, axis]) @ matrix
    return apply_channel_matrix(x, matrix)


def valid_lengths(x):
    """Number of non-empty frames per sample (frames whose coordinates are not all zero), at least 1."""
    return (x != 0).flatten(3).any(dim=3).any(dim=1).sum(dim=1).clamp_min(1)


def valid_crop_resize(x, p_interval=(0.5, 1.0), window=64, min_length=64, ratio=None):
    """CTR-GCN's ``valid_crop_resize`` for a batch: crop each sample's valid frames (training: a random
    ratio p ~ U(p_interval) of them, at least ``min_length``, at a random offset; one value in
    ``p_interval``: the centred fraction p) and resize the crop to ``window`` frames by linear
    interpolation (``F.interpolate(..., align_corners=False)``).  ``ratio`` (N,) fixes p."""
    N, C, T, V, M = x.shape
    valid = valid_lengths(x).to(x.dtype)
    if len(p_interval) == 1:
        p = torch.full((N,), float(p_interval[0]), device=x.device, dtype=x.dtype)
        bias = ((1 - p) * valid / 2).floor()
        length = (valid - 2 * bias).clamp_min(1)
    else:
        p = _uniform((N,), p_interval[0], p_interval[1], x) if ratio is None else ratio.to(x)
        length = torch.minimum(torch.clamp((valid * p).floor(), min=min_length), valid)
        bias = (torch.rand(N, device=x.device, dtype=x.dtype) * (valid - length + 1)).floor()
    # source position of every output frame (align_corners=False), inside [bias, bias + length - 1]
    out = torch.arange(window, device=x.device, dtype=x.dtype)
    src = ((out.view(1, -1) + 0.5) * (length.view(-1, 1) / window) - 0.5).clamp_min(0)
    src = torch.minimum(src, length.view(-1, 1) - 1) + bias.view(-1, 1)
    low = src.floor().long().clamp(0, T - 1)
    high = (low + 1).clamp(max=T - 1)
    high = torch.minimum(high, (bias + length - 1).long().view(-1, 1))
    w = (src - low.to(x.dtype)).view(N, 1, window, 1, 1)
    gather = lambda idx: torch.gather(x, 2, idx.view(N, 1, window, 1, 1).expand(N, C, window, V, M))
    return gather(low) * (1 - w) + gather(high) * w


# ---------------------------------------------------------------------------------------------
# Streams (AimCLR processor / CrosSCLR 'view'): computed on the batch after augmentation.

def to_bone(x, parents):
    """Bone stream: x[v] - x[parent(v)] for the layout's tree (the reference's 25 NTU pairs)."""
    return x - x.index_select(3, _joint_index(tuple(parents), x.device))


def to_motion(x):
    """Motion stream: frame difference x[t+1] - x[t], last frame zero."""
    motion = torch.zeros_like(x)
    motion[:, :, :-1] = x[:, :, 1:] - x[:, :, :-1]
    return motion


STREAMS = ('joint', 'bone', 'motion', 'bone_motion')
PARENT_STREAMS = ('bone', 'bone_motion')          # the streams that need the layout's parents


def to_stream(x, stream, parents=None):
    """The ``stream`` of a joint batch; 'bone_motion' is the motion of the bone stream (CTR-GCN's
    ``bone: True, vel: True``, the fourth stream of the 4-stream ensembles)."""
    if stream in PARENT_STREAMS and parents is None:
        raise ValueError(f"stream '{stream}' needs the skeleton layout's parents (train_feeder_args.layout)")
    if stream == 'joint':
        return x
    if stream == 'bone':
        return to_bone(x, parents)
    if stream == 'motion':
        return to_motion(x)
    if stream == 'bone_motion':
        return to_motion(to_bone(x, parents))
    raise ValueError(f"unknown stream '{stream}'; use one of {', '.join(STREAMS)}")


# ---------------------------------------------------------------------------------------------
# SkeleMix (Chen et al., SkeleMixCLR, arXiv 2207.03065): spatio-temporal mixing of a batch.

SKELEMIX_MODES = ('swap', 'zeros', 'Gaussian')


def skelemix_mask(units, num_node, joints, start, length, device=None):
    """(units, V) boolean mask of the mixed region on the encoder's time grid: ``length`` units from
    ``start``, over ``joints`` (a list of joint indices, the union of the chosen body parts)."""
    mask = torch.zeros(units, num_node, dtype=torch.bool, device=device)
    rows = torch.zeros(units, dtype=torch.bool, device=device)
    rows[start:start + length] = True
    cols = torch.zeros(num_node, dtype=torch.bool, device=device)
    cols[list(joints)] = True
    return mask | (rows[:, None] & cols[None, :])


def skelemix(x, partner, mask, mode='swap', noise=None):
    """The mixed view of SkeleMix (the reference's ``ske_swap``): every sample of x (N, C, T, V, M) takes
    its partner's (``partner`` (N,) indices, the reference's ``(i + n) % N``) coordinates inside the
    region ``mask`` (T', V) of the encoder's time grid, unit u covering frames [u r, (u + 1) r) with
    r = ceil(T / T') (the reference's r = 4 for 64 frames -> 16 units); ``mode`` 'zeros' writes zeros
    there, 'Gaussian' N(0, 1) noise (``noise`` fixes it)."""
    N, C, T, V, M = x.shape
    units = mask.size(0)
    ratio = -(-T // units)
    unit_of_frame = (torch.arange(T, device=x.device) // ratio).clamp_max(units - 1)
    region = mask.to(x.device)[unit_of_frame].view(1, 1, T, V, 1)
    if mode == 'swap':
        source = x[partner.to(x.device)]
    elif mode == 'zeros':
        source = torch.zeros_like(x)
    elif mode == 'Gaussian':
        source = torch.randn_like(x) if noise is None else noise
    else:
        raise ValueError(f"model_args.swap_cfg.swap_mode={mode!r}: use one of {', '.join(SKELEMIX_MODES)}")
    return torch.where(region, source, x)
