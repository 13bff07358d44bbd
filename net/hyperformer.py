"""Hyperformer encoder (Zhou, Cheng, Li, Fang, Geng, Xie, Keuper, "Hypergraph Transformer for Skeleton-based
Action Recognition", arXiv:2211.09590, 2022), after the authors' release (ZhouYuxuanYX/Hyperformer,
``model/Hyperformer.py``); written for this project, see docs/METHODS.md ("Hyperformer and BlockGCN").

Ten units ``l1``..``l10`` of width ``head_channels * num_heads`` (24 x 9 = 216; stride 2 at ``l5`` and
``l8``).  Each unit is ``vit1`` (a pre-norm hypergraph self-attention over the joints of each frame,
``HyperSA``) then ``tcn1`` (CTR-GCN's multi-scale temporal convolution, kernel 5, dilations 1 and 2), plus
the unit residual.  The self-attention of a frame is, per head (eq. 9 of the paper):

    score(i, j) = q_i.k_j + q_i.r_{hop(i,j)} + q_i.e_j + w.e_j,    A = softmax(score * d^-1/2)
    out = (alpha * A + O) v

with ``r`` a learned embedding per shortest-path hop distance (``attn.rpe``), ``e_j`` the hyperedge
(body-part) embedding of joint j's part: the mean of the part's joints projected by ``pe_proj``, ``w``
a learned per-head vector (``attn.w1``), ``O`` a learned per-head V x V matrix initialised to I
(``attn.outer``) and ``alpha`` a learned scalar initialised to 0 (``attn.alpha``).

Body parts come from the layout's data: ``joint_label`` (one part index per joint) if given, else the
layout's ``bodies`` groups (``net/utils/layouts.py``), which must then cover every joint once.

Parameter and module names follow the release (``data_bn``, ``l{i}.vit1.norm1``, ``l{i}.vit1.attn.{q,kv,
proj,rpe,w1,outer,alpha}``, ``l{i}.vit1.pe_proj`` / ``skip_proj``, ``l{i}.tcn1.branches``, ``fc``), so
the parameter count equals the release's: 2,729,194 for NTU-60 with the release's graph, 2,731,354 with
the project's NTU layout (one more hop distance: the release hangs hand tip and thumb both on the hand
joint), 2,695,754 for NW-UCLA; the README's table gives 2.6 M.  Interface as ``net.ctrgcn.Model``:
``encode`` -> (N*M, C', T', V), ``pool``, ``forward_features``, ``forward``, ``feature_dim``, ``num_node``,
``neck``.
"""
import math

import numpy as np
import torch
import torch.nn as nn

from net.ctrgcn import MultiScale_TemporalConv
from net.utils.gcn_family import TenUnitGCN, bn_init, residual_branch
from net.utils.graph import Graph, get_hop_distance


