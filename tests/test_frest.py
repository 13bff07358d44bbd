"""FreST (MICA section 4.2): shapes, identity with zero filters, the adaptive mask against numpy,
switches, gradients, float32 FFT under autocast, filter resampling, parameter count."""
import numpy as np
import pytest
import torch

from net.frest import FrequencyBlock, FreS, FreST, FreT, count_parameters, resample_filter

C = 8


def _x(n=2, c=C, t=6, v=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, c, t, v, generator=g)


def _zero_filters(module):
    with torch.no_grad():
        for name, p in module.named_parameters():
            if 'weight_global' in name or 'weight_local' in name:
                p.zero_()


@pytest.mark.parametrize('t,v', [(6, 5), (7, 5), (6, 4), (9, 25), (1, 3), (16, 25)])
def test_output_shape_equals_input_shape(t, v):
    torch.manual_seed(0)
    m = FreST(C, num_frames=6, num_joints=5)  # configured (6, 5); most inputs differ
    x = _x(t=t, v=v)
    y = m(x)
    assert y.shape == x.shape
    assert torch.isfinite(y).all()
    assert not torch.equal(y, x)  # the random filters do change the features


@pytest.mark.parametrize('dim', ['joint', 'frame'])
def test_zero_filters_is_exact_identity(dim):
    torch.manual_seed(0)
    for m in (FrequencyBlock(C, 5 if dim == 'joint' else 6, dim=dim), FreST(C, 6, 5)):
        _zero_filters(m)
        x = _x()
        assert torch.equal(m(x), x)
        x2 = _x(t=7, v=4)  # resampled zero filters are zero too
        assert torch.equal(m(x2), x2)


