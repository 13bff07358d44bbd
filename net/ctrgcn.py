"""CTR-GCN encoder (Chen et al., "Channel-wise Topology Refinement Graph Convolution for Skeleton-Based
Action Recognition", ICCV 2021), after Uason-Chen's ``model/ctrgcn.py``.

Module and parameter names follow the reference (``data_bn``, ``l1``..``l10`` with ``gcn1.convs.k.conv1..4``,
``gcn1.PA``, ``gcn1.alpha``, ``tcn1.branches``, ``fc``) so a reference checkpoint loads with
``strict=True``; the weight initialisation is the reference's (kaiming fan_out convs, BN 1/0, the gcn
output BN 1e-6, ``fc`` normal std sqrt(2/num_class)).  The adjacency (initial PA) is the reference's:
``graph_args.strategy`` defaults to ``'agcn'`` (``net.utils.graph.agcn_adjacency``: identity, normalised
inward, normalised outward, the reference's ``graph/tools.py:get_spatial_graph``); ``strategy:
'spatial'`` gives ST-GCN's partition instead (the earlier behaviour of this project).

Interface as ``net.st_gcn.Model``: ``encode`` -> (N*M, C', T', V), ``pool``, ``forward_features``,
``forward`` = ``fc(drop_out(forward_features(x)))``, ``feature_dim``, ``num_node``, ``neck``.
"""

import numpy as np
import torch
import torch.nn as nn

from net.utils.gcn_family import TenUnitGCN, Zero, bn_init, init_conv_bn, residual_branch
from net.utils.graph import with_default_strategy


def weights_init(m):
    classname = m.__class__.__name__
    if classname.find('Conv') != -1:
        if hasattr(m, 'weight'):
            nn.init.kaiming_normal_(m.weight, mode='fan_out')
        if hasattr(m, 'bias') and m.bias is not None and isinstance(m.bias, torch.Tensor):
            nn.init.constant_(m.bias, 0)
    elif classname.find('BatchNorm') != -1:
        if hasattr(m, 'weight') and m.weight is not None:
            m.weight.data.normal_(1.0, 0.02)
        if hasattr(m, 'bias') and m.bias is not None:
            m.bias.data.fill_(0)


class TemporalConv(nn.Module):
    def __init__(self, in_channels, out_channels, kernel_size, stride=1, dilation=1):
        super().__init__()
        pad = (kernel_size + (kernel_size - 1) * (dilation - 1) - 1) // 2
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=(kernel_size, 1), padding=(pad, 0),
                              stride=(stride, 1), dilation=(dilation, 1))
        self.bn = nn.BatchNorm2d(out_channels)

    def forward(self, x):
        return self.bn(self.conv(x))


class MultiScale_TemporalConv(nn.Module):
    """len(dilations) dilated (kernel_size x 1) branches, a 3x1 max-pool branch and a 1x1 branch, each of
    out_channels / (len(dilations) + 2) channels, concatenated (+ optional residual)."""

    def __init__(self, in_channels, out_channels, kernel_size=3, stride=1, dilations=(1, 2, 3, 4),
                 residual=True, residual_kernel_size=1):
        super().__init__()
        self.num_branches = len(dilations) + 2
        if out_channels % self.num_branches:
            raise ValueError(f'MultiScale_TemporalConv: out_channels={out_channels} must be divisible by '
                             f'{self.num_branches} branches')
        branch_channels = out_channels // self.num_branches
        if isinstance(kernel_size, (list, tuple)):
            assert len(kernel_size) == len(dilations)
        else:
            kernel_size = [kernel_size] * len(dilations)
        self.branches = nn.ModuleList([
            nn.Sequential(
                nn.Conv2d(in_channels, branch_channels, kernel_size=1, padding=0),
                nn.BatchNorm2d(branch_channels),
                nn.ReLU(inplace=True),
                TemporalConv(branch_channels, branch_channels, kernel_size=ks, stride=stride, dilation=dilation),
            )
            for ks, dilation in zip(kernel_size, dilations)
        ])
        self.branches.append(nn.Sequential(
            nn.Conv2d(in_channels, branch_channels, kernel_size=1, padding=0),
            nn.BatchNorm2d(branch_channels),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=(3, 1), stride=(stride, 1), padding=(1, 0)),
            nn.BatchNorm2d(branch_channels),
        ))
        self.branches.append(nn.Sequential(
            nn.Conv2d(in_channels, branch_channels, kernel_size=1, padding=0, stride=(stride, 1)),
            nn.BatchNorm2d(branch_channels),
        ))
        if not residual:
            self.residual = Zero()
        elif in_channels == out_channels and stride == 1:
            self.residual = nn.Identity()
        else:
            self.residual = TemporalConv(in_channels, out_channels, kernel_size=residual_kernel_size, stride=stride)
        self.apply(weights_init)

    def forward(self, x):
        res = self.residual(x)
        out = torch.cat([branch(x) for branch in self.branches], dim=1)
        return out + res