def positive_int(value, key):
    """``value`` as an int >= 1, else a one-line error naming ``model_args.<key>``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f'model_args.{key}={value!r}: must be a positive integer')
    return int(value)


def hop_matrix(graph):
    """(V, V) long tensor of shortest-path hop counts on ``graph`` (0 on the diagonal and, as in the
    releases, for joints that cannot reach each other)."""
    hops = get_hop_distance(graph.num_node, graph.edge, max_hop=graph.num_node - 1)
    hops[np.isinf(hops)] = 0
    return torch.from_numpy(hops.astype(np.int64))


class UnitBackbone(TenUnitGCN):
    """What Hyperformer and BlockGCN share with the CTR-GCN family (``TenUnitGCN``: ``check_input``,
    ``encode`` over ``blocks()``, ``pool``, ``forward``) with their own unit widths: the graph from
    ``graph_args`` (only its joints and bones are used), ``data_bn`` over M*V*``bn_channels``, ``fc``
    on ``feature_dim`` with the reference initialisation, dropout and ``neck``."""

    def __init__(self, in_channels, num_class, graph_args, num_person, feature_dim, drop_out, bn_channels):
        nn.Module.__init__(self)
        graph_args = dict(graph_args or {'layout': 'ntu-rgb+d', 'strategy': 'spatial'})
        self.graph = Graph(**graph_args)
        self.in_channels = positive_int(in_channels, 'in_channels')
        self.num_class = positive_int(num_class, 'num_class')
        self.num_person = positive_int(num_person, 'num_person')
        self.num_node = self.num_point = self.graph.num_node
        self.data_bn = nn.BatchNorm1d(self.num_person * bn_channels * self.num_node)
        bn_init(self.data_bn, 1)
        self.feature_dim = feature_dim
        self.fc = nn.Linear(feature_dim, self.num_class)
        nn.init.normal_(self.fc.weight, 0, math.sqrt(2. / self.num_class))
        if isinstance(drop_out, bool) or not isinstance(drop_out, (int, float)) or not 0 <= drop_out < 1:
            raise ValueError(f'model_args.drop_out={drop_out!r}: must be a number in [0, 1)')
        self.drop_out = nn.Dropout(drop_out) if drop_out else nn.Identity()
        self.neck = None


class SpatialTemporalUnit(nn.Module):
    """The releases' unit: a spatial module (attribute ``spatial_name``: Hyperformer's ``vit1``, BlockGCN's
    ``gcn1``) -> CTR-GCN's multi-scale temporal convolution ``tcn1``, + the unit residual (none, identity or
    a strided 1x1 ``unit_tcn``), ReLU."""

    def __init__(self, spatial_name, spatial, in_channels, out_channels, stride=1, residual=True, kernel_size=5,
                 dilations=(1, 2)):
        super().__init__()
        self.spatial_name = spatial_name
        setattr(self, spatial_name, spatial)
        self.tcn1 = MultiScale_TemporalConv(out_channels, out_channels, kernel_size=kernel_size, stride=stride,
                                            dilations=list(dilations), residual=False)
        self.relu = nn.ReLU(inplace=True)
        self.residual = residual_branch(residual, in_channels, out_channels, stride)

    def forward(self, x):
        return self.relu(self.tcn1(getattr(self, self.spatial_name)(x)) + self.residual(x))


def part_labels(layout, joint_label):
    """One body-part index per joint: ``joint_label`` if given, else from the layout's ``bodies``."""
    V = layout.num_node
    if joint_label is None:
        if not layout.bodies:
            raise ValueError(f"Hyperformer needs body parts: layout '{layout.name}' has no 'bodies' groups; "
                             'give model_args.joint_label (one part index per joint)')
        label = [-1] * V
        for g, group in enumerate(layout.bodies):
            for j in group:
                if label[j] >= 0:
                    raise ValueError(f"Hyperformer: joint {j} is in two 'bodies' groups of layout "
                                     f"'{layout.name}'; give model_args.joint_label instead")
                label[j] = g
        missing = [j for j, g in enumerate(label) if g < 0]
        if missing:
            raise ValueError(f"Hyperformer: joints {missing} are in no 'bodies' group of layout "
                             f"'{layout.name}'; give model_args.joint_label instead")
        return label
    if (not isinstance(joint_label, (list, tuple)) or len(joint_label) != V
            or not all(isinstance(g, (int, np.integer)) and not isinstance(g, bool) and g >= 0
                       for g in joint_label)):
        raise ValueError(f'model_args.joint_label={joint_label!r}: must be a list of {V} non-negative part '
                         f"indices, one per joint of layout '{layout.name}'")
    unused = sorted(set(range(max(joint_label) + 1)) - set(joint_label))
    if unused:
        raise ValueError(f'model_args.joint_label={list(joint_label)!r}: part indices {unused} have no joint '
                         '(use 0..G-1, each at least once)')
    return [int(g) for g in joint_label]


class HyperSA(nn.Module):
    """Multi-head self-attention over the V joints of every frame with the hop-distance and hyperedge
    terms of the release (``MHSA``).  ``forward(x, e)``: x (N, dim_in, T, V) normalised features,
    e (N, dim, T, V) hyperedge embedding of each joint's part -> (N, dim, T, V)."""

    def __init__(self, dim_in, dim, hops, num_heads, proj_groups=6):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f'Hyperformer: width {dim} is not divisible by model_args.num_heads={num_heads}')
        if dim % proj_groups:
            raise ValueError(f'Hyperformer: width {dim} is not divisible by the {proj_groups} groups of the '
                             'output projection; choose model_args.head_channels * num_heads divisible by 6')
        V = hops.shape[0]
        self.num_heads, self.dim = num_heads, dim
        self.head_dim = dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.register_buffer('hops', hops.clone(), persistent=False)
        self.rpe = nn.Parameter(torch.zeros(int(hops.max()) + 1, dim))
        self.w1 = nn.Parameter(torch.zeros(num_heads, self.head_dim))
        self.outer = nn.Parameter(torch.eye(V).repeat(num_heads, 1, 1))
        self.alpha = nn.Parameter(torch.zeros(1))
        self.kv = nn.Conv2d(dim_in, 2 * dim, 1, bias=False)
        self.q = nn.Conv2d(dim_in, dim, 1, bias=False)
        self.proj = nn.Conv2d(dim, dim, 1, groups=proj_groups)

    def heads(self, t):
        """(N, H*d, T, V) -> (N, T, H, V, d)."""
        N, _, T, V = t.shape
        return t.view(N, self.num_heads, self.head_dim, T, V).permute(0, 3, 1, 4, 2)

    def forward(self, x, e):
        N, _, T, V = x.shape
        k, v = (self.heads(t) for t in self.kv(x).chunk(2, dim=1))
        q, e = self.heads(self.q(x)), self.heads(e)
        r = self.rpe[self.hops].view(V, V, self.num_heads, self.head_dim)      # hop-distance embedding
        score = (q @ k.transpose(-2, -1)
                 + torch.einsum('nthic,ijhc->nthij', q, r)
                 + q @ e.transpose(-2, -1)
                 + torch.einsum('hc,nthjc->nthj', self.w1, e).unsqueeze(-2))
        attn = (score * self.scale).softmax(dim=-1)
        out = (self.alpha * attn + self.outer) @ v                              # (N, T, H, V, d)
        out = out.permute(0, 2, 4, 1, 3).reshape(N, self.dim, T, V)
        return self.proj(out)


