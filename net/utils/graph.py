"""The skeleton graphs of the encoders, built from a layout in ``layouts.py``.

``Graph(layout, strategy, max_hop, dilation).A`` is the (K, V, V) stack of normalised adjacency
subsets used by the graph convolution.  Strategies ``uniform`` / ``distance`` / ``spatial`` are ST-GCN's
partitions (Yan et al., AAAI 2018; the numbers equal those of the reference ST-GCN code).  Strategy
``agcn`` is the graph of 2s-AGCN and CTR-GCN (their ``graph/tools.py:get_spatial_graph``, there called
'spatial'): three subsets, the identity, the inward adjacency (each joint -> its parent towards the
layout's centre) and the outward adjacency (parent -> child), each column-normalised on its own, so the
diagonal is 1 and no self link enters the directed subsets.
"""
import numpy as np

from .layouts import get_layout


def get_hop_distance(num_node, edge, max_hop=1):
    """Hop distance between joints (inf beyond ``max_hop``); ``edge`` includes the self links."""
    A = np.zeros((num_node, num_node))
    for i, j in edge:
        A[j, i] = 1
        A[i, j] = 1
    hop_dis = np.zeros((num_node, num_node)) + np.inf
    transfer_mat = [np.linalg.matrix_power(A, d) for d in range(max_hop + 1)]
    arrive_mat = np.stack(transfer_mat) > 0
    for d in range(max_hop, -1, -1):
        hop_dis[arrive_mat[d]] = d
    return hop_dis


def normalize_digraph(A):
    """Column normalisation A D^-1 (ST-GCN eq. 9 with the in-degree of each column)."""
    Dl = np.sum(A, 0)
    Dn = np.zeros_like(A)
    nonzero = Dl > 0
    Dn[nonzero, nonzero] = 1.0 / Dl[nonzero]
    return A @ Dn


def directed_edges(layout):
    """``(inward, outward)`` 0-based links of a layout: inward = (joint, parent) for every joint but the
    centre of the layout's tree (``Layout.parents``), outward = the reversed pairs.  For ``ntu-rgb+d`` and
    ``nw-ucla`` these are the reference graphs' ``inward`` / ``outward`` lists as sets."""
    inward = [(v, p) for v, p in enumerate(layout.parents) if v != p]
    return inward, [(p, v) for v, p in inward]


def link_matrix(links, num_node):
    """(V, V) 0/1 matrix with entry [j, i] = 1 for every link (i, j) (the reference's ``edge2mat``)."""
    A = np.zeros((num_node, num_node))
    for i, j in links:
        A[j, i] = 1
    return A


def agcn_adjacency(layout):
    """(3, V, V): I, column-normalised inward, column-normalised outward (2s-AGCN / CTR-GCN)."""
    inward, outward = directed_edges(layout)
    V = layout.num_node
    return np.stack((np.eye(V), normalize_digraph(link_matrix(inward, V)),
                     normalize_digraph(link_matrix(outward, V))))


STRATEGIES = ('uniform', 'distance', 'spatial', 'agcn')


class Graph:
    """Adjacency subsets for the ``uniform``, ``distance`` and ``spatial`` partition strategies of ST-GCN
    and the ``agcn`` graph of 2s-AGCN / CTR-GCN (module docstring).

    Args:
        layout: a layout name ('ntu-rgb+d', 'nw-ucla', 'openpose'), or a dict describing a custom
            layout (see ``net/utils/layouts.py``).
        strategy: 'uniform' | 'distance' | 'spatial' | 'agcn'.
        max_hop: neighbourhood radius; dilation: hop step.
    """

    def __init__(self, layout='ntu-rgb+d', strategy='spatial', max_hop=1, dilation=1):
        self.layout = get_layout(layout)
        self.max_hop = max_hop
        self.dilation = dilation
        self.num_node = self.layout.num_node
        self.center = self.layout.center
        self_link = [(i, i) for i in range(self.num_node)]
        self.edge = self_link + list(self.layout.edges)
        self.hop_dis = get_hop_distance(self.num_node, self.edge, max_hop=max_hop)
        self.A = self.get_adjacency(strategy)

    def __str__(self):
        return str(self.A)

    def get_adjacency(self, strategy):
        if strategy == 'agcn':
            return agcn_adjacency(self.layout)
        valid_hop = range(0, self.max_hop + 1, self.dilation)
        adjacency = np.zeros((self.num_node, self.num_node))
        for hop in valid_hop:
            adjacency[self.hop_dis == hop] = 1
        normalize_adjacency = normalize_digraph(adjacency)

        if strategy == 'uniform':
            return normalize_adjacency[None]
        if strategy == 'distance':
            A = np.zeros((len(valid_hop), self.num_node, self.num_node))
            for i, hop in enumerate(valid_hop):
                A[i][self.hop_dis == hop] = normalize_adjacency[self.hop_dis == hop]
            return A
        if strategy == 'spatial':
            dist_to_center = self.hop_dis[:, self.center]
            A = []
            for hop in valid_hop:
                at_hop = self.hop_dis == hop                       # [j, i]
                dj = dist_to_center[:, None]                       # distance of j
                di = dist_to_center[None, :]                       # distance of i
                a_root = np.where(at_hop & (dj == di), normalize_adjacency, 0.0)
                a_close = np.where(at_hop & (dj > di), normalize_adjacency, 0.0)
                a_further = np.where(at_hop & (dj < di), normalize_adjacency, 0.0)
                if hop == 0:
                    A.append(a_root)
                else:
                    A.append(a_root + a_close)
                    A.append(a_further)
            return np.stack(A)
        raise ValueError(f"graph_args.strategy={strategy!r} is unknown; use one of {', '.join(STRATEGIES)}")


def with_default_strategy(graph_args, strategy):
    """``graph_args`` (None or a dict) completed with the NTU layout and ``strategy`` where not given."""
    args = dict(graph_args or {})
    args.setdefault('layout', 'ntu-rgb+d')
    args.setdefault('strategy', strategy)
    return args
