"""SkeleMixCLR (Chen et al., "Contrastive Learning from Spatio-Temporal Mixed Skeleton Sequences for
Self-Supervised Skeleton-Based Action Recognition", arXiv 2207.03065; code czhaneva/SkeleMixCLR, its
``net/skeletonclr_multi_swapv2.py`` with ``net/st_gcn_swap.py``).

MoCo v2 (the shared core) with a BatchNorm projection head, plus SkeleMix: ``repeat`` mixed views of
the query batch, each sample taking its partner's joints of 2-3 random body parts over a random clip
(one partner shift, one region per mixed view, ``feeder.tools.skelemix``).  The encoder's feature map of
a mixed view is pooled inside the region (p, the partner's part) and outside it (c, the sample's own);
p's positive is the partner's key, c's the sample's key, and each has the other (detached) as one more
negative:

    L = w CE([q.k, q.Q] / T) + sum over mixed views w (CE([p.k_partner, p.Q, p.c] / T)
                                                       + CE([c.k, c.Q, c.p] / T)) / 2.
"""
import torch
import torch.nn.functional as F

from feeder.tools import SKELEMIX_MODES, skelemix
from net.moco import MoCo, embedding_std, info_nce_logits

SPATIAL_MODES = ('semantic', 'random')
# the reference's shipped NTU setting: 2-3 body parts, 7-11 of 16 time units, 3 mixed views, weight 1
DEFAULT_SWAP_CFG = {'swap_params': [[2, 3, 7, 11, 3, 1.0]], 'swap_mode': 'swap', 'spatial_mode': 'semantic'}
RANDOM_JOINTS = (10, 15)     # 'random' spatial mode: this many random joints (the reference's range)


def masked_pool(feature_map, mask, num_person):
    """The reference's ``_mask_pool``: means of the feature map (N*M, C, T', V) inside and outside the
    region ``mask`` (T', V), then over persons: (p, c), each (N, C)."""
    inside = (feature_map * mask).sum(-1).sum(-1) / mask.sum()
    outside = (feature_map * ~mask).sum(-1).sum(-1) / (~mask).sum()
    return (inside.view(-1, num_person, inside.size(1)).mean(dim=1),
            outside.view(-1, num_person, outside.size(1)).mean(dim=1))


def parse_swap_cfg(swap_cfg):
    """The reference's ``swap_cfg`` -> (spa_l, spa_u, tem_l, tem_u, repeat, weight, swap_mode, spatial_mode)."""
    cfg = dict(DEFAULT_SWAP_CFG, **(swap_cfg or {}))
    params = cfg['swap_params']
    if not isinstance(params, (list, tuple)) or len(params) != 1 or len(params[0]) != 6:
        raise ValueError(f'model_args.swap_cfg.swap_params={params!r}: give one entry [spa_l, spa_u, tem_l, tem_u, '
                         'repeat, loss_weight] (one query length; several lengths are not supported, docs/METHODS.md)')
    spa_l, spa_u, tem_l, tem_u, repeat, weight = params[0]
    if not (0 < spa_l <= spa_u and 0 < tem_l <= tem_u and int(repeat) >= 1):
        raise ValueError(f'model_args.swap_cfg.swap_params={params!r}: need 0 < spa_l <= spa_u, 0 < tem_l <= tem_u, '
                         'repeat >= 1')
    if cfg['swap_mode'] not in SKELEMIX_MODES:
        raise ValueError(f"model_args.swap_cfg.swap_mode={cfg['swap_mode']!r}: use one of {', '.join(SKELEMIX_MODES)}")
    if cfg['spatial_mode'] not in SPATIAL_MODES:
        raise ValueError(f"model_args.swap_cfg.spatial_mode={cfg['spatial_mode']!r}: use one of "
                         f"{', '.join(SPATIAL_MODES)}")
    return (int(spa_l), int(spa_u), int(tem_l), int(tem_u), int(repeat), float(weight),
            cfg['swap_mode'], cfg['spatial_mode'])


