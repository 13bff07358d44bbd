"""ST-GCN encoder (Yan et al., AAAI 2018) as used by SkeletonCLR, AimCLR, MsMCLR and MICA.

Layer for layer and parameter name for name the model of the AimCLR/CrosSCLR code bases, so their
checkpoints load strictly here and ours load there.  Besides ``forward`` (logits of ``fc``) it exposes
``encode`` (the pre-pooling feature map) and ``pool`` so heads can attach to the feature map.

Two implementations of the same function and parameters (``implementation``; ``auto``, the default,
takes ``fast`` for CUDA inputs and ``reference`` on the CPU):

- ``reference``: the reference code's (N, C, T, V) layout; the graph convolution is a 1x1 conv and
  ``einsum('nkctv,kvw->nctw')``, which copies the conv output into a (n, c, t, k, v) order first.
- ``fast``: activations stay channels-last, (N, T, V, C) in memory, from the input to the
  last block.  The 1x1 conv is then one GEMM over the channel axis (``F.linear``) whose output
  (N, T, V, K*C') is already laid out as (N*T, V*K, C'), so the contraction with the K adjacency
  subsets is one batched matmul with a (W, V*K) matrix: no permute or copy between the two.  The
  temporal convolutions and BatchNorms run in cuDNN's / oneDNN's NHWC kernels.  Same parameters,
  same state dict, results equal within float rounding (``tests/test_st_gcn.py``).

``checkpoint_blocks: true`` trades time for memory in training: each block (and the neck, MICA's FreST)
keeps only its input for backward and runs its forward again there (``torch.utils.checkpoint``,
non-reentrant, the dropout masks replayed); the BatchNorms of the re-run use the batch's statistics but
do not update their running statistics a second time, so parameters, gradients and buffers equal those
of the plain step.
"""
import contextlib

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from net.utils.encoder import SkeletonEncoder
from net.utils.graph import Graph


class ConvTemporalGraphical(nn.Module):
    """Spatial graph convolution: a 1x1 conv to out*K channels, contracted with the K adjacency
    subsets (einsum ``nkctv,kvw->nctw``), ST-GCN eq. (10)."""

    def __init__(self, in_channels, out_channels, kernel_size, t_kernel_size=1, t_stride=1,
                 t_padding=0, t_dilation=1, bias=True):
        super().__init__()
        self.kernel_size = kernel_size
        self.conv = nn.Conv2d(in_channels, out_channels * kernel_size, kernel_size=(t_kernel_size, 1),
                              padding=(t_padding, 0), stride=(t_stride, 1), dilation=(t_dilation, 1),
                              bias=bias)

    def forward(self, x, A):
        assert A.size(0) == self.kernel_size
        if x.dim() == 4 and x.stride(1) == 1 and x.size(1) > 1 and self.conv.kernel_size == (1, 1):
            return self.forward_channels_last(x, A), A
        x = self.conv(x)
        n, kc, t, v = x.size()
        x = x.view(n, self.kernel_size, kc // self.kernel_size, t, v)
        x = torch.einsum('nkctv,kvw->nctw', x, A)
        return x.contiguous(), A

    def forward_channels_last(self, x, A):
        """The same graph convolution on a channels-last (N, C, T, V) tensor (memory order N, T, V, C):
        a GEMM to (N, T, V, K*C') and one batched matmul with A as a (W, V*K) matrix; the output is
        channels-last (N, C', T, W)."""
        K, V, W = A.shape
        y = F.linear(x.permute(0, 2, 3, 1), self.conv.weight.flatten(1), self.conv.bias)    # (N, T, V, K*C')
        N, T = y.shape[:2]
        out_channels = y.size(-1) // K
        adjacency = A.permute(2, 1, 0).reshape(W, V * K).to(y.dtype)                        # [w, v*K + k]
        # bmm with the adjacency broadcast over the batch (stride 0): no copy of y or of the output
        # (matmul would fold the batch into a transposed copy of y and copy its result back)
        out = torch.bmm(adjacency.expand(N * T, W, V * K), y.view(N * T, V * K, out_channels))  # (N*T, W, C')
        return out.view(N, T, W, out_channels).permute(0, 3, 1, 2)


class st_gcn(nn.Module):
    """One ST-GCN block: graph conv -> BN-ReLU-temporal conv (9x1, stride s)-BN-Dropout, plus a
    residual branch, then ReLU.  (Class name kept from the reference for familiarity.)"""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, dropout=0, residual=True):
        super().__init__()
        assert len(kernel_size) == 2 and kernel_size[0] % 2 == 1
        padding = ((kernel_size[0] - 1) // 2, 0)
        self.gcn = ConvTemporalGraphical(in_channels, out_channels, kernel_size[1])
        self.tcn = nn.Sequential(
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, (kernel_size[0], 1), (stride, 1), padding),
            nn.BatchNorm2d(out_channels),
            nn.Dropout(dropout, inplace=True),
        )
        if not residual:
            self.residual = None
            self.residual_mode = 'none'
        elif in_channels == out_channels and stride == 1:
            self.residual = None
            self.residual_mode = 'identity'
        else:
            self.residual = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=(stride, 1)),
                nn.BatchNorm2d(out_channels),
            )
            self.residual_mode = 'conv'
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x, A):
        if self.residual_mode == 'conv':
            res = self.residual(x)
        elif self.residual_mode == 'identity':
            res = x
        else:
            res = 0
        x, A = self.gcn(x, A)
        x = self.tcn(x) + res
        return self.relu(x), A


