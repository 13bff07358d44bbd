"""2s-AGCN encoder (Shi et al., "Two-Stream Adaptive Graph Convolutional Networks for Skeleton-Based
Action Recognition", CVPR 2019), after lshi's ``model/agcn.py``.

Module and parameter names follow the reference (``data_bn``, ``l1``..``l10`` with ``gcn1``/``tcn1``/
``residual``, ``PA``, ``conv_a``/``conv_b``/``conv_d``, ``down``, ``fc``), so a reference checkpoint
loads with ``strict=True`` (its fixed adjacency ``A`` is a non-persistent buffer here, as it is a plain
tensor there).  The fixed adjacency is the reference's: ``graph_args.strategy`` defaults to ``'agcn'``
(``net.utils.graph.agcn_adjacency``: identity, normalised inward, normalised outward, as lshi's
``graph/tools.py:get_spatial_graph``); ``strategy: 'spatial'`` gives ST-GCN's partition instead (the
earlier behaviour of this project).

Interface as ``net.st_gcn.Model``: ``encode`` -> (N*M, C', T', V), ``pool``, ``forward_features``,
``forward`` = ``fc(drop_out(forward_features(x)))``, ``feature_dim``, ``num_node``, ``neck``.
"""
import math

import numpy as np
import torch
import torch.nn as nn

from net.utils.gcn_family import TenUnitGCN, bn_init, init_conv_bn, residual_branch, unit_tcn
from net.utils.graph import with_default_strategy


def conv_branch_init(conv, branches):
    weight = conv.weight
    n, k1, k2 = weight.size(0), weight.size(1), weight.size(2)
    nn.init.normal_(weight, 0, math.sqrt(2. / (n * k1 * k2 * branches)))
    nn.init.constant_(conv.bias, 0)


class unit_gcn(nn.Module):
    """Adaptive graph convolution: for each subset k, (A_k + B_k + C_k) with A_k fixed, B_k = PA[k]
    learnable (init 1e-6) and C_k = softmax(theta(x)^T phi(x)) data dependent (embeddings ``conv_a``,
    ``conv_b`` of width out/coff_embedding), followed by ``conv_d[k]``; sum, BN, + down(x), ReLU."""

    def __init__(self, in_channels, out_channels, A, coff_embedding=4, num_subset=3):
        super().__init__()
        inter_channels = out_channels // coff_embedding
        if inter_channels < 1:
            raise ValueError(f'unit_gcn: out_channels={out_channels} too small for coff_embedding={coff_embedding}')
        self.inter_c = inter_channels
        self.PA = nn.Parameter(torch.from_numpy(A.astype(np.float32)))
        nn.init.constant_(self.PA, 1e-6)
        self.register_buffer('A', torch.from_numpy(A.astype(np.float32)), persistent=False)
        self.num_subset = num_subset

        self.conv_a = nn.ModuleList()
        self.conv_b = nn.ModuleList()
        self.conv_d = nn.ModuleList()
        for _ in range(self.num_subset):
            self.conv_a.append(nn.Conv2d(in_channels, inter_channels, 1))
            self.conv_b.append(nn.Conv2d(in_channels, inter_channels, 1))
            self.conv_d.append(nn.Conv2d(in_channels, out_channels, 1))

        if in_channels != out_channels:
            self.down = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1), nn.BatchNorm2d(out_channels))
        else:
            self.down = nn.Identity()

        self.bn = nn.BatchNorm2d(out_channels)
        self.soft = nn.Softmax(-2)
        self.relu = nn.ReLU()

        init_conv_bn(self)
        bn_init(self.bn, 1e-6)
        for i in range(self.num_subset):
            conv_branch_init(self.conv_d[i], self.num_subset)

    def forward(self, x):
        N, C, T, V = x.size()
        A = self.A + self.PA
        y = None
        for i in range(self.num_subset):
            A1 = self.conv_a[i](x).permute(0, 3, 1, 2).contiguous().view(N, V, self.inter_c * T)
            A2 = self.conv_b[i](x).view(N, self.inter_c * T, V)
            A1 = self.soft(torch.matmul(A1, A2) / A1.size(-1))  # N V V
            A1 = A1 + A[i]
            A2 = x.view(N, C * T, V)
            z = self.conv_d[i](torch.matmul(A2, A1).view(N, C, T, V))
            y = z + y if y is not None else z
        y = self.bn(y)
        y = y + self.down(x)
        return self.relu(y)


class TCN_GCN_unit(nn.Module):
    """unit_gcn -> unit_tcn (9x1, stride), + residual (none / identity / 1x1 unit_tcn), ReLU."""

    def __init__(self, in_channels, out_channels, A, stride=1, residual=True):
        super().__init__()
        self.gcn1 = unit_gcn(in_channels, out_channels, A)
        self.tcn1 = unit_tcn(out_channels, out_channels, stride=stride)
        self.relu = nn.ReLU()
        self.residual = residual_branch(residual, in_channels, out_channels, stride)

    def forward(self, x):
        x = self.tcn1(self.gcn1(x)) + self.residual(x)
        return self.relu(x)


class Model(TenUnitGCN):
    """2s-AGCN (one stream).  Input (N, C, T, V, M), output logits (N, num_class).

    Args:
        in_channels: C of the input (3 for joint or bone stream).
        num_class: size of ``fc``.
        graph_args: ``Graph`` arguments (layout, strategy); the strategy must give 3 subsets: 'agcn' (the
            reference graph, default) or 'spatial' (ST-GCN's partition).
        num_person: M; ``data_bn`` normalises M*V*C channels as the reference, so M is fixed at build time.
        base_channel: c, the widths of the 10 blocks are c,c,c,c,2c(s2),2c,2c,4c(s2),4c,4c (reference 64).
        drop_out: dropout on the pooled features before ``fc`` (0 = none, the reference has none).
    """

    display_name = '2s-AGCN'

    def __init__(self, in_channels=3, num_class=60, graph_args=None, num_person=2, base_channel=64, drop_out=0):
        super().__init__(TCN_GCN_unit, in_channels, num_class, with_default_strategy(graph_args, 'agcn'),
                         num_person, base_channel, drop_out)