class CTRGC(nn.Module):
    """Channel-wise topology refinement: x1, x2 = conv1/conv2(x) averaged over T (rel channels),
    M = conv4(tanh(x1_u - x2_v)) * alpha + A (per-channel V x V topologies), y = einsum(M, conv3(x))."""

    def __init__(self, in_channels, out_channels, rel_reduction=8, mid_reduction=1):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        if in_channels == 3 or in_channels == 9:
            self.rel_channels = 8
            self.mid_channels = 16
        else:
            self.rel_channels = max(1, in_channels // rel_reduction)
            self.mid_channels = in_channels // mid_reduction
        self.conv1 = nn.Conv2d(self.in_channels, self.rel_channels, kernel_size=1)
        self.conv2 = nn.Conv2d(self.in_channels, self.rel_channels, kernel_size=1)
        self.conv3 = nn.Conv2d(self.in_channels, self.out_channels, kernel_size=1)
        self.conv4 = nn.Conv2d(self.rel_channels, self.out_channels, kernel_size=1)
        self.tanh = nn.Tanh()
        init_conv_bn(self)

    def forward(self, x, A=None, alpha=1):
        x1, x2, x3 = self.conv1(x).mean(-2), self.conv2(x).mean(-2), self.conv3(x)
        x1 = self.tanh(x1.unsqueeze(-1) - x2.unsqueeze(-2))
        x1 = self.conv4(x1) * alpha + (A.unsqueeze(0).unsqueeze(0) if A is not None else 0)  # N,C,V,V
        return torch.einsum('ncuv,nctv->nctu', x1, x3)


class unit_gcn(nn.Module):
    """Sum over the K subsets of CTRGC(x, PA[k], alpha), BN (init 1e-6), + down(x), ReLU."""

    def __init__(self, in_channels, out_channels, A, coff_embedding=4, adaptive=True, residual=True):
        super().__init__()
        self.inter_c = out_channels // coff_embedding
        self.out_c = out_channels
        self.in_c = in_channels
        self.adaptive = adaptive
        self.num_subset = A.shape[0]
        self.convs = nn.ModuleList([CTRGC(in_channels, out_channels) for _ in range(self.num_subset)])
        if residual:
            if in_channels != out_channels:
                self.down = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1), nn.BatchNorm2d(out_channels))
            else:
                self.down = nn.Identity()
        else:
            self.down = Zero()
        if self.adaptive:
            self.PA = nn.Parameter(torch.from_numpy(A.astype(np.float32)))
        else:
            self.register_buffer('A', torch.from_numpy(A.astype(np.float32)), persistent=False)
        self.alpha = nn.Parameter(torch.zeros(1))
        self.bn = nn.BatchNorm2d(out_channels)
        self.soft = nn.Softmax(-2)
        self.relu = nn.ReLU(inplace=True)
        init_conv_bn(self)
        bn_init(self.bn, 1e-6)

    def forward(self, x):
        A = self.PA if self.adaptive else self.A
        y = None
        for i in range(self.num_subset):
            z = self.convs[i](x, A[i], self.alpha)
            y = z + y if y is not None else z
        y = self.bn(y)
        y = y + self.down(x)
        return self.relu(y)


class TCN_GCN_unit(nn.Module):
    def __init__(self, in_channels, out_channels, A, stride=1, residual=True, adaptive=True, kernel_size=5,
                 dilations=(1, 2)):
        super().__init__()
        self.gcn1 = unit_gcn(in_channels, out_channels, A, adaptive=adaptive)
        self.tcn1 = MultiScale_TemporalConv(out_channels, out_channels, kernel_size=kernel_size, stride=stride,
                                            dilations=dilations, residual=False)
        self.relu = nn.ReLU(inplace=True)
        self.residual = residual_branch(residual, in_channels, out_channels, stride)

    def forward(self, x):
        return self.relu(self.tcn1(self.gcn1(x)) + self.residual(x))


class Model(TenUnitGCN):
    """CTR-GCN.  Input (N, C, T, V, M), output logits (N, num_class).

    Args:
        in_channels: C of the input (3 for joint/bone/motion streams).
        num_class: size of ``fc``.
        graph_args: ``Graph`` arguments (layout, strategy): 'agcn' (the reference graph, default) or
            'spatial' (ST-GCN's 3-subset partition).
        num_person: M; ``data_bn`` normalises M*V*C channels as the reference, so M is fixed at build time.
        drop_out: dropout on the pooled features before ``fc`` (reference option, default 0).
        adaptive: learnable PA (True, reference default) or the fixed A.
        base_channel: c, block widths c,c,c,c,2c(s2),2c,2c,4c(s2),4c,4c (reference 64; must be a
            multiple of 4 for the 4-branch temporal conv).
    """

    display_name = 'CTR-GCN'

    def __init__(self, in_channels=3, num_class=60, graph_args=None, num_person=2, drop_out=0, adaptive=True,
                 base_channel=64):
        super().__init__(TCN_GCN_unit, in_channels, num_class, with_default_strategy(graph_args, 'agcn'),
                         num_person, base_channel, drop_out,
                         adaptive=adaptive)
        self.num_point = self.num_node
