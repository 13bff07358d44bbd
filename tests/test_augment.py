import numpy as np
import pytest
import torch

from feeder import tools
from net.utils.layouts import NTU_RGBD


def batch(n=6, T=20, V=25, M=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, T, V, M, generator=g)


def test_shear_is_a_per_sample_linear_map():
    x = batch()
    torch.manual_seed(0)
    y = tools.shear(x, 0.5)
    assert y.shape == x.shape
    for n in range(x.size(0)):
        pts = x[n].reshape(3, -1).T           # (P, 3)
        out = y[n].reshape(3, -1).T
        R, *_ = torch.linalg.lstsq(pts, out)  # out = pts @ R
        torch.testing.assert_close(pts @ R, out, rtol=1e-4, atol=1e-4)
        M = R.T                               # out = M @ p
        torch.testing.assert_close(torch.diagonal(M), torch.ones(3), rtol=1e-4, atol=1e-4)
        off = M[~torch.eye(3, dtype=torch.bool)]
        assert off.abs().max() <= 0.5 + 1e-5
    # samples get different matrices
    assert not torch.allclose(y[0] / (x[0] + 1e-9), y[1] / (x[1] + 1e-9))


def test_shear_equals_reference_numpy_for_a_given_matrix():
    x = batch(n=1)
    s1, s2 = [0.1, -0.2, 0.3], [0.05, 0.4, -0.45]
    R = np.array([[1, s1[0], s2[0]], [s1[1], 1, s2[1]], [s1[2], s2[2], 1]])
    ref = np.dot(x[0].numpy().transpose([1, 2, 3, 0]), R.transpose()).transpose(3, 0, 1, 2)
    y = tools.shear(x, matrix=torch.tensor(R, dtype=torch.float32)[None])
    np.testing.assert_allclose(y[0].numpy(), ref, rtol=1e-5, atol=1e-5)


def test_temperal_crop_keeps_length_and_matches_reference():
    x = batch(T=30)
    torch.manual_seed(0)
    assert tools.temperal_crop(x, 6).shape == x.shape
    pad = 30 // 6
    for start in (0, 3, 2 * pad):
        xn = x[0].numpy()
        ref = np.concatenate((xn[:, :pad][:, ::-1], xn, xn[:, -pad:][:, ::-1]), axis=1)[:, start:start + 30]
        y = tools.temperal_crop(x[:1], 6, start=torch.tensor([start]))
        np.testing.assert_array_equal(y[0].numpy(), ref)


def test_augmentations_reproduce_under_a_seed():
    x = batch()
    ops = [lambda v: tools.shear(v), lambda v: tools.temperal_crop(v), lambda v: tools.random_rotate(v),
           lambda v: tools.gaus_noise(v), lambda v: tools.gaus_filter(v), lambda v: tools.axis_mask(v),
           lambda v: tools.random_time_flip(v), lambda v: tools.joint_mask(v),
           lambda v: tools.random_spatial_flip(v, NTU_RGBD.flip), lambda v: tools.random_joint_noise(v)]
    for op in ops:
        torch.manual_seed(3)
        a = op(x)
        torch.manual_seed(3)
        b = op(x)
        torch.manual_seed(4)
        c = op(x)
        assert a.shape == x.shape
        assert torch.equal(a, b)
        assert not torch.equal(a, c)


def test_spatial_flip_swaps_left_and_right():
    x = batch(n=2)
    y = tools.random_spatial_flip(x, NTU_RGBD.flip, mask=torch.tensor([True, False]))
    assert torch.equal(y[0, :, :, 4], x[0, :, :, 8])     # left shoulder <- right shoulder
    assert torch.equal(y[0, :, :, 20], x[0, :, :, 20])   # spine stays
    assert torch.equal(y[1], x[1])


def test_time_flip_reverses_frames():
    x = batch(n=2)
    y = tools.random_time_flip(x, mask=torch.tensor([True, False]))
    assert torch.equal(y[0], x[0].flip(1)) and torch.equal(y[1], x[1])