class SkeleMix:
    """Mixing settings and the draw of one mixed view's partner and region.  The draws are device random
    ops of fixed shapes (no value read back to the host), so the step is capture-safe: the partner shift,
    the number of groups and the time window are 0-d device tensors, the groups are chosen by the ranks of
    a random permutation, and the region is built by comparisons."""

    def __init__(self, swap_cfg, layout):
        (self.spa_l, self.spa_u, self.tem_l, self.tem_u, self.repeat, self.weight,
         self.swap_mode, self.spatial_mode) = parse_swap_cfg(swap_cfg)
        self.bodies = [list(b) for b in layout.bodies]
        self.num_node = layout.num_node
        if self.spatial_mode == 'semantic' and self.spa_u > len(self.bodies):
            raise ValueError(f"model_args.swap_cfg.swap_params: spa_u={self.spa_u} body parts, but layout "
                             f"'{layout.name}' has {len(self.bodies)} body groups (its `bodies`): lower spa_u or "
                             'add bodies to the layout')
        if self.spatial_mode == 'semantic':       # spa_l..spa_u of the layout's body groups
            self.groups, self.count = self.bodies, (self.spa_l, self.spa_u)
        else:                                     # 10-15 single joints (the reference's range), capped at V
            self.groups = [[j] for j in range(self.num_node)]
            self.count = (min(RANDOM_JOINTS[0], self.num_node), min(RANDOM_JOINTS[1], self.num_node))

    def group_matrix(self):
        """(G, V) boolean membership of the joints in the groups a draw chooses from."""
        member = torch.zeros(len(self.groups), self.num_node, dtype=torch.bool)
        for g, joints in enumerate(self.groups):
            member[g, joints] = True
        return member

    def draw(self, batch_size, units, groups):
        """(partner (N,), mask (T', V)) on the device of ``groups`` (``group_matrix``): partner i ->
        (i + shift) % N with shift uniform in [1, N-2] (the reference's ``torch.randint(1, N - 1)``), a
        uniformly random subset of ``count`` groups (count uniform in its range), and ``length`` (uniform in
        [tem_l, tem_u]) time units from a uniform start."""
        if batch_size < 3:
            raise ValueError(f'SkeleMixCLR needs batch_size >= 3 (partner shift in [1, N-2]), got {batch_size}')
        if self.tem_u > units:
            raise ValueError(f'model_args.swap_cfg.swap_params: tem_u={self.tem_u} time units, but the encoder '
                             f'maps the clip to {units}: lower tem_l/tem_u or use longer clips (64 frames: 16 units)')
        device = groups.device
        shift = torch.randint(1, batch_size - 1, (), device=device)
        partner = (torch.arange(batch_size, device=device) + shift) % batch_size
        count = torch.randint(self.count[0], self.count[1] + 1, (), device=device)
        chosen = torch.rand(groups.size(0), device=device).argsort().argsort() < count     # ranks below count
        joints = (groups & chosen[:, None]).any(dim=0)
        length = torch.randint(self.tem_l, self.tem_u + 1, (), device=device)
        start = (torch.rand((), device=device) * (units + 1 - length)).floor()            # uniform in [0, units - length]
        frame = torch.arange(units, device=device)
        rows = (frame >= start) & (frame < start + length)
        return partner, rows[:, None] & joints[None, :]


