"""CTR-GCN encoder (Chen et al., "Channel-wise Topology Refinement Graph Convolution for Skeleton-Based
Action Recognition", ICCV 2021), after Uason-Chen's ``model/ctrgcn.py``.

Module and parameter names follow the reference (``data_bn``, ``l1``..``l10`` with ``gcn1.convs.k.conv1..4``,
``gcn1.PA``, ``gcn1.alpha``, ``tcn1.branches``, ``fc``) so a reference checkpoint loads with
``strict=True``; the weight initialisation is the reference's (kaiming fan_out convs, BN 1/0, the gcn
output BN 1e-6, ``fc`` normal std sqrt(2/num_class)).  The adjacency (initial PA) is the 3-subset
'spatial' partition of our ``net.utils.graph.Graph`` instead of the reference's identity / inward /
outward matrices.

Interface as ``net.st_gcn.Model``: ``encode`` -> (N*M, C', T', V), ``pool``, ``forward_features``,
``forward`` = ``fc(drop_out(forward_features(x)))``, ``feature_dim``, ``num_node``, ``neck``.
"""
import math

import numpy as np
import torch
import torch.nn as nn

from net.utils.graph import Graph


def conv_init(conv):
    if conv.weight is not None:
        nn.init.kaiming_normal_(conv.weight, mode='fan_out')
    if conv.bias is not None:
        nn.init.constant_(conv.bias, 0)


def bn_init(bn, scale):
    nn.init.constant_(bn.weight, scale)
    nn.init.constant_(bn.bias, 0)


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


class _Zero(nn.Module):
    def forward(self, x):
        return 0


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
            self.residual = _Zero()
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
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                conv_init(m)
            elif isinstance(m, nn.BatchNorm2d):
                bn_init(m, 1)

    def forward(self, x, A=None, alpha=1):
        x1, x2, x3 = self.conv1(x).mean(-2), self.conv2(x).mean(-2), self.conv3(x)
        x1 = self.tanh(x1.unsqueeze(-1) - x2.unsqueeze(-2))
        x1 = self.conv4(x1) * alpha + (A.unsqueeze(0).unsqueeze(0) if A is not None else 0)  # N,C,V,V
        return torch.einsum('ncuv,nctv->nctu', x1, x3)


class unit_tcn(nn.Module):
    def __init__(self, in_channels, out_channels, kernel_size=9, stride=1):
        super().__init__()
        pad = int((kernel_size - 1) / 2)
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=(kernel_size, 1), padding=(pad, 0),
                              stride=(stride, 1))
        self.bn = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        conv_init(self.conv)
        bn_init(self.bn, 1)

    def forward(self, x):
        return self.bn(self.conv(x))


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
            self.down = _Zero()
        if self.adaptive:
            self.PA = nn.Parameter(torch.from_numpy(A.astype(np.float32)))
        else:
            self.register_buffer('A', torch.from_numpy(A.astype(np.float32)), persistent=False)
        self.alpha = nn.Parameter(torch.zeros(1))
        self.bn = nn.BatchNorm2d(out_channels)
        self.soft = nn.Softmax(-2)
        self.relu = nn.ReLU(inplace=True)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                conv_init(m)
            elif isinstance(m, nn.BatchNorm2d):
                bn_init(m, 1)
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
        if not residual:
            self.residual = _Zero()
        elif in_channels == out_channels and stride == 1:
            self.residual = nn.Identity()
        else:
            self.residual = unit_tcn(in_channels, out_channels, kernel_size=1, stride=stride)

    def forward(self, x):
        return self.relu(self.tcn1(self.gcn1(x)) + self.residual(x))


