"""HCN encoder (Li et al., "Co-occurrence Feature Learning from Skeleton Data for Action Recognition and
Detection with Hierarchical Aggregation", IJCAI 2018), after huguyuehuhu's ``HCN-pytorch/model/HCN.py``.

Architecture (per person, both streams with their own weights; the motion stream sees the frame
differences x[t+1] - x[t], linearly resampled back to T frames):

    point level   conv1 (1x1, out_channel) + ReLU -> conv2 (3x1 over time, conv2_channel)
    transpose     (N, C2, T, V) -> (N, V, T, C2): the joints become the channels (co-occurrence)
    global level  conv3 (3x3, out_channel/2) + maxpool2 -> conv4 (3x3, out_channel) + Dropout2d + maxpool2
    fusion        concat(position, motion) -> conv5 (3x3, 2*out_channel) + ReLU + Dropout2d + maxpool2
                  -> conv6 (3x3, 4*out_channel) + ReLU + Dropout2d + maxpool2
    persons       element-wise max over the M persons
    head          fc7 (Linear -> fc_hidden, ReLU, Dropout) -> fc (= the reference ``fc8``)

**What** ``encode`` **returns.**  After the transpose the map has no joint axis, so ``encode`` stops
before it: it returns the point-level maps of both streams concatenated along channels,
``cat(conv2(conv1(x)), conv2m(conv1m(motion)))`` of shape (N*M, 2*conv2_channel, window_size, V)
(persons folded into the batch as in ``net.st_gcn``; ``neck`` is applied to it and must keep its shape).
The time axis is ``window_size`` whatever the input T: an input with T != window_size is first
linearly resampled in time to ``window_size`` (the HCN feeder resizes clips to the window as well).

**What** ``pool`` **does.**  Unlike the graph encoders, ``pool(feature_map, num_person)`` is not a plain
average: it runs the rest of HCN (transpose, conv3..conv6 of each stream, max over persons, fc7) and
returns the (N, fc_hidden) input of ``fc``.  Hence, exactly as for the other encoders,
``forward(x) == fc(drop_out(pool(encode(x), M)))`` and ``forward_features(x) == pool(encode(x), M)``,
and the MoCo wrappers (``fc(pool(encode(x)))``) work unchanged.  ``feature_dim`` is the channel count C'
of the ``encode`` map (as for every encoder); ``pool_dim`` (= fc_hidden) is the width of the pooled
features.  ``pool`` is a method, not a staticmethod, because it uses the head weights.

**Where CSRE attaches.**  A train-time head (``net.csre.CSRE``) takes ``encode``'s map, i.e. the output
of conv2 / conv2m: the last map with a joint axis (after the transpose the joints are channels).

Defaults follow the release (HCN-pytorch ``model/HCN.py``): conv2 has ``window_size`` channels
(``conv2_channel=None``) and fc7 512 units, i.e. 2.65 M parameters at ``window_size`` 64, out_channel 64
and 60 classes (its ``NTU-RGB-D-CS/HCN02`` experiment; its README's "64 frames / 512" row).  The paper's
32 frames (HCN01: ``window_size=32``) give 1.06 M; ``conv2_channel=32, fc_hidden=256`` are the earlier
defaults of this project.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from net.utils.encoder import SkeletonEncoder
from net.utils.graph import Graph


def _init_weights(module):
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.constant_(m.bias, 0)


class Model(SkeletonEncoder):
    """HCN (the ``SkeletonEncoder`` contract, with its own ``pool``).  Input (N, C, T, V, M) with any M (persons are max-pooled); output logits (N, num_class).

    Args:
        in_channels: C of the input.
        num_class: size of ``fc``.
        graph_args: only the layout is used, for V (HCN has no graph).
        num_person: accepted for the reference signature; any M works.
        out_channel: the reference width (64): conv1 = out_channel, conv3 = out_channel/2,
            conv4 = out_channel, conv5 = 2*out_channel, conv6 = 4*out_channel.
        window_size: frames the network runs on (64); must be >= 16.
        conv2_channel: channels of conv2 = width of the transposed map; None (default) = ``window_size``,
            as the release; must be >= 16.
        fc_hidden: width of fc7 (512, the release's ``256*2``).
        drop_out: dropout probability of the Dropout2d/Dropout layers (0.5 in the reference).
    """
    display_name = 'HCN'

    def __init__(self, in_channels=3, num_class=60, graph_args=None, num_person=2, out_channel=64,
                 window_size=64, conv2_channel=None, fc_hidden=512, drop_out=0.5):
        super().__init__()
        graph_args = dict(graph_args or {'layout': 'ntu-rgb+d', 'strategy': 'spatial'})
        self.graph = Graph(**graph_args)
        self.in_channels = in_channels
        self.num_node = V = self.graph.num_node
        self.num_person = num_person
        self.window_size = window_size
        conv2_channel = window_size if conv2_channel is None else conv2_channel
        self.conv2_channel = conv2_channel
        if window_size < 16 or conv2_channel < 16:
            raise ValueError(f'HCN needs window_size >= 16 and conv2_channel >= 16 (four 2x2 max-pools), '
                             f'got {window_size} and {conv2_channel}')
        oc = out_channel
        # position stream
        self.conv1 = nn.Sequential(nn.Conv2d(in_channels, oc, kernel_size=1), nn.ReLU())
        self.conv2 = nn.Conv2d(oc, conv2_channel, kernel_size=(3, 1), padding=(1, 0))
        self.conv3 = nn.Sequential(nn.Conv2d(V, oc // 2, kernel_size=3, padding=1), nn.MaxPool2d(2))
        self.conv4 = nn.Sequential(nn.Conv2d(oc // 2, oc, kernel_size=3, padding=1), nn.Dropout2d(p=drop_out),
                                   nn.MaxPool2d(2))
        # motion stream
        self.conv1m = nn.Sequential(nn.Conv2d(in_channels, oc, kernel_size=1), nn.ReLU())
        self.conv2m = nn.Conv2d(oc, conv2_channel, kernel_size=(3, 1), padding=(1, 0))
        self.conv3m = nn.Sequential(nn.Conv2d(V, oc // 2, kernel_size=3, padding=1), nn.MaxPool2d(2))
        self.conv4m = nn.Sequential(nn.Conv2d(oc // 2, oc, kernel_size=3, padding=1), nn.Dropout2d(p=drop_out),
                                    nn.MaxPool2d(2))
        # fusion
        self.conv5 = nn.Sequential(nn.Conv2d(oc * 2, oc * 2, kernel_size=3, padding=1), nn.ReLU(),
                                   nn.Dropout2d(p=drop_out), nn.MaxPool2d(2))
        self.conv6 = nn.Sequential(nn.Conv2d(oc * 2, oc * 4, kernel_size=3, padding=1), nn.ReLU(),
                                   nn.Dropout2d(p=drop_out), nn.MaxPool2d(2))
        flat = oc * 4 * (window_size // 16) * (conv2_channel // 16)
        self.fc7 = nn.Sequential(nn.Linear(flat, fc_hidden), nn.ReLU(), nn.Dropout(p=drop_out))
        self.fc = nn.Linear(fc_hidden, num_class)
        self.drop_out = nn.Identity()      # the head's dropout is inside fc7, as in the reference
        self.feature_dim = 2 * conv2_channel
        self.pool_dim = fc_hidden
        # optional module on the ``encode`` map (must keep its shape for the HCN head)
        self.neck = None
        _init_weights(self)

    @staticmethod
    def _resample_time(x, length):
        """(B, C, T, V) -> (B, C, length, V), linear interpolation along T."""
        if x.size(2) == length:
            return x
        return F.interpolate(x, size=(length, x.size(3)), mode='bilinear', align_corners=False)

    def encode(self, x):
        """(N, C, T, V, M) -> point-level map (N*M, 2*conv2_channel, window_size, V): channels
        [:conv2_channel] are the position stream, [conv2_channel:] the motion stream."""
        self.check_input(x)
        N, C, T, V, M = x.size()
        x = x.permute(0, 4, 1, 2, 3).reshape(N * M, C, T, V)
        x = self._resample_time(x, self.window_size)
        motion = x[:, :, 1:] - x[:, :, :-1]
        motion = self._resample_time(motion, self.window_size)
        p = self.conv2(self.conv1(x))
        m = self.conv2m(self.conv1m(motion))
        fmap = torch.cat((p, m), dim=1)
        if self.neck is not None:
            fmap = self.neck(fmap)
        return fmap

    def pool(self, feature_map, num_person):
        """The rest of HCN: (N*M, 2*conv2_channel, window_size, V) -> fc7 features (N, fc_hidden)."""
        p, m = feature_map.split(self.conv2_channel, dim=1)
        p = self.conv4(self.conv3(p.permute(0, 3, 2, 1).contiguous()))     # joints -> channels
        m = self.conv4m(self.conv3m(m.permute(0, 3, 2, 1).contiguous()))
        out = self.conv6(self.conv5(torch.cat((p, m), dim=1)))
        out = out.view(-1, num_person, *out.shape[1:]).max(dim=1)[0]       # max over persons
        return self.fc7(out.flatten(1))