def test_rotate_preserves_norms_and_matches_reference_matrices():
    x = batch(n=1)
    y = tools.random_rotate(x)
    torch.testing.assert_close(y.norm(dim=1), x.norm(dim=1), rtol=1e-4, atol=1e-4)
    # the reference applies R^T on the right for axis x, then y, then z
    angles = [10.0, 20.0, 5.0]
    seq = x[0].numpy().transpose(1, 2, 3, 0)
    for axis, deg in enumerate(angles):
        a = np.radians(deg)
        c, s = np.cos(a), np.sin(a)
        R = [np.array([[1, 0, 0], [0, c, s], [0, -s, c]]), np.array([[c, 0, -s], [0, 1, 0], [s, 0, c]]),
             np.array([[c, s, 0], [-s, c, 0], [0, 0, 1]])][axis]
        seq = np.matmul(seq, R.T)
    y = tools.random_rotate(x, angles=torch.tensor([angles]))
    np.testing.assert_allclose(y[0].numpy(), seq.transpose(3, 0, 1, 2), rtol=1e-4, atol=1e-5)


def test_gaussian_blur_matches_a_direct_convolution():
    x = batch(n=2, T=25)
    sigma = torch.tensor([1.5, 0.7])
    y = tools.gaus_filter(x, sigmas=sigma, mask=torch.tensor([True, False]))
    assert torch.equal(y[1], x[1])
    radius = 7
    w = np.exp(-np.arange(-radius, radius + 1) ** 2 / (2 * 1.5 ** 2))   # unnormalised, as the reference
    sig = x[0, 0, :, 3, 0].numpy()
    ref = np.convolve(np.pad(sig, radius), w[::-1], mode='valid')
    np.testing.assert_allclose(y[0, 0, :, 3, 0].numpy(), ref, rtol=1e-4, atol=1e-4)


def test_axis_mask_zeroes_one_channel():
    x = batch(n=3)
    y = tools.axis_mask(x, mask=torch.tensor([True, True, False]), channel=torch.tensor([0, 2, 1]))
    assert torch.all(y[0, 0] == 0) and torch.equal(y[0, 1:], x[0, 1:])
    assert torch.all(y[1, 2] == 0) and torch.equal(y[1, :2], x[1, :2])
    assert torch.equal(y[2], x[2])


def test_joint_mask_zeroes_exactly_the_chosen_joints():
    x = batch(n=4)
    torch.manual_seed(0)
    y = tools.joint_mask(x, num_joints=5, p=1.0)
    zeroed = (y == 0).all(dim=(1, 2, 4))               # (N, V)
    assert torch.equal(zeroed.sum(1), torch.full((4,), 5))
    assert torch.equal(y[~zeroed.view(4, 1, 1, 25, 1).expand_as(y)], x[~zeroed.view(4, 1, 1, 25, 1).expand_as(x)])


def test_random_joint_noise_touches_exactly_five_joints():
    x = batch(n=4)
    y = tools.random_joint_noise(x, num_joints=5)
    changed = (y != x).any(dim=1).any(dim=1).any(dim=-1)   # (N, V)
    assert torch.equal(changed.sum(1), torch.full((4,), 5))


def test_streams():
    x = batch(n=2, V=25)
    bone = tools.to_stream(x, 'bone', NTU_RGBD.parents)
    torch.testing.assert_close(bone[:, :, :, 0], x[:, :, :, 0] - x[:, :, :, 1])    # (1, 2)
    assert torch.all(bone[:, :, :, 20] == 0)                                        # (21, 21)
    motion = tools.to_stream(x, 'motion')
    torch.testing.assert_close(motion[:, :, :-1], x[:, :, 1:] - x[:, :, :-1])
    assert torch.all(motion[:, :, -1] == 0)
    with pytest.raises(ValueError, match='unknown stream'):
        tools.to_stream(x, 'velocity')


def test_augmentations_run_on_the_batch_device_dtype():
    x = batch(n=2).double()
    assert tools.shear(x).dtype == torch.float64
    assert tools.gaus_filter(x, p=1.0).dtype == torch.float64
