"""docs/EXTENDING.md, worked example: an encoder.  Two temporal convolutions per joint, no graph: the
smallest backbone that fulfils the encoder contract (net/utils/encoder.py)."""
import torch.nn as nn

from net.utils.encoder import SkeletonEncoder
from net.utils.graph import Graph


class TinyTCN(SkeletonEncoder):
    display_name = 'TinyTCN'

    def __init__(self, in_channels=3, num_class=60, graph_args=None, hidden_channels=16, hidden_dim=64, **unused):
        super().__init__()
        self.graph = Graph(**(graph_args or {'layout': 'ntu-rgb+d'}))
        self.in_channels, self.num_node, self.feature_dim = in_channels, self.graph.num_node, hidden_dim
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, hidden_channels, (9, 1), stride=(2, 1), padding=(4, 0)),
            nn.BatchNorm2d(hidden_channels), nn.ReLU(),
            nn.Conv2d(hidden_channels, hidden_dim, (9, 1), stride=(2, 1), padding=(4, 0)),
            nn.BatchNorm2d(hidden_dim), nn.ReLU())
        self.fc = nn.Linear(hidden_dim, num_class)
        self.drop_out = nn.Identity()
        self.neck = None

    def encode(self, x):
        """(N, C, T, V, M) -> (N*M, hidden_dim, T/4, V)."""
        self.check_input(x)
        N, C, T, V, M = x.shape
        x = self.net(x.permute(0, 4, 1, 2, 3).reshape(N * M, C, T, V))
        return x if self.neck is None else self.neck(x)
