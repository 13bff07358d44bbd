"""FreST: the Frequency-domain Spatial-Temporal block of MICA (Xin et al., Sensors 2025, section 4.2).

FreST = FreS then FreT, appended after the skeleton encoder on its feature map ``x`` of shape
(N, C, T, V) (ST-GCN output before pooling, e.g. C = 256, T = T_in / 4, V = 25).  Neither block changes
the shape.  Each block (``FrequencyBlock``; ``FreS`` filters along the joints V, ``FreT`` along the
frames T) does:

1. decoupling module (the paper's "spatial / temporal decoupling module", form not given):
   ``decoupling='linear'`` (default) ``nn.Linear(C, C)`` over channels; ``'depthwise'`` a per-channel
   scale and bias (2C parameters, no C x C product); ``'none'`` the identity;
2. (the paper's reshape to (N*T, V, C) for FreS or (N*V, T, C) for FreT: here the map stays (N, C, T, V)
   and the transforms run along its V (resp. T) axis, the same transforms without a copy);
3. ``F = rfft`` along V (resp. T), ``norm='ortho'`` (eq. 7, the DFT);
4. energy ``E = |F|^2``, normalised ``E_hat = E / (median(E) + eps)``, eps = 1e-8 (eq. 8);
5. binary mask ``M = 1[E_hat > tau]`` and ``F_mask = F * M`` (eq. 9); all ones with
   ``adaptive_mask=False``;
6. complex filters ``W_g = W_g^r + j W_g^i``, ``W_l = W_l^r + j W_l^i`` (eq. 10), init
   N(0, filter_std^2) with ``filter_std`` 0.02 (section 5.2: "normal distributions with a standard
   deviation of 0.02"; section 4.2's "sigma^2 = 0.01" would be std 0.1: ``filter_std=0.1``);
   ``F_G = W_g * F``, ``F_L = W_l * F_mask`` (eq. 11);
   ``F_out = F_G + F_L``, computed as ``F * (W_g + W_l * M)`` (one product with the spectrum; a
   switched-off filter is not created and contributes nothing);
7. domain inversion: ``y = irfft(F_out, n=length, norm='ortho')`` along the same axis, and the residual
   ``out = x + y``.

Equation numbers: the paper's text calls the DFT "Equation (7)"; the extracted text in
``shared/papers/mica.txt`` drops the other numbers, so (8)-(11) above are the displayed equations of
section 4.2 counted in order after (7) (normalised energy, mask, complex filters, filter application).

Median (step 4), exactly: the feature map has the persons folded into the batch (N = samples x M
person slots, ST-GCN's layout), and a "sequence" is one person slot of one sample: with the default
``median_scope='sequence'`` there is one median per row group of the block's input batch, i.e. per
(sample, person), taken over all entries of E of that person's sequence: all frequency components, all
channels and the other axis (its T frames for FreS, its V joints for FreT) -- the paper's "threshold tau
computed from the median spectral energy of each input sequence".  Each person is its own skeleton
sequence, so an empty second slot (zeros in the data) does not pull the median of the real person
down.  ``median_scope='row'`` takes one median per row of the paper's reshaped batch instead (per frame
of a person for FreS, per joint for FreT), over its frequency components and channels.  For an even number
of entries ``torch.median`` returns the lower of the two middle values (not their mean, as numpy does).

tau (step 5) is a constructor argument (YAML ``tau_f``).  tau = 1 keeps the components above the
median, i.e. about half of every spectrum whatever its shape: not adaptive.  With tau > 1 the kept
fraction follows the shape of the spectrum (the paper's mask "automatically tightens for
noise-dominated spectra and relaxes for clean" ones): for a flat (white-noise) spectrum |F|^2 is
exponential and the kept fraction is 2^-tau (25% at tau = 2, 6% at tau = 4), while a smooth sequence
(energy falling with frequency, e.g. a random walk) keeps more of its components.  The default is 2
(docs/METHODS.md).

The FFTs run in float32 even under autocast (the frequency part runs with autocast disabled on the
half-precision input cast to float32; the result is cast back to ``x.dtype``); float32 and float64 inputs
keep their precision (before issue 44 a float64 input was cast to float32 too, so float64 parity tests
held FreST to float32 rounding).  Any T and V work: the filters are created for
the configured length (``num_freq = length // 2 + 1``); for another input length the complex filter is
resampled along frequency by linear interpolation (``F.interpolate``, ``align_corners=True``).

Added parameters (``count_parameters``) of the shipped configs (C = 256, 50-frame input -> T = 13,
V = 25; ``python tools/complexity.py --config config/ntu60/xsub.yaml``, the ``neck`` row):
FreS = 256*256 + 256 (projection) + 2 * 13*256*2 (W_g, W_l; 13 = 25//2 + 1 bins) = 79,104;
FreT = 65,792 + 2 * 7*256*2 (7 = 13//2 + 1 bins) = 72,960; FreST = 152,064 = 0.152 M, and 0.092 GMACs
per NTU sample (two person slots) on a 0.61 GMAC encoder, almost all in the two C x C projections.
With ``decoupling='depthwise'``: 2 * 512 + 20,480 = 21,504 parameters and ~0.007 GMACs (the FFTs).
The paper reports "only 0.18 M additional parameters and 1.72 G FLOPs" (Table 3: 1.70 G -> 1.72 G,
+0.02 G): its parameter figure fits the linear decoupling (64-frame input: 154,112; filters for
T = 64: 178,688), its FLOP figure fits the depthwise one; no single reading gives both.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ['FrequencyBlock', 'FreS', 'FreT', 'FreST', 'ChannelAffine', 'count_parameters', 'kept_fraction',
           'resample_filter']

EPS = 1e-8
DECOUPLINGS = ('linear', 'depthwise', 'none')


def count_parameters(module, trainable_only=False):
    """Number of parameters of ``module`` (all of them, or only those with ``requires_grad``)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def at_least_float32(x):
    """``x`` in float32 when it is half precision (AMP), else as it is (float64 stays float64)."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


class ChannelAffine(nn.Module):
    """Per-channel scale and bias on the channel axis 1 of (N, C, T, V) (``decoupling='depthwise'``): 2C
    parameters."""

    def __init__(self, channels):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x):
        return x * self.weight.view(-1, 1, 1) + self.bias.view(-1, 1, 1)


class ChannelLinear(nn.Linear):
    """``nn.Linear(C, C)`` over the channel axis 1 of (N, C, T, V) (``decoupling='linear'``)."""

    def forward(self, x):
        return super().forward(x.movedim(1, -1)).movedim(-1, 1)


def decoupling_module(kind, channels):
    """The decoupling module before the FFT, on (N, C, T, V): Linear(C, C), ChannelAffine(C) or the identity."""
    if kind not in DECOUPLINGS:
        raise ValueError(f"model_args.decoupling={kind!r}: use one of {', '.join(DECOUPLINGS)}")
    if kind == 'linear':
        return ChannelLinear(channels, channels)
    return ChannelAffine(channels) if kind == 'depthwise' else nn.Identity()


def kept_fraction(mask, num_samples):
    """Fraction of the spectrum components the adaptive mask keeps, per sequence: (num_samples,)."""
    return mask.reshape(num_samples, -1).mean(dim=1)


def resample_filter(weight, num_freq):
    """Resample a real-stored complex filter ``(F0, C, 2)`` to ``(num_freq, C, 2)`` along frequency by
    linear interpolation (``align_corners=True``: the first and last bins map onto each other).  Real
    and imaginary parts are interpolated independently, which is linear interpolation of the complex
    values.  Returns ``weight`` itself when the size already matches."""
    if weight.shape[0] == num_freq:
        return weight
    f0, c, _ = weight.shape
    w = weight.permute(1, 2, 0).reshape(1, c * 2, f0)          # (1, C*2, F0)
    w = F.interpolate(w, size=num_freq, mode='linear', align_corners=True)
    return w.reshape(c, 2, num_freq).permute(2, 0, 1)           # (num_freq, C, 2)


class FrequencyBlock(nn.Module):
    """One adaptive frequency-domain filtering block (FreS with ``dim='joint'``, FreT with
    ``dim='frame'``), MICA section 4.2, eqs. (7)-(11); see the module docstring for the steps.

    Args:
        channels: C of the feature map (N, C, T, V).
        length: the configured length of the filtered axis (V for ``'joint'``, T for ``'frame'``);
            the filters have ``length // 2 + 1`` frequency bins and are resampled for other lengths.
        dim: ``'joint'`` (FFT along V, rows N*T) or ``'frame'`` (FFT along T, rows N*V).
        tau: threshold on the median-normalised energy (eq. 9); default 2.0 (1.0 = the median energy,
            which keeps half of every spectrum: not adaptive).
        global_filter: use W_g on the full spectrum.
        local_filter: use W_l on the masked spectrum.
        adaptive_mask: with False the mask is all ones (F_mask = F).
        median_scope: ``'sequence'`` (one median per person sequence, i.e. per entry of the block's
            (N*M) batch) or ``'row'`` (one per reshaped row).
        decoupling: ``'linear'`` | ``'depthwise'`` | ``'none'`` (module docstring, step 1).
        filter_std: std of the filters' Gaussian init (0.02, section 5.2).
    """

    def __init__(self, channels, length, dim='joint', tau=2.0, global_filter=True, local_filter=True,
                 adaptive_mask=True, median_scope='sequence', decoupling='linear', filter_std=0.02):
        super().__init__()
        if dim not in ('joint', 'frame'):
            raise ValueError(f"dim must be 'joint' or 'frame', got {dim!r}")
        if median_scope not in ('sequence', 'row'):
            raise ValueError(f"median_scope must be 'sequence' or 'row', got {median_scope!r}")
        if length < 1:
            raise ValueError(f'length must be >= 1, got {length}')
        self.channels = channels
        self.length = length
        self.dim = dim
        self.tau = float(tau)
        self.adaptive_mask = adaptive_mask
        self.median_scope = median_scope
        self.num_freq = length // 2 + 1
        self.decoupling = decoupling
        self.proj = decoupling_module(decoupling, channels)
        # complex filters stored as (num_freq, C, 2) = (real, imaginary), eq. (10)
        self.weight_global = (nn.Parameter(torch.randn(self.num_freq, channels, 2) * filter_std)
                              if global_filter else None)
        self.weight_local = (nn.Parameter(torch.randn(self.num_freq, channels, 2) * filter_std)
                             if local_filter else None)

    def extra_repr(self):
        return (f'channels={self.channels}, length={self.length}, dim={self.dim!r}, tau={self.tau}, '
                f'global_filter={self.weight_global is not None}, '
                f'local_filter={self.weight_local is not None}, adaptive_mask={self.adaptive_mask}, '
                f'median_scope={self.median_scope!r}, decoupling={self.decoupling!r}')

    @property
    def axis(self):
        """The filtered axis of the (N, C, T, V) map: V (3) for FreS, T (2) for FreT."""
        return 3 if self.dim == 'joint' else 2

    def _complex_filter(self, weight, num_freq):
        """The filter (num_freq, C, 2) as complex (1, C, 1, num_freq) / (1, C, num_freq, 1): broadcast over a
        spectrum of the (N, C, T, V) map along ``axis``."""
        w = torch.view_as_complex(resample_filter(at_least_float32(weight), num_freq).contiguous()).T
        return w.reshape(1, w.size(0), 1, num_freq) if self.axis == 3 else w.reshape(1, w.size(0), num_freq, 1)

    def spectrum_mask(self, spec, num_samples):
        """The binary mask of eq. (9) for a spectrum ``spec`` of the (N, C, T, V) map along ``axis`` (N =
        ``num_samples`` sequences), as a float tensor of the same shape (all ones without the adaptive mask)."""
        keep = self.spectrum_keep(spec, num_samples)
        return torch.ones(spec.shape, dtype=torch.float32, device=spec.device) if keep is None \
            else keep.to(torch.float32)

    @torch.no_grad()
    def spectrum_keep(self, spec, num_samples):
        """Eq. (9) as a boolean tensor (None without the adaptive mask: every component kept); a constant of
        the step (no gradient flows through a threshold), so no graph is recorded.  ``sequence``: one
        median over all entries of a sequence (contiguous in the (N, C, ...) spectrum); ``row``: one per
        frame (FreS) or joint (FreT), over its frequencies and channels."""
        if not self.adaptive_mask:
            return None
        energy = spec.real.square() + spec.imag.square()                        # |F|^2
        if self.median_scope == 'row':            # rows of the other axis first: (N, rows, C, F)
            energy = energy.permute(0, 2, 1, 3) if self.axis == 3 else energy.permute(0, 3, 1, 2)
            flat = energy.reshape(-1, energy.shape[2] * energy.shape[3])
        else:
            flat = energy.reshape(num_samples, -1)
        med = flat.median(dim=1, keepdim=True).values                           # per sequence / row
        keep = (flat / (med + EPS) > self.tau).view(energy.shape)               # eqs. (8), (9)
        if self.median_scope == 'row':
            keep = keep.permute(0, 2, 1, 3) if self.axis == 3 else keep.permute(0, 2, 3, 1)
        return keep

    def forward(self, x):
        if self.weight_global is None and self.weight_local is None:
            return x  # F_out = 0: nothing is added
        axis = self.axis
        with torch.autocast(device_type=x.device.type, enabled=False):
            h = self.proj(at_least_float32(x))                                  # decoupling, (N, C, T, V)
            length = h.shape[axis]
            spec = torch.fft.rfft(h, dim=axis, norm='ortho')                    # eq. (7)
            num_freq = spec.shape[axis]
            if self.weight_local is None:
                filters = self._complex_filter(self.weight_global, num_freq)                  # F_G
            else:
                local = self._complex_filter(self.weight_local, num_freq)
                keep = self.spectrum_keep(spec, x.shape[0])                     # F_mask = F * M
                if keep is not None:
                    local = local * keep
                filters = local if self.weight_global is None else \
                    self._complex_filter(self.weight_global, num_freq) + local               # W_g + W_l M
            y = torch.fft.irfft(spec * filters, n=length, dim=axis, norm='ortho')  # F_G + F_L, inversion
        return x + y.to(x.dtype)


class FreS(FrequencyBlock):
    """Frequency Spatial block: ``FrequencyBlock`` filtering along the joints (length = V)."""

    def __init__(self, channels, num_joints, **kwargs):
        super().__init__(channels, num_joints, dim='joint', **kwargs)


class FreT(FrequencyBlock):
    """Frequency Temporal block: ``FrequencyBlock`` filtering along the frames (length = T)."""

    def __init__(self, channels, num_frames, **kwargs):
        super().__init__(channels, num_frames, dim='frame', **kwargs)


class FreST(nn.Module):
    """FreS then FreT on the encoder feature map (N, C, T, V); output shape = input shape.

    ``fres`` / ``fret`` switch each block (a switched-off block is not created: ``self.fres`` /
    ``self.fret`` is None and is skipped); the other switches are passed to both blocks.
    ``num_frames`` is the feature-map T (e.g. 64-frame input / 4 = 16 for ST-GCN), ``num_joints`` V.
    """

    def __init__(self, channels, num_frames, num_joints, fres=True, fret=True, global_filter=True,
                 local_filter=True, adaptive_mask=True, tau=2.0, median_scope='sequence', decoupling='linear',
                 filter_std=0.02):
        super().__init__()
        common = dict(tau=tau, global_filter=global_filter, local_filter=local_filter,
                      adaptive_mask=adaptive_mask, median_scope=median_scope, decoupling=decoupling,
                      filter_std=filter_std)
        self.fres = FreS(channels, num_joints, **common) if fres else None
        self.fret = FreT(channels, num_frames, **common) if fret else None

    def forward(self, x):
        if self.fres is not None:
            x = self.fres(x)
        if self.fret is not None:
            x = self.fret(x)
        return x