@contextlib.contextmanager
def frozen_running_statistics(module):
    """The BatchNorms of ``module`` normalise with the batch's statistics (training mode) but leave their
    running statistics and counters as they are: the re-run of a checkpointed block.  (Momentum 0 keeps the
    running statistics exactly and saves the same tensors for backward as the first run; the counter is
    put back.)"""
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    saved = [(m, m.momentum, m.num_batches_tracked.clone()) for m in norms]
    for m in norms:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, momentum, count in saved:
            m.momentum = momentum
            m.num_batches_tracked.copy_(count)


def run_block(block, x, A, checkpointed):
    """``block(x, A)``'s output, with activation checkpointing (``checkpointed``) or without."""
    if not checkpointed:
        return block(x, A)[0]
    return checkpoint(lambda h, a: block(h, a)[0], x, A, use_reentrant=False,
                      context_fn=lambda: (contextlib.nullcontext(), frozen_running_statistics(block)))


class Model(SkeletonEncoder):
    """ST-GCN encoder of the SkeletonCLR/AimCLR family (the ``SkeletonEncoder`` contract).

    Input (N, C, T, V, M); output logits (N, num_class).  Channels of the 10 blocks:
    c, c, c, c, 2c (stride 2), 2c, 2c, 4c (stride 2), 4c, hidden_dim with c = hidden_channels.
    ``dropout`` arrives through kwargs as in the reference and applies to blocks 2-10.
    ``implementation``: 'auto' (fast on CUDA), 'fast' (channels-last, see the module docstring) or
    'reference'.  ``checkpoint_blocks``: activation checkpointing of the blocks in training (module
    docstring).
    """

    IMPLEMENTATIONS = ('auto', 'fast', 'reference')
    display_name = 'ST-GCN'

    def __init__(self, in_channels=3, hidden_channels=16, hidden_dim=256, num_class=60,
                 graph_args=None, edge_importance_weighting=True, implementation='auto', checkpoint_blocks=False,
                 **kwargs):
        super().__init__()
        for key, value in (('in_channels', in_channels), ('hidden_channels', hidden_channels),
                           ('hidden_dim', hidden_dim), ('num_class', num_class)):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f'model_args.{key} must be a positive integer, got {value!r}')
        if graph_args is not None and not isinstance(graph_args, dict):
            raise ValueError(f"model_args.graph_args must be a mapping such as {{layout: 'ntu-rgb+d', strategy: "
                             f"'spatial'}}, got {graph_args!r}")
        if implementation not in self.IMPLEMENTATIONS:
            raise ValueError(f"model_args.implementation must be one of {self.IMPLEMENTATIONS}, "
                             f"got {implementation!r}")
        self.implementation = implementation
        self.checkpoint_blocks = bool(checkpoint_blocks)
        graph_args = dict(graph_args or {'layout': 'ntu-rgb+d', 'strategy': 'spatial'})
        self.graph = Graph(**graph_args)
        A = torch.tensor(self.graph.A, dtype=torch.float32, requires_grad=False)
        self.register_buffer('A', A)

        spatial_kernel_size = A.size(0)
        temporal_kernel_size = 9
        kernel_size = (temporal_kernel_size, spatial_kernel_size)
        self.in_channels = in_channels
        self.num_node = A.size(1)
        self.data_bn = nn.BatchNorm1d(in_channels * A.size(1))
        kwargs0 = {k: v for k, v in kwargs.items() if k != 'dropout'}
        c = hidden_channels
        self.st_gcn_networks = nn.ModuleList((
            st_gcn(in_channels, c, kernel_size, 1, residual=False, **kwargs0),
            st_gcn(c, c, kernel_size, 1, **kwargs),
            st_gcn(c, c, kernel_size, 1, **kwargs),
            st_gcn(c, c, kernel_size, 1, **kwargs),
            st_gcn(c, c * 2, kernel_size, 2, **kwargs),
            st_gcn(c * 2, c * 2, kernel_size, 1, **kwargs),
            st_gcn(c * 2, c * 2, kernel_size, 1, **kwargs),
            st_gcn(c * 2, c * 4, kernel_size, 2, **kwargs),
            st_gcn(c * 4, c * 4, kernel_size, 1, **kwargs),
            st_gcn(c * 4, hidden_dim, kernel_size, 1, **kwargs),
        ))
        self.fc = nn.Linear(hidden_dim, num_class)
        self.drop_out = nn.Identity()       # the reference has no dropout before fc
        self.feature_dim = hidden_dim
        # optional module on the feature map after the last block, e.g. MICA's FreST (``neck.*`` keys)
        self.neck = None

        if edge_importance_weighting:
            self.edge_importance = nn.ParameterList([nn.Parameter(torch.ones(self.A.size()))
                                                     for _ in self.st_gcn_networks])
        else:
            self.edge_importance = [1] * len(self.st_gcn_networks)
        if implementation == 'fast':
            self.fast_weight_layouts()

    def uses_fast(self, device):
        """Whether the channels-last implementation runs for inputs on ``device``."""
        return self.implementation == 'fast' or (self.implementation == 'auto' and device.type == 'cuda')

    def _apply(self, fn, *args, **kwargs):
        """After ``.to()`` / ``.cuda()`` / ``.double()``: the weight layouts of the implementation that
        runs on the model's device (``fast_weight_layouts``)."""
        out = super()._apply(fn, *args, **kwargs)
        if self.uses_fast(self.A.device):
            self.fast_weight_layouts()
        return out

    @torch.no_grad()
    def fast_weight_layouts(self):
        """Store the convolution weights in the memory order the channels-last step produces their
        gradients in, so that no gradient is copied into the parameter's layout at each step: temporal and
        residual convolutions channels-last, the graph convolution's 1x1 weight (K*C', C, 1, 1) with
        transposed strides (its gradient is the transpose of a (C, K*C') GEMM).  Values, names and the
        state dict are unchanged; idempotent.  The graph ``A`` and the edge importances are stored in
        (W, V, K) memory order, so ``(A * importance).permute(2, 1, 0).reshape(W, V * K)`` in the graph
        convolution is a view and the importance gradients arrive in their parameter's layout."""
        wvk = [self.A] + [p for p in self.edge_importance if isinstance(p, nn.Parameter)]
        layouts = [(t, t.permute(2, 1, 0).contiguous().permute(2, 1, 0)) for t in wvk]
        for block in self.st_gcn_networks:
            w = block.gcn.conv.weight
            layouts.append((w, w.flatten(1).t().contiguous().t().view(w.shape)))
            for conv in (block.tcn[2], block.residual[0] if block.residual is not None else None):
                if conv is not None:
                    layouts.append((conv.weight, conv.weight.contiguous(memory_format=torch.channels_last)))
        for tensor, layout in layouts:
            if layout.stride() != tensor.stride():
                tensor.data = layout

    def encode(self, x):
        """(N, C, T, V, M) -> feature map (N*M, C', T', V) before pooling (persons folded into the batch)."""
        self.check_input(x)
        N, C, T, V, M = x.size()
        x = x.permute(0, 4, 3, 1, 2).contiguous()
        x = x.view(N * M, V * C, T)
        x = self.data_bn(x)
        x = x.view(N, M, V, C, T)
        if self.uses_fast(x.device):
            # (N, M, T, V, C) in memory = channels-last (N*M, C, T, V); stays so through every block
            x = x.permute(0, 1, 4, 2, 3).contiguous().view(N * M, T, V, C).permute(0, 3, 1, 2)
        else:
            x = x.permute(0, 1, 3, 4, 2).contiguous()
            x = x.view(N * M, C, T, V)
        checkpointed = self.checkpoint_blocks and self.training and torch.is_grad_enabled()
        for gcn, importance in zip(self.st_gcn_networks, self.edge_importance):
            x = run_block(gcn, x, self.A * importance, checkpointed)
        x = x.contiguous()               # heads and necks get the reference (N*M, C', T', V) layout
        if self.neck is not None:
            x = checkpoint(self.neck, x, use_reentrant=False) if checkpointed else self.neck(x)
        return x

    @staticmethod
    def pool(feature_map, num_person):
        """The reference's global average pool (``avg_pool2d`` over (T', V): its exact arithmetic, which
        the reference-fidelity test holds to 1e-5 over six SGD steps), then the mean over persons."""
        x = F.avg_pool2d(feature_map, feature_map.size()[2:])
        return x.view(-1, num_person, x.size(1)).mean(dim=1)