class HyperViT(nn.Module):
    """``vit1`` of a unit: x + HyperSA(LayerNorm(x), e) with e the projected part means of x (the
    release's ``unit_vit``; ``skip_proj`` when the width changes, no MLP)."""

    def __init__(self, dim_in, dim, hops, joint_label, num_heads, residual=True):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim_in)
        self.attn = HyperSA(dim_in, dim, hops, num_heads)
        self.pe_proj = nn.Conv2d(dim_in, dim, 1, bias=False)
        if residual and dim_in != dim:
            self.skip_proj = nn.Conv2d(dim_in, dim, 1, bias=False)
        self.residual = residual
        label = torch.tensor(joint_label)
        onehot = torch.nn.functional.one_hot(label).float()                   # (V, G)
        self.register_buffer('part_mean', onehot / onehot.sum(0, keepdim=True), persistent=False)
        self.register_buffer('joint_label', label, persistent=False)

    def forward(self, x):
        e = self.pe_proj(x @ self.part_mean)[..., self.joint_label]            # (N, dim, T, V)
        y = self.attn(self.norm1(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2), e)
        if not self.residual:
            return y
        return (self.skip_proj(x) if hasattr(self, 'skip_proj') else x) + y


class TCN_ViT_unit(SpatialTemporalUnit):
    def __init__(self, in_channels, out_channels, hops, joint_label, num_heads, stride=1, residual=True, **tcn):
        super().__init__('vit1', HyperViT(in_channels, out_channels, hops, joint_label, num_heads, residual=residual),
                         in_channels, out_channels, stride=stride, residual=residual, **tcn)


class Model(UnitBackbone):
    """Hyperformer.  Input (N, C, T, V, M), output logits (N, num_class).

    Args:
        in_channels, num_class, num_person, drop_out: as ``net.ctrgcn.Model``.
        graph_args: ``Graph`` arguments; the layout's bones give the hop distances, its ``bodies`` the
            parts (unless ``joint_label``).
        num_heads: attention heads (release 9); the width is ``head_channels * num_heads`` (24 x 9).
        joint_label: optional list of one part index per joint (the release's configs give one).
        kernel_size, dilations: of the multi-scale temporal convolution (release 5, (1, 2)).
    """

    display_name = 'Hyperformer'

    def __init__(self, in_channels=3, num_class=60, graph_args=None, num_person=2, drop_out=0, num_heads=9,
                 head_channels=24, joint_label=None, kernel_size=5, dilations=(1, 2)):
        num_heads = positive_int(num_heads, 'num_heads')
        width = positive_int(head_channels, 'head_channels') * num_heads
        super().__init__(in_channels, num_class, graph_args, num_person, width, drop_out, in_channels)
        if width % (len(dilations) + 2):
            raise ValueError(f'model_args.head_channels * num_heads = {width} must be divisible by the '
                             f'{len(dilations) + 2} temporal branches')
        self.num_heads = num_heads
        self.joint_label = part_labels(self.graph.layout, joint_label)
        hops = hop_matrix(self.graph)
        for i in range(1, 11):
            setattr(self, f'l{i}', TCN_ViT_unit(self.in_channels if i == 1 else width, width, hops,
                                                self.joint_label, num_heads, stride=2 if i in (5, 8) else 1,
                                                kernel_size=kernel_size, dilations=dilations))
