"""Multi-scale motion (MsM) attention of MsMCLR (section 3.2, Fig. 3(b) and Fig. 5).

The query encoder's feature map x~ (N, C, T, V) is merged into joint (V nodes), part (P groups of 2-3
joints) and body (B groups of 4-6 joints) scales by averaging node features (the function Phi of
section 3.2.1); the groups come from the skeleton layout (``net/utils/layouts.py``).  Per scale
(section 3.2.2): 1x1 conv reducing channels -> BatchNorm -> inter-frame difference (t+1 minus t) and
inter-node difference (node v+1 minus v), summed and averaged (``diff_mode``: all | frame | node,
Table 5) -> flattened along time, one token per node -> scaled dot-product attention map (eq. 1) over
the nodes, applied to the reduced features and added to them -> 1x1 conv back to C -> sigmoid ->
x * att + x.
"""
import torch
import torch.nn as nn

from net.utils.layouts import get_layout

DIFF_MODES = ('all', 'frame', 'node')


def group_average_matrix(groups, num_node):
    """(V, S) matrix whose column s averages the joints of group s (``x @ matrix`` merges nodes)."""
    matrix = torch.zeros(num_node, len(groups))
    for s, group in enumerate(groups):
        matrix[list(group), s] = 1.0 / len(group)
    return matrix


def motion_difference(x, mode='all'):
    """Inter-frame (x[t+1] - x[t]) and/or inter-node (x[v+1] - x[v]) differences of x (N, C, T, S),
    zero-padded at the end to keep the shape; 'all' averages the two (MsMCLR Fig. 5 (a)-(c))."""
    if mode not in DIFF_MODES:
        raise ValueError(f"model_args.diff_mode={mode!r}: use one of {', '.join(DIFF_MODES)}")
    frame = torch.zeros_like(x)
    frame[:, :, :-1] = x[:, :, 1:] - x[:, :, :-1]
    if mode == 'frame':
        return frame
    node = torch.zeros_like(x)
    node[..., :-1] = x[..., 1:] - x[..., :-1]
    if mode == 'node':
        return node
    return (frame + node) / 2


class MotionAttention(nn.Module):
    """Motion attention for one scale: (N, C, T, S) -> (N, C, T, S)."""

    def __init__(self, channels, reduction=4, diff_mode='all'):
        super().__init__()
        if diff_mode not in DIFF_MODES:
            raise ValueError(f"model_args.diff_mode={diff_mode!r}: use one of {', '.join(DIFF_MODES)}")
        inner = max(1, channels // reduction)
        self.reduce = nn.Sequential(nn.Conv2d(channels, inner, 1), nn.BatchNorm2d(inner))
        self.expand = nn.Conv2d(inner, channels, 1)
        self.diff_mode = diff_mode

    def forward(self, x):
        N, _, T, S = x.shape
        r = self.reduce(x)                                             # (N, C', T, S)
        motion = motion_difference(r, self.diff_mode)
        tokens = motion.permute(0, 3, 1, 2).reshape(N, S, -1)          # one token per node, flattened over (C', T)
        att_map = torch.softmax(tokens @ tokens.transpose(1, 2) / tokens.size(-1) ** 0.5, dim=-1)   # (N, S, S)
        values = r.permute(0, 3, 1, 2).reshape(N, S, -1)
        attended = (att_map @ values).view(N, S, r.size(1), T).permute(0, 2, 3, 1)
        att = torch.sigmoid(self.expand(r + attended))
        return x * att + x


class MsMAttention(nn.Module):
    """Joint / part / body motion attention on a feature map; returns one map per scale.

    Args:
        channels: C of the feature map; layout: the skeleton layout (name or dict) with part and body
            groups; multi_scale: False keeps only the joint scale (Table 4 'w/o Ms');
        reduction: channel reduction of the 1x1 conv; diff_mode: all | frame | node (Table 5)."""

    def __init__(self, channels, layout='ntu-rgb+d', multi_scale=True, reduction=2, diff_mode='all'):
        super().__init__()
        layout = get_layout(layout)
        scales = {'joint': [(v,) for v in range(layout.num_node)]}
        if multi_scale:
            for name, groups in (('part', layout.parts), ('body', layout.bodies)):
                if not groups:
                    raise ValueError(f"skeleton layout '{layout.name}' defines no {name} groups: add "
                                     f"'{name}s' to the layout, or set model_args.multi_scale: False")
                scales[name] = groups
        self.scales = tuple(scales)
        for name, groups in scales.items():
            self.register_buffer(f'merge_{name}', group_average_matrix(groups, layout.num_node), persistent=False)
        self.attention = nn.ModuleDict({name: MotionAttention(channels, reduction, diff_mode) for name in scales})

    def forward(self, x):
        """x: (N, C, T, V) -> {scale: (N, C, T, S)} with S = V, P or B."""
        return {name: self.attention[name](x @ getattr(self, f'merge_{name}')) for name in self.scales}
