"""What 2s-AGCN and CTR-GCN share: the reference initialisers and the ten-unit backbone
(data_bn over M*V*C, units l1..l10 of widths c,c,c,c,2c(s2),2c,2c,4c(s2),4c,4c, mean pooling, dropout,
fc), with the project's encoder interface (``encode`` -> feature map, ``pool``, ``neck``)."""
import math

import torch.nn as nn

from net.utils.encoder import SkeletonEncoder
from net.utils.graph import Graph


def conv_init(conv):
    if conv.weight is not None:
        nn.init.kaiming_normal_(conv.weight, mode='fan_out')
    if conv.bias is not None:
        nn.init.constant_(conv.bias, 0)


def bn_init(bn, scale):
    nn.init.constant_(bn.weight, scale)
    nn.init.constant_(bn.bias, 0)


def init_conv_bn(module):
    """The releases' unit initialisation: every Conv2d kaiming (fan out), every BatchNorm2d weight 1."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            conv_init(m)
        elif isinstance(m, nn.BatchNorm2d):
            bn_init(m, 1)


class Zero(nn.Module):
    """The reference's ``lambda x: 0`` residual, as a module."""

    def forward(self, x):
        return 0

class unit_tcn(nn.Module):
    """Temporal convolution (kernel_size x 1, stride) + BN (no ReLU, as the reference)."""

    def __init__(self, in_channels, out_channels, kernel_size=9, stride=1):
        super().__init__()
        pad = int((kernel_size - 1) / 2)
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=(kernel_size, 1), padding=(pad, 0),
                              stride=(stride, 1))
        self.bn = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU()
        conv_init(self.conv)
        bn_init(self.bn, 1)

    def forward(self, x):
        return self.bn(self.conv(x))


def residual_branch(residual, in_channels, out_channels, stride):
    """The residual of a TCN-GCN unit in the 2s-AGCN / CTR-GCN family: none (``Zero``), the identity when
    the shape is kept, else a strided 1x1 ``unit_tcn``."""
    if not residual:
        return Zero()
    if in_channels == out_channels and stride == 1:
        return nn.Identity()
    return unit_tcn(in_channels, out_channels, kernel_size=1, stride=stride)


class TenUnitGCN(SkeletonEncoder):
    """The backbone of the 2s-AGCN / CTR-GCN family built from ``unit(in, out, A, stride=, residual=,
    **unit_kwargs)``; subclasses give ``unit`` and ``display_name``.  Parameter names follow the
    references (``data_bn``, ``l1``..``l10``, ``fc``)."""
    display_name = 'GCN'
    fixed_persons = True         # data_bn normalises over M * C * V

    def __init__(self, unit, in_channels=3, num_class=60, graph_args=None, num_person=2, base_channel=64,
                 drop_out=0, **unit_kwargs):
        super().__init__()
        graph_args = dict(graph_args or {'layout': 'ntu-rgb+d', 'strategy': 'spatial'})
        self.graph = Graph(**graph_args)
        A = self.graph.A
        if A.shape[0] != 3:
            raise ValueError(f'{self.display_name} needs 3 adjacency subsets (strategy "spatial"), got '
                             f'{A.shape[0]} from strategy {graph_args.get("strategy")!r}')
        self.in_channels = in_channels
        self.num_class = num_class
        self.num_node = A.shape[1]
        self.num_person = num_person
        self.data_bn = nn.BatchNorm1d(num_person * in_channels * self.num_node)
        c = base_channel
        widths = [(in_channels, c, 1), (c, c, 1), (c, c, 1), (c, c, 1), (c, 2 * c, 2), (2 * c, 2 * c, 1),
                  (2 * c, 2 * c, 1), (2 * c, 4 * c, 2), (4 * c, 4 * c, 1), (4 * c, 4 * c, 1)]
        for i, (cin, cout, stride) in enumerate(widths, start=1):
            setattr(self, f'l{i}', unit(cin, cout, A, stride=stride, residual=i > 1, **unit_kwargs))
        self.feature_dim = 4 * c
        self.fc = nn.Linear(self.feature_dim, num_class)
        nn.init.normal_(self.fc.weight, 0, math.sqrt(2. / num_class))
        bn_init(self.data_bn, 1)
        self.drop_out = nn.Dropout(drop_out) if drop_out else nn.Identity()
        # optional module on the feature map after the last block (see net.st_gcn.Model)
        self.neck = None

    def blocks(self):
        return [getattr(self, f'l{i}') for i in range(1, 11)]

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