def _numpy_mask(h, dim, n, tau, scope):
    """Independent mask: numpy FFT of the projected features, lower median, threshold."""
    h = h.detach().double().numpy()  # (N, T, V, C) after the projection
    if dim == 'joint':
        rows = h.reshape(-1, h.shape[2], h.shape[3])
    else:
        rows = h.transpose(0, 2, 1, 3).reshape(-1, h.shape[1], h.shape[3])
    spec = np.fft.rfft(rows, axis=1, norm='ortho')
    energy = np.abs(spec) ** 2
    groups = n if scope == 'sequence' else rows.shape[0]
    flat = energy.reshape(groups, -1)
    srt = np.sort(flat, axis=1)
    med = srt[:, (flat.shape[1] - 1) // 2][:, None]  # torch.median: the lower middle value
    return (flat / (med + 1e-8) > tau).reshape(energy.shape), flat / (med + 1e-8)


def _as_rows(t, dim):
    """A tensor of the (N, C, T, V) map's spectrum along V (joint) / T (frame) as the paper's rows (rows, F, C)."""
    if dim == 'joint':                                   # (N, C, T, F) -> (N*T, F, C)
        return t.permute(0, 2, 3, 1).reshape(-1, t.shape[3], t.shape[1])
    return t.permute(0, 3, 2, 1).reshape(-1, t.shape[2], t.shape[1])     # (N, C, F, V) -> (N*V, F, C)


@pytest.mark.parametrize('dim', ['joint', 'frame'])
@pytest.mark.parametrize('scope', ['sequence', 'row'])
@pytest.mark.parametrize('tau', [0.5, 1.0, 2.0])
def test_mask_keeps_exactly_components_above_tau(dim, scope, tau):
    torch.manual_seed(1)
    n, t, v = 3, 7, 5
    blk = FrequencyBlock(C, v if dim == 'joint' else t, dim=dim, tau=tau, median_scope=scope)
    x = _x(n=n, t=t, v=v, seed=2)
    h = blk.proj(x)                                      # (N, C, T, V)
    spec = torch.fft.rfft(h, dim=3 if dim == 'joint' else 2, norm='ortho')
    mask = _as_rows(blk.spectrum_mask(spec, n), dim).numpy().astype(bool)
    expected, normalised = _numpy_mask(h.permute(0, 2, 3, 1), dim, n, tau, scope)
    # float32 (torch) vs float64 (numpy) rounding could only flip a value within ~1e-6 of tau; the only
    # such values are the median entries themselves (normalised = med / (med + eps) ~ 1, never > 1)
    groups = n if scope == 'sequence' else normalised.shape[0]
    near = np.abs(normalised - tau) < 1e-4
    assert near.sum() <= (groups if tau == 1.0 else 0)
    assert mask.shape == expected.shape
    np.testing.assert_array_equal(mask, expected)
    assert 0 < mask.sum() < mask.size  # the mask really selects

    # the forward pass uses exactly this mask: W_l * (F * M), checked with only the local filter
    loc = FrequencyBlock(C, blk.length, dim=dim, tau=tau, median_scope=scope, global_filter=False)
    loc.load_state_dict({k: v_ for k, v_ in blk.state_dict().items() if 'weight_global' not in k})
    w = torch.view_as_complex(loc.weight_local.detach())
    ref_rows = torch.fft.irfft(w * _as_rows(spec, dim) * torch.from_numpy(expected), n=blk.length, dim=1,
                               norm='ortho')
    if dim == 'joint':
        ref = ref_rows.reshape(n, t, v, C).permute(0, 3, 1, 2)
    else:
        ref = ref_rows.reshape(n, v, t, C).permute(0, 3, 2, 1)
    torch.testing.assert_close(loc(x), x + ref, rtol=1e-5, atol=1e-6)


def test_median_is_per_sequence():
    """Scaling one sample must not change any mask (per-sequence median), and the 'sequence' and
    'row' scopes differ in general."""
    torch.manual_seed(0)
    blk = FrequencyBlock(C, 5, dim='joint')
    spec = torch.fft.rfft(torch.randn(2, C, 6, 5), dim=3, norm='ortho')
    m1 = blk.spectrum_mask(spec, 2)
    scaled = spec.clone()
    scaled[:1] *= 10.0  # sample 0 gets 100x the energy
    torch.testing.assert_close(blk.spectrum_mask(scaled, 2), m1)
    blk_row = FrequencyBlock(C, 5, dim='joint', median_scope='row')
    assert not torch.equal(blk_row.spectrum_mask(spec, 2), m1)


@pytest.mark.parametrize('dim', ['joint', 'frame'])
def test_no_adaptive_mask_equals_mask_of_ones(dim):
    torch.manual_seed(0)
    on = FrequencyBlock(C, 5, dim=dim, tau=1.0, adaptive_mask=True)
    off = FrequencyBlock(C, 5, dim=dim, tau=1.0, adaptive_mask=False)
    off.load_state_dict(on.state_dict())
    spec = torch.fft.rfft(torch.randn(4, 5, C), dim=1, norm='ortho')
    assert torch.equal(off.spectrum_mask(spec, 2), torch.ones(spec.shape))
    x = _x(t=5, v=5)
    # mask of ones: F_out = W_g*F + W_l*F = (W_g + W_l)*F; a global-only block with W_g + W_l agrees
    ref = FrequencyBlock(C, 5, dim=dim, local_filter=False)
    with torch.no_grad():
        ref.proj.load_state_dict(on.proj.state_dict())
        ref.weight_global.copy_(on.weight_global + on.weight_local)
    torch.testing.assert_close(off(x), ref(x), rtol=1e-5, atol=1e-6)
    assert not torch.allclose(on(x), off(x))  # the adaptive mask does drop components


def test_switched_off_filter_contributes_nothing():
    torch.manual_seed(0)
    both = FrequencyBlock(C, 5, dim='frame')
    g_only = FrequencyBlock(C, 5, dim='frame', local_filter=False)
    g_only.load_state_dict({k: v for k, v in both.state_dict().items() if 'weight_local' not in k})
    assert g_only.weight_local is None
    with torch.no_grad():
        both.weight_local.zero_()
    x = _x(t=5)
    torch.testing.assert_close(g_only(x), both(x))
    none = FrequencyBlock(C, 5, global_filter=False, local_filter=False)
    assert torch.equal(none(x), x)


def test_fres_fret_switches_skip_blocks():
    torch.manual_seed(0)
    full = FreST(C, 6, 5)
    assert isinstance(full.fres, FreS) and isinstance(full.fret, FreT)
    x = _x()
    only_s = FreST(C, 6, 5, fret=False)
    only_t = FreST(C, 6, 5, fres=False)
    assert only_s.fret is None and only_t.fres is None
    only_s.fres.load_state_dict(full.fres.state_dict())
    only_t.fret.load_state_dict(full.fret.state_dict())
    torch.testing.assert_close(only_s(x), full.fres(x))
    torch.testing.assert_close(only_t(x), full.fret(x))
    torch.testing.assert_close(full(x), full.fret(full.fres(x)))  # FreS then FreT
    assert not torch.allclose(full(x), full.fres(full.fret(x)))   # order matters
    assert torch.equal(FreST(C, 6, 5, fres=False, fret=False)(x), x)
    assert count_parameters(only_s) + count_parameters(only_t) == count_parameters(full)


def test_gradients_flow_to_filters_and_projection():
    torch.manual_seed(0)
    m = FreST(C, 6, 5)
    x = _x(t=7, v=4).requires_grad_(True)  # lengths differ from the configured ones: resampling path
    m(x).square().sum().backward()
    names = [n for n, _ in m.named_parameters()]
    assert len(names) == 8
    for name, p in m.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_filter_resampling_linear_align_corners():
    w = torch.zeros(3, 2, 2)
    w[:, 0, 0] = torch.tensor([0.0, 1.0, 4.0])   # real part, channel 0
    w[:, 1, 1] = torch.tensor([2.0, -2.0, 0.0])  # imaginary part, channel 1
    r = resample_filter(w, 5)
    assert r.shape == (5, 2, 2)
    torch.testing.assert_close(r[:, 0, 0], torch.tensor([0.0, 0.5, 1.0, 2.5, 4.0]))
    torch.testing.assert_close(r[:, 1, 1], torch.tensor([2.0, 0.0, -2.0, -1.0, 0.0]))
    assert torch.equal(r[:, 0, 1], torch.zeros(5)) and torch.equal(r[:, 1, 0], torch.zeros(5))
    assert resample_filter(w, 3) is w
    torch.testing.assert_close(resample_filter(w, 2)[:, 0, 0], torch.tensor([0.0, 4.0]))  # ends kept

    # the block uses the resampled filter: a block configured for 7 joints on V = 5 (3 bins) equals a
    # block configured for 5 joints holding the resampled filters
    torch.manual_seed(0)
    big = FrequencyBlock(C, 7, dim='joint')   # 4 bins
    small = FrequencyBlock(C, 5, dim='joint')  # 3 bins
    with torch.no_grad():
        small.proj.load_state_dict(big.proj.state_dict())
        small.weight_global.copy_(resample_filter(big.weight_global, 3))
        small.weight_local.copy_(resample_filter(big.weight_local, 3))
    x = _x(t=4, v=5)
    torch.testing.assert_close(big(x), small(x))


def test_autocast_bfloat16_runs_fft_in_float32(monkeypatch):
    torch.manual_seed(0)
    m = FreST(C, 6, 5)
    calls = []
    orig = torch.fft.rfft

    def spy(inp, *a, **k):
        calls.append((inp.dtype, torch.is_autocast_enabled('cpu')))
        return orig(inp, *a, **k)

    x = _x()
    monkeypatch.setattr(torch.fft, 'rfft', spy)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        y = m(x)
        y16 = m(x.bfloat16())
    monkeypatch.undo()
    # every FFT saw float32 input with autocast switched off around it
    assert calls == [(torch.float32, False)] * 4
    assert y.dtype == torch.float32 and y.shape == x.shape and torch.isfinite(y).all()
    assert y16.dtype == torch.bfloat16 and y16.shape == x.shape
    # close to the float32 result (the projection ran in bfloat16)
    torch.testing.assert_close(y, m(x), rtol=0.05, atol=0.05)


def test_parameter_count_reported(capsys):
    m = FreST(256, num_frames=16, num_joints=25)
    n = count_parameters(m)
    proj = 256 * 256 + 256
    expected = (proj + 2 * 13 * 256 * 2) + (proj + 2 * 9 * 256 * 2)
    assert n == expected == 154112
    assert count_parameters(FreST(256, 64, 25)) == 178688
    assert count_parameters(FreST(256, 16, 25, global_filter=False)) == 154112 - (13 + 9) * 256 * 2
    with capsys.disabled():
        print(f'\nFreST(C=256, T=16, V=25) adds {n} parameters ({n / 1e6:.3f} M; paper: ~0.18 M)')
