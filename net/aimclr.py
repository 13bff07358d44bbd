"""AimCLR (Guo et al., AAAI 2022): extreme augmentations, energy-based attention-guided drop (EADM),
dual distributional divergence minimisation (D3M) and nearest-neighbour mining (NNM).

Built on the shared MoCo core: AimCLR adds only the extreme branch, its drop and its losses.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from net.losses import distribution_cross_entropy, multi_positive_infonce, nearest_neighbour_mask
from net.moco import MoCo, embedding_std, info_nce_logits


def energy_attention(x, e_lambda=1e-4):
    """SimAM's parameter-free attention (Yang et al., ICML 2021, eq. 5): for every neuron
    1/e* = (x - mu)^2 / (4 (sigma^2 + lambda)) + 1/2 over the (T, V) plane of its channel, and the
    attention is sigmoid(1/e*).  Low energy e* (a distinctive neuron) = high attention.  x: (N, C, T, V)."""
    n = x.size(2) * x.size(3) - 1
    d = (x - x.mean(dim=(2, 3), keepdim=True)).pow(2)
    inverse_energy = d / (4 * (d.sum(dim=(2, 3), keepdim=True) / n + e_lambda)) + 0.5
    return torch.sigmoid(inverse_energy)


def _normalised(scores):
    """Scale to mean 1 over the whole batch (DropBlock's ``x / sum(x) * numel``)."""
    return scores / scores.sum().clamp_min(1e-12) * scores.numel()


class AttentionGuidedDrop(nn.Module):
    """EADM: DropBlock on joints (DropBlock_Ske) and on frames (DropBlockT_1d) whose seed probabilities
    follow the energy attention, so the most attended (lowest-energy) joints and frames are dropped
    most often.  A joint seed drops the joint and its graph neighbours; a frame seed drops
    ``block_size`` consecutive frames.  Survivors are rescaled by numel / kept, as in DropBlock."""

    def __init__(self, adjacency, keep_prob=0.7, block_size=7, e_lambda=1e-4):
        super().__init__()
        self.register_buffer('spread', (adjacency > 0).float())   # (V, V), self loops included
        self.keep_prob = keep_prob
        self.block_size = block_size
        self.e_lambda = e_lambda

    def forward(self, x):
        if not self.training or self.keep_prob >= 1:
            return x
        N, C, T, V = x.shape
        with torch.no_grad():
            att = energy_attention(x.detach(), self.e_lambda)
            # joints: gamma as DropBlock_Ske (1.92 = mean neighbours of the NTU graph)
            seeds = torch.bernoulli((_normalised(att.mean(dim=(1, 2))) * (1 - self.keep_prob) / (1 + 1.92)).clamp(max=1))
            joint_keep = 1.0 - (seeds @ self.spread > 0).to(x.dtype)                       # (N, V)
            joint_keep = joint_keep * joint_keep.numel() / joint_keep.sum().clamp_min(1)
            # frames: DropBlockT_1d
            seeds = torch.bernoulli((_normalised(att.mean(dim=(1, 3))) * (1 - self.keep_prob) / self.block_size).clamp(max=1))
            frame_drop = F.max_pool1d(seeds[:, None], self.block_size, stride=1, padding=self.block_size // 2)[:, 0]
            frame_keep = 1.0 - frame_drop[:, :T].to(x.dtype)                                  # (N, T)
            frame_keep = frame_keep * frame_keep.numel() / frame_keep.sum().clamp_min(1)
        return x * joint_keep.view(N, 1, 1, V) * frame_keep.view(N, 1, T, 1)


class AimCLR(MoCo):
    """``model: net.aimclr.AimCLR`` with the reference ``model_args`` (plus MoCo's optional keys).

    ``forward(im_q, im_k, im_q_extreme, nnm=False, topk=1)`` (the views of ``Feeder_triple``): InfoNCE
    on the normal query (multi-positive after ``mining_epoch``), and the D3M loss from the normal
    query's distribution over [positive, queue] to the extreme and the dropped-extreme views:
    L = L_info + (L_d3m(extreme) + L_d3m(extreme, dropped)) / 2.

    Extra args: keep_prob (EADM, 0.7 in the reference), drop_block_size (7)."""

    def __init__(self, *args, keep_prob=0.7, drop_block_size=7, **kwargs):
        super().__init__(*args, **kwargs)
        if self.pretrain:
            adjacency = self.encoder_q.A.sum(dim=0)
            self.drop = AttentionGuidedDrop(adjacency, keep_prob, drop_block_size)

    def forward(self, im_q, im_k=None, im_q_extreme=None, nnm=False, topk=1, **unused):
        if not self.pretrain:
            return self.forward_eval(im_q)
        q = self.embed_query(im_q)
        fmap = self.query_feature_map(im_q_extreme)
        M = im_q_extreme.size(4)
        q_e = self.project_query(fmap, M)
        q_ed = self.project_query(self.drop(fmap), M)
        with torch.no_grad():
            self.momentum_update()
            k = self.embed_key(im_k)
        logits = info_nce_logits(q, k, self.queue, self.T)
        logits_e = info_nce_logits(q_e, k, self.queue, self.T)
        logits_ed = info_nce_logits(q_ed, k, self.queue, self.T)
        if nnm:
            mask = nearest_neighbour_mask([logits[:, 1:], logits_e[:, 1:], logits_ed[:, 1:]], topk)
            loss_info = multi_positive_infonce(logits, mask)
        else:
            loss_info = self.contrastive_loss(logits)
        loss_d3m = (distribution_cross_entropy(logits, logits_e) + distribution_cross_entropy(logits, logits_ed)) / 2
        self.enqueue(k)
        return {
            'loss': loss_info + loss_d3m,
            'loss_info': loss_info.detach(),
            'loss_d3m': loss_d3m.detach(),
            'acc_pos': (logits.argmax(dim=1) == 0).float().mean(),
            'embed_std': embedding_std(q),
        }
