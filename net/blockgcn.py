"""BlockGCN encoder (Zhou, Yan, Cheng, Yan, Dai, Hua, "BlockGCN: Redefine Topology Awareness for
Skeleton-Based Action Recognition", CVPR 2024, pp. 2049-2058), after the authors' release
(ZhouYuxuanYX/BlockGCN, ``model/BlockGCN.py``); written for this project, see docs/METHODS.md
("Hyperformer and BlockGCN").

* Joint embedding: ``to_joint_embedding`` (Linear C -> 128) + ``pos_embedding`` (1, V, 128), then
  ``data_bn`` over M*V*128.
* Ten units ``l1``..``l10`` (128 x4, 256 (stride 2), 256 x2, 256 (stride 2), 256 x2), each
  ``gcn1`` (BlockGC) -> ``tcn1`` (CTR-GCN's multi-scale temporal convolution, kernel 5, dilations 1, 2)
  + residual.  BlockGC (``unit_gcn``) splits the channels into H = 8 groups (1 when C_in <= 8); for each
  of 3 subsets k it aggregates every group over the joints with its own V x V matrix
  ``fc1[k, h] / ||fc1[k, h]||_col + E_k,h / ||E_k,h||_col`` (``fc1`` initialised to I; E is the learned
  hop-distance embedding ``rpe[k, h, hop(i, j)]``, the paper's "topological encoding" of shortest-path
  distances), then projects with a grouped 1x1 conv ``fc2[k]``; the 3 subsets are summed, BN, + ``down``,
  ReLU.
* Persistent-homology encoding (``topo`` + ``t0``..``t9``): per sample, the V x V distances between the
  joints' time-mean positions (persons averaged), min-max scaled over the batch; their rows are points
  in R^V whose 0-dimensional Vietoris-Rips persistence diagram (births 0, deaths = the minimum spanning
  tree's edge lengths) goes through a 64-element structure-element layer (``topo.pl.centres``,
  ``topo.pl.sharpness``: sum_j exp(-(s0^2 c0^2 + s1^2 (c1 - d_j)^2))); ``t{i}`` (Linear 64 -> C_i, BN,
  ReLU) adds it to the input of unit i+1 as a per-channel offset.  The release computes the diagram with
  torch-topological / giotto-ph; here it is the MST computed in torch (same values, no extra package).

Names follow the release (``to_joint_embedding``, ``pos_embedding``, ``data_bn``, ``l{i}.gcn1.{fc1,fc2,
rpe,down,bn}``, ``l{i}.tcn1``, ``t{i}.mlp``/``bn``, ``topo.pl``, ``fc``), so the parameter count equals
the release's: 1,372,780 for NTU-60 with the release's graph, 1,373,020 with the project's NTU layout,
1,297,370 for NW-UCLA (the paper states 1.3 M; 128,896 of these are the persistent-homology branch).
Interface as ``net.ctrgcn.Model`` (``encode`` -> (N*M, 256, T', V), ``pool``, ``forward`` ...).
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from net.hyperformer import SpatialTemporalUnit, UnitBackbone, hop_matrix, positive_int
from net.utils.gcn_family import init_conv_bn

EMBED = 128        # joint-embedding width (the release's constant)
TOPO_ELEMENTS = 64  # structure elements of the persistence-diagram layer


class unit_gcn(nn.Module):
    """BlockGC: per-group spatial aggregation with normalised learned matrices + hop encoding, then a
    grouped 1x1 projection, summed over ``num_subset`` subsets."""

    def __init__(self, in_channels, out_channels, hops, num_subset=3, num_groups=8):
        super().__init__()
        V = hops.shape[0]
        self.num_heads = num_groups if in_channels > num_groups else 1
        if in_channels % self.num_heads or out_channels % self.num_heads:
            raise ValueError(f'BlockGCN: widths {in_channels}/{out_channels} are not divisible by '
                             f'{self.num_heads} groups')
        self.num_subset = num_subset
        self.register_buffer('hops', hops.clone(), persistent=False)
        self.fc1 = nn.Parameter(torch.eye(V).repeat(num_subset, self.num_heads, 1, 1))
        self.fc2 = nn.ModuleList([nn.Conv2d(in_channels, out_channels, 1, groups=self.num_heads)
                                  for _ in range(num_subset)])
        self.rpe = nn.Parameter(torch.zeros(num_subset, self.num_heads, int(hops.max()) + 1))
        if in_channels != out_channels:
            self.down = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1), nn.BatchNorm2d(out_channels))
        else:
            self.down = nn.Identity()
        self.bn = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        init_conv_bn(self)     # the release sets bn to 1e-6 and then re-initialises every BN to 1

    @staticmethod
    def column_norm(w):
        return torch.norm(w, 2, dim=-2, keepdim=True) + 1e-4

    def forward(self, x):
        N, C, T, V = x.shape
        pos = self.rpe[:, :, self.hops]                                          # (K, H, V, V)
        x_in = x.view(N, self.num_heads, C // self.num_heads, T, V)
        y = None
        for k in range(self.num_subset):
            w = self.fc1[k] / self.column_norm(self.fc1[k]) + pos[k] / self.column_norm(pos[k])
            z = torch.einsum('nhctv,hvw->nhctw', x_in, w).reshape(N, C, T, V)
            z = self.fc2[k](z)
            y = z if y is None else y + z
        return self.relu(self.bn(y) + self.down(x))


class TCN_GCN_unit(SpatialTemporalUnit):
    def __init__(self, in_channels, out_channels, hops, stride=1, residual=True, **tcn):
        super().__init__('gcn1', unit_gcn(in_channels, out_channels, hops), in_channels, out_channels,
                         stride=stride, residual=residual, **tcn)


class StructureElementLayer(nn.Module):
    """Persistence diagram (B, P, 2) of (birth, death) -> (B, n_elements):
    sum_p exp(-sum_d s_ed^2 (c_ed - x_pd)^2); ``centres`` ~ U[0, 1), ``sharpness`` = 3 at init."""

    def __init__(self, n_elements=TOPO_ELEMENTS):
        super().__init__()
        self.centres = nn.Parameter(torch.rand(n_elements, 2))
        self.sharpness = nn.Parameter(torch.full((n_elements, 2), 3.0))

    def forward(self, diagram):
        diff = diagram.unsqueeze(2) - self.centres                             # (B, P, E, 2)
        return torch.exp(-(diff.pow(2) * self.sharpness.pow(2)).sum(-1)).sum(1)


def mst_edge_lengths(dist):
    """(B, V, V) distances -> (B, V-1) edge lengths of a minimum spanning tree (Prim), i.e. the deaths of
    the 0-dimensional Vietoris-Rips persistence pairs (all born at 0)."""
    B, V, _ = dist.shape
    rows = torch.arange(B, device=dist.device)
    in_tree = torch.zeros(B, V, dtype=torch.bool, device=dist.device)
    in_tree[:, 0] = True
    reach = dist[:, 0].clone()
    deaths = []
    for _ in range(V - 1):
        length, nxt = reach.masked_fill(in_tree, float('inf')).min(dim=1)
        deaths.append(length)
        in_tree[rows, nxt] = True
        reach = torch.minimum(reach, dist[rows, nxt])
    return torch.stack(deaths, dim=1)


class Topo(nn.Module):
    """Per-sample persistence-diagram features (B, 64) of the input skeleton sequence (N, M, C, T, V)."""

    def __init__(self, n_elements=TOPO_ELEMENTS):
        super().__init__()
        self.pl = StructureElementLayer(n_elements)

    def forward(self, x):
        with torch.no_grad():              # no parameter before this point: the diagram is a constant
            pos = x.float().mean(dim=1).mean(dim=2)                              # (N, C, V) time-mean joints
            dist = torch.norm(pos.unsqueeze(-1) - pos.unsqueeze(-2), dim=1)     # (N, V, V)
            lo, hi = dist.min(), dist.max()
            dist = (dist - lo) / (hi - lo).clamp_min(1e-12)                    # min-max over the batch
            deaths = mst_edge_lengths(torch.cdist(dist, dist))                 # rows of dist as points
        diagram = torch.stack((torch.zeros_like(deaths), deaths), dim=-1)       # (N, V-1, 2)
        return self.pl(diagram)


class TopoTrans(nn.Module):
    def __init__(self, out_dim, in_dim=TOPO_ELEMENTS):
        super().__init__()
        self.mlp = nn.Linear(in_dim, out_dim)
        self.bn = nn.BatchNorm1d(out_dim)
        self.relu = nn.ReLU()

    def forward(self, feature, num_person):
        """(N, 64) -> (N*M, out_dim, 1, 1), sample n's row repeated for each of its M persons."""
        x = self.mlp(feature.repeat_interleave(num_person, dim=0))
        if self.training and x.size(0) == 1:
            # a single row has no batch statistics (the release raises here): use the running ones
            bn = self.bn
            x = F.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)
        else:
            x = self.bn(x)
        return self.relu(x)[:, :, None, None]


