"""AimCLR (Guo et al., AAAI 2022): extreme augmentations, energy-based attention-guided drop (EADM),
dual distributional divergence minimisation (D3M) and nearest-neighbour mining (NNM).

Built on the shared MoCo core: AimCLR adds only the extreme branch, its drop and its losses.
"""
import torch
import torch.nn as nn

from net.losses import distribution_cross_entropy, divergence_weight, multi_positive_infonce, nearest_neighbour_mask
from net.moco import MoCo, embedding_std, info_nce_logits


def energy_attention(x, e_lambda=1e-4):
    """SimAM's parameter-free attention (Yang et al., ICML 2021, eq. 5): for every neuron
    1/e* = (x - mu)^2 / (4 (sigma^2 + lambda)) + 1/2 over the (T, V) plane of its channel, and the
    attention is sigmoid(1/e*).  Low energy e* (a distinctive neuron) = high attention.  x: (N, C, T, V)."""
    n = x.size(2) * x.size(3) - 1
    d = (x - x.mean(dim=(2, 3), keepdim=True)).pow(2)
    inverse_energy = d / (4 * (d.sum(dim=(2, 3), keepdim=True) / n + e_lambda)) + 0.5
    return torch.sigmoid(inverse_energy)


def threshold_drop(x, attention, keep_prob):
    """Zero every entry of ``x`` whose ``attention`` is >= ``keep_prob`` and rescale the survivors by
    numel / kept, both counted over the whole batch (AimCLR's ``DropBlock_Ske`` / ``DropBlockT_1d``
    with an attention map as the mask).  ``attention`` broadcasts against ``x``; no random numbers."""
    keep = (attention < keep_prob).to(x.dtype)
    return x * keep * (keep.numel() / keep.sum().clamp_min(1))


class EnergyAttentionDrop(nn.Module):
    """EADM, the reference ``Simam_Drop``: deterministic, parameter-free, no state-dict entries.

    With the SimAM attention a = sigmoid(1/e*) of the feature map x (N*M, C, T, V):
    1. joints: a averaged over channels and frames; every joint with mean attention >= keep_prob is
       zeroed in every channel and frame (survivors x numel/kept over the (N*M, V) mask);
    2. entries: on the joint-dropped map, every single (c, v, t) entry with a >= keep_prob is zeroed
       (survivors x numel/kept over the (N*M, C*V, T) mask).
    The most attended (most distinctive) joints and entries are the ones dropped."""

    def __init__(self, keep_prob=0.7, e_lambda=1e-4):
        super().__init__()
        self.keep_prob = keep_prob
        self.e_lambda = e_lambda

    def forward(self, x):
        with torch.no_grad():
            att = energy_attention(x.detach(), self.e_lambda)
        x = threshold_drop(x, att.mean(dim=(1, 2))[:, None, None, :], self.keep_prob)
        return threshold_drop(x, att, self.keep_prob)


class MinedMoCo(MoCo):
    """MoCo with AimCLR's nearest-neighbour mining (NNM) and a divergence term (AimCLR's D3M, MsMCLR's
    L_Ms) added to InfoNCE; the base of AimCLR and MsMCLR.

    mining_epoch (1000: never) and topk: from the 0-based epoch ``mining_epoch`` on (the reference's
    ``epoch > mining_epoch`` in 1-based epochs) the query's InfoNCE takes as positives the ``topk``
    queue entries nearest to every branch (eq. 9 of AimCLR).  infonce_warmup_epochs /
    divergence_ramp_epochs (0 / 0, the references: weight 1 from the first step): the divergence
    weight ``divergence_weight`` (net/losses.py), a small-data schedule (docs/METHODS.md)."""

    forward_keywords = ('epoch',)
    reference_keys = ('mining_epoch', 'topk')

    def __init__(self, *args, mining_epoch=1000, topk=1, infonce_warmup_epochs=0, divergence_ramp_epochs=0,
                 **kwargs):
        super().__init__(*args, **kwargs)
        self.mining_epoch, self.topk = mining_epoch, topk
        self.infonce_warmup_epochs = infonce_warmup_epochs
        self.divergence_ramp_epochs = divergence_ramp_epochs

    def query_infonce(self, logits, branch_logits, epoch):
        """InfoNCE of the normal query's ``logits``; with NNM, positives mined over it and ``branch_logits``."""
        if epoch >= self.mining_epoch:
            mask = nearest_neighbour_mask([logits[:, 1:]] + [l[:, 1:] for l in branch_logits], self.topk)
            return multi_positive_infonce(logits, mask)
        return self.contrastive_loss(logits)

    def total_loss(self, loss_info, loss_divergence, epoch):
        """L = L_info + w(epoch) L_divergence, w = 1 in the references."""
        return loss_info + loss_divergence * divergence_weight(epoch, self.infonce_warmup_epochs,
                                                               self.divergence_ramp_epochs)


class AimCLR(MinedMoCo):
    """``model: net.aimclr.AimCLR`` with the reference ``model_args`` (plus MoCo's optional keys).

    ``forward(im_q, im_k, im_q_extreme, epoch)`` (the views of ``Feeder_triple``, the 0-based epoch):
    InfoNCE on the normal query (multi-positive with ``topk`` mined neighbours from epoch ``mining_epoch``
    on, the reference's ``epoch > mining_epoch`` in 1-based epochs), and the D3M loss from the normal
    query's distribution over [positive, queue] to the extreme and the dropped-extreme views:
    L = L_info + (L_d3m(extreme) + L_d3m(extreme, dropped)) / 2.

    Extra args: keep_prob (EADM threshold, 0.7 in the reference) and ``MinedMoCo``'s mining and
    divergence-schedule keys.
    The reference's top-level ``mining_epoch`` / ``topk`` keys are mapped here (``reference_keys``).  The state dict holds exactly the
    reference's keys (``encoder_q.*``, ``encoder_k.*``, ``queue``, ``queue_ptr``)."""

    capture_safe = True          # tools/benchmark.py --count-ops: no host synchronisation in the step

    def __init__(self, *args, keep_prob=0.7, **kwargs):
        super().__init__(*args, **kwargs)
        if self.pretrain:
            self.drop = EnergyAttentionDrop(keep_prob)

    def forward(self, im_q, im_k=None, im_q_extreme=None, epoch=0):
        if not self.pretrain:
            return self.forward_eval(im_q, im_k)
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
        loss_info = self.query_infonce(logits, [logits_e, logits_ed], epoch)
        loss_d3m = (distribution_cross_entropy(logits, logits_e) + distribution_cross_entropy(logits, logits_ed)) / 2
        self.enqueue(k)
        return {
            'loss': self.total_loss(loss_info, loss_d3m, epoch),
            'loss_info': loss_info.detach(),
            'loss_d3m': loss_d3m.detach(),
            'acc_pos': (logits.argmax(dim=1) == 0).float().mean(),
            'embed_std': embedding_std(q),
        }