class SkeleMixCLR(MoCo):
    """``model: net.skelemixclr.SkeleMixCLR`` with the reference's ``model_args`` (``swap_cfg`` as there;
    the head is Linear-BN-ReLU-fc, ``head_bn: hidden``).  ``forward(im_q, im_k)`` (``Feeder_dual``'s
    views) returns the losses; ``mixes`` gives the mixed views' draws explicitly (tests), ``details``
    adds logits, mixed views and masks to the output."""

    capture_safe = True          # device draws of fixed shapes: tools/benchmark.py --count-ops reads 0 host syncs

    def __init__(self, *args, swap_cfg=None, head_bn='hidden', sigma=None, **kwargs):
        super().__init__(*args, head_bn=head_bn, **kwargs)      # sigma: the reference's unused argument
        self.mix = self.build_mix(swap_cfg) if self.pretrain else None
        if self.mix is not None:          # derived from the layout: not saved
            self.register_buffer('mix_groups', self.mix.group_matrix(), persistent=False)
        self._units = {}

    def build_mix(self, swap_cfg):
        """The mixing settings (``SkeleMix``), or None for a subclass that does not mix (MICA on SkeletonCLR)."""
        return SkeleMix(swap_cfg, self.encoder_q.layout)

    def time_units(self, num_frames):
        """T' of the encoder's feature map for a clip of ``num_frames`` (one dummy forward per length)."""
        if num_frames not in self._units:
            self._units[num_frames] = self.encoder_q.feature_map_shape(num_frames)[1]
        return self._units[num_frames]

    def draw_mixes(self, x):
        """``repeat`` (partner (N,), mask (T', V)) pairs for the query batch x."""
        units = self.time_units(x.size(2))
        return [self.mix.draw(x.size(0), units, self.mix_groups) for _ in range(self.mix.repeat)]

    def mixed_embeddings(self, x, partner, mask):
        """(mixed view, p, c): L2-normalised head outputs of the mixed view pooled inside / outside the region."""
        mixed = skelemix(x, partner, mask, self.mix.swap_mode)
        fmap = self.query_feature_map(mixed)
        p, c = masked_pool(fmap, mask, x.size(4))
        return mixed, F.normalize(self.encoder_q.fc(p), dim=1), F.normalize(self.encoder_q.fc(c), dim=1)

    def mix_logits(self, p, c, k, partner):
        """SkeleMix's logits (positive at column 0): [p.k_partner, p.Q, p.c] / T and [c.k, c.Q, c.p] / T."""
        logits_p = info_nce_logits(p, k[partner], self.queue, self.T)
        logits_c = info_nce_logits(c, k, self.queue, self.T)
        logits_p = torch.cat([logits_p, (p * c.detach()).sum(1, keepdim=True) / self.T], dim=1)
        logits_c = torch.cat([logits_c, (c * p.detach()).sum(1, keepdim=True) / self.T], dim=1)
        return logits_p, logits_c

    def encode_mixes(self, im_q, mixes=None):
        """Draw (unless given) and encode the mixed views of the query batch: a list of
        (partner, mask, mixed view, p, c); called after the query is encoded, as in the reference."""
        mixes = self.draw_mixes(im_q) if mixes is None else mixes
        return [(partner, mask) + self.mixed_embeddings(im_q, partner, mask) for partner, mask in mixes]

    def mix_losses(self, embedded, q, k, details=False):
        """The SkeleMixCLR objective (module docstring) from the query / key embeddings and the encoded
        mixed views: ``loss``, ``loss_info`` (the unweighted InfoNCE of q, the collapse monitor's),
        ``loss_ins``, ``loss_mix`` and diagnostics; with ``details`` the logits, mixed views and masks."""
        w = self.mix.weight if self.mix is not None else 1.0
        logits = info_nce_logits(q, k, self.queue, self.T)
        loss_info = self.contrastive_loss(logits)
        loss_mix = 0
        out = {'logits': [logits], 'logits_p': [], 'logits_c': [], 'mixed': [], 'masks': []} if details else {}
        for partner, mask, mixed, p, c in embedded:
            logits_p, logits_c = self.mix_logits(p, c, k, partner)
            loss_mix = loss_mix + w * (0.5 * self.contrastive_loss(logits_p) + 0.5 * self.contrastive_loss(logits_c))
            if details:
                out['logits_p'].append(logits_p)
                out['logits_c'].append(logits_c)
                out['mixed'].append(mixed)
                out['masks'].append(mask)
        loss_ins = w * loss_info
        out.update(loss=loss_ins + loss_mix, loss_info=loss_info.detach())
        if self.mix is not None:
            out.update(loss_ins=loss_ins.detach(), loss_mix=loss_mix.detach())
        out.update(acc_pos=(logits.argmax(dim=1) == 0).float().mean(),
                   embed_std=embedding_std(q))
        return out

    def forward(self, im_q, im_k=None, mixes=None, details=False):
        if not self.pretrain:
            return self.forward_eval(im_q, im_k)
        q = self.embed_query(im_q)
        embedded = self.encode_mixes(im_q, mixes)
        with torch.no_grad():
            self.momentum_update()
            k = self.embed_key(im_k)
        out = self.mix_losses(embedded, q, k, details)
        self.enqueue(k)
        return out
