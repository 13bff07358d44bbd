"""The encoder contract: what every backbone (ST-GCN, 2s-AGCN, CTR-GCN, HCN, Hyperformer, BlockGCN)
offers the methods, the protocols and the train-time heads.

A backbone subclasses ``SkeletonEncoder`` and sets, in ``__init__``:

* ``graph`` (``net.utils.graph.Graph``), ``in_channels``, ``num_node`` (V);
* ``feature_dim``: the channels of the ``encode`` map (what a MoCo projection or a neck is sized by);
* ``fc`` (pooled features -> logits) and ``drop_out`` (a module; ``nn.Identity()`` for none);
* ``neck = None``: an optional module on the ``encode`` map that keeps its shape (MICA's FreST);

and defines ``encode(x)``: (N, C, T, V, M) -> feature map (N*M, C', T', V), persons folded into the
batch, the neck applied last.  ``pool`` (mean over T', V, then persons), ``head`` (dropout, then ``fc``:
the one place features become logits) and ``forward = head(pool(encode(x)))`` are shared; a backbone
whose reference pools otherwise (HCN) overrides ``pool``.  Methods never read a backbone's internals:
``layout`` gives the skeleton layout, ``feature_map_shape`` the (C', T', V) of the map, found by one
dummy forward instead of a hard-coded stride list.
"""

import torch
import torch.nn as nn


class SkeletonEncoder(nn.Module):
    """Base class of the backbones; see the module docstring for what a subclass sets."""

    display_name = 'encoder'
    fixed_persons = False        # True when the input's M must equal ``num_person`` (data_bn over M)

    @property
    def classifier(self):
        """The encoder that classifies (a method's is its ``encoder_q``; an encoder is its own)."""
        return self

    @property
    def layout(self):
        """The skeleton layout (``net.utils.layouts.Layout``) the graph was built from."""
        return self.graph.layout

    def check_input(self, x):
        """One readable error when the data does not fit the model (instead of a shape error deep inside)."""
        if x.dim() != 5:
            raise ValueError(f'{self.display_name} expects input of shape (N, C, T, V, M), got {tuple(x.shape)}')
        persons_ok = not self.fixed_persons or x.size(4) == self.num_person
        if x.size(1) != self.in_channels or x.size(3) != self.num_node or not persons_ok:
            persons = f' and M={self.num_person} persons' if self.fixed_persons else ''
            raise ValueError(f'{self.display_name} built for C={self.in_channels} channels, V={self.num_node} '
                             f'joints (graph layout {self.layout.name!r}){persons}, got data of shape '
                             f'{tuple(x.shape)}: set model_args.in_channels / graph_args.layout'
                             f"{' / num_person' if self.fixed_persons else ''} to match the data")

    def encode(self, x):
        raise NotImplementedError(f'{type(self).__name__} must define encode(x) -> (N*M, C, T, V) feature map')

    @staticmethod
    def pool(feature_map, num_person):
        """Mean over (T', V), then over persons: (N*M, C, T', V) -> (N, C)."""
        x = feature_map.mean(dim=(2, 3))
        return x.view(-1, num_person, x.size(1)).mean(dim=1)

    def forward_features(self, x):
        """(N, C, T, V, M) -> pooled features, the input of ``head``."""
        return self.pool(self.encode(x), x.size(4))

    def head(self, pooled):
        """Pooled features -> logits (dropout, then ``fc``): the one place features become logits."""
        return self.fc(self.drop_out(pooled))

    def forward(self, x):
        return self.head(self.forward_features(x))

    def feature_map_shape(self, num_frames):
        """(C', T', V) of ``encode`` for a clip of ``num_frames`` frames: one dummy forward in eval mode
        without gradient (BatchNorm statistics untouched), the module's mode restored."""
        was_training = self.training
        param = next(self.parameters(), None)
        device = param.device if param is not None else 'cpu'
        dtype = param.dtype if param is not None else None
        persons = self.num_person if self.fixed_persons else 1
        self.eval()
        try:
            with torch.no_grad():
                fmap = self.encode(torch.zeros(1, self.in_channels, num_frames, self.num_node, persons,
                                               device=device, dtype=dtype))
        finally:
            self.train(was_training)
        return tuple(fmap.shape[1:])