class Model(UnitBackbone):
    """BlockGCN.  Input (N, C, T, V, M), output logits (N, num_class).

    Args:
        in_channels, num_class, num_person, drop_out: as ``net.ctrgcn.Model``.
        graph_args: ``Graph`` arguments; the layout's bones give the hop distances.
        base_channel: c, unit widths c x4, 2c x6 (release 128).
        topology: the persistent-homology encoding (``topo``, ``t0``..``t9``) on (release) or off.
        kernel_size, dilations: of the multi-scale temporal convolution (release 5, (1, 2)).
    """

    display_name = 'BlockGCN'

    def __init__(self, in_channels=3, num_class=60, graph_args=None, num_person=2, drop_out=0, base_channel=EMBED,
                 topology=True, kernel_size=5, dilations=(1, 2)):
        c = positive_int(base_channel, 'base_channel')
        super().__init__(in_channels, num_class, graph_args, num_person, 2 * c, drop_out, c)
        if c % 8 or c % (len(dilations) + 2):
            raise ValueError(f'model_args.base_channel={c} must be divisible by the 8 BlockGC groups and the '
                             f'{len(dilations) + 2} temporal branches')
        if not isinstance(topology, bool):
            raise ValueError(f'model_args.topology={topology!r}: must be true or false')
        self.to_joint_embedding = nn.Linear(self.in_channels, c)
        self.pos_embedding = nn.Parameter(torch.randn(1, self.num_node, c))
        hops = hop_matrix(self.graph)
        widths = [(c, c, 1)] * 4 + [(c, 2 * c, 2)] + [(2 * c, 2 * c, 1)] * 2 + [(2 * c, 2 * c, 2)] + \
                 [(2 * c, 2 * c, 1)] * 2
        for i, (cin, cout, stride) in enumerate(widths, start=1):
            setattr(self, f'l{i}', TCN_GCN_unit(cin, cout, hops, stride=stride, kernel_size=kernel_size,
                                                dilations=dilations))
        self.topology = topology
        if topology:
            for i, (cin, _, _) in enumerate(widths):
                setattr(self, f't{i}', TopoTrans(cin))
            self.topo = Topo()

    def encode(self, x):
        """(N, C, T, V, M) -> feature map (N*M, 2c, ceil(ceil(T/2)/2), V) after ``l10`` (and ``neck``)."""
        self.check_input(x)
        N, C, T, V, M = x.size()
        h = self.to_joint_embedding(x.permute(0, 4, 2, 3, 1)) + self.pos_embedding    # (N, M, T, V, c)
        c = h.size(-1)
        h = self.data_bn(h.permute(0, 1, 3, 4, 2).reshape(N, M * V * c, T))
        h = h.view(N, M, V, c, T).permute(0, 1, 3, 4, 2).reshape(N * M, c, T, V)
        topo = self.topo(x.permute(0, 4, 1, 2, 3)) if self.topology else None
        for i, block in enumerate(self.blocks()):
            if topo is not None:
                h = h + getattr(self, f't{i}')(topo, M)
            h = block(h)
        if self.neck is not None:
            h = self.neck(h)
        return h