class Model(nn.Module):
    """CTR-GCN.  Input (N, C, T, V, M), output logits (N, num_class).

    Args:
        in_channels: C of the input (3 for joint/bone/motion streams).
        num_class: size of ``fc``.
        graph_args: ``Graph`` arguments (layout, strategy; the reference uses 3 subsets = 'spatial').
        num_person: M; ``data_bn`` normalises M*V*C channels as the reference, so M is fixed at build time.
        drop_out: dropout on the pooled features before ``fc`` (reference option, default 0).
        adaptive: learnable PA (True, reference default) or the fixed A.
        base_channel: c, block widths c,c,c,c,2c(s2),2c,2c,4c(s2),4c,4c (reference 64; must be a
            multiple of 4 for the 4-branch temporal conv).
    """

    def __init__(self, in_channels=3, num_class=60, graph_args=None, num_person=2, drop_out=0, adaptive=True,
                 base_channel=64):
        super().__init__()
        graph_args = dict(graph_args or {'layout': 'ntu-rgb+d', 'strategy': 'spatial'})
        self.graph = Graph(**graph_args)
        A = self.graph.A
        self.in_channels = in_channels
        self.num_class = num_class
        self.num_node = self.num_point = A.shape[1]
        self.num_person = num_person
        self.data_bn = nn.BatchNorm1d(num_person * in_channels * self.num_node)

        c = base_channel
        kw = dict(adaptive=adaptive)
        self.l1 = TCN_GCN_unit(in_channels, c, A, residual=False, **kw)
        self.l2 = TCN_GCN_unit(c, c, A, **kw)
        self.l3 = TCN_GCN_unit(c, c, A, **kw)
        self.l4 = TCN_GCN_unit(c, c, A, **kw)
        self.l5 = TCN_GCN_unit(c, c * 2, A, stride=2, **kw)
        self.l6 = TCN_GCN_unit(c * 2, c * 2, A, **kw)
        self.l7 = TCN_GCN_unit(c * 2, c * 2, A, **kw)
        self.l8 = TCN_GCN_unit(c * 2, c * 4, A, stride=2, **kw)
        self.l9 = TCN_GCN_unit(c * 4, c * 4, A, **kw)
        self.l10 = TCN_GCN_unit(c * 4, c * 4, A, **kw)
        self.feature_dim = c * 4

        self.fc = nn.Linear(self.feature_dim, num_class)
        nn.init.normal_(self.fc.weight, 0, math.sqrt(2. / num_class))
        bn_init(self.data_bn, 1)
        self.drop_out = nn.Dropout(drop_out) if drop_out else nn.Identity()
        # optional module on the feature map after the last block (see net.st_gcn.Model)
        self.neck = None

    def blocks(self):
        return [self.l1, self.l2, self.l3, self.l4, self.l5, self.l6, self.l7, self.l8, self.l9, self.l10]

    def check_input(self, x):
        if x.dim() != 5:
            raise ValueError(f'CTR-GCN expects input of shape (N, C, T, V, M), got {tuple(x.shape)}')
        if x.size(1) != self.in_channels or x.size(3) != self.num_node or x.size(4) != self.num_person:
            raise ValueError(f'CTR-GCN built for C={self.in_channels} channels, V={self.num_node} joints '
                             f'(graph layout {self.graph.layout.name!r}) and M={self.num_person} persons, got '
                             f'data of shape {tuple(x.shape)}: set model_args.in_channels / graph_args.layout '
                             '/ num_person to match the data')

    def encode(self, x):
        """(N, C, T, V, M) -> feature map (N*M, 4c, ceil(ceil(T/2)/2), V) after ``l10`` (and ``neck``)."""
        self.check_input(x)
        N, C, T, V, M = x.size()
        x = x.permute(0, 4, 3, 1, 2).contiguous().view(N, M * V * C, T)
        x = self.data_bn(x)
        x = x.view(N, M, V, C, T).permute(0, 1, 3, 4, 2).contiguous().view(N * M, C, T, V)
        for block in self.blocks():
            x = block(x)
        if self.neck is not None:
            x = self.neck(x)
        return x

    @staticmethod
    def pool(feature_map, num_person):
        """Mean over (T', V), then over persons: (N*M, C, T', V) -> (N, C)."""
        x = feature_map.mean(dim=(2, 3))
        return x.view(-1, num_person, x.size(1)).mean(dim=1)

    def forward_features(self, x):
        return self.pool(self.encode(x), x.size(4))

    def forward(self, x):
        return self.fc(self.drop_out(self.forward_features(x)))
