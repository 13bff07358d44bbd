"""MsMCLR: Y. Wu, Z. Xu, M. Yuan, T. Tang, R. Meng, Z. Wang, "Multi-scale Motion Contrastive Learning for
Self-supervised Skeleton-based Action Recognition", Multimedia Systems (Springer), 2024,
doi:10.1007/s00530-024-01463-0.

Two query branches share the query encoder (Fig. 3): the normal view gives z^ (InfoNCE, eq. 3); the
strongly augmented view's feature map x~ goes through the MsM attention (``net/msm_attention.py``)
and the shared MLP head to z_joint, z_part, z_body.  The momentum key encoder embeds the other normal
view.  L = L_Info + L_Ms (eq. 10) with L_Ms = (L_1 + L_2 + L_3) / 3 (eq. 9), each L_s the cross-entropy
from the normal branch's distribution over [positive, queue] (eqs. 4-5, detached) to the scale's
(eqs. 6-8).
"""
import torch

from net.aimclr import MinedMoCo
from net.losses import distribution_cross_entropy
from net.moco import embedding_std, info_nce_logits
from net.msm_attention import MsMAttention

MS_LOSSES = ('d3m', 'infonce')


class MsMCLR(MinedMoCo):
    """``model: net.msmclr.MsMCLR``; MoCo's ``model_args`` plus the ablation switches:

    msm_attention: MsM attention on the strong branch (Table 4; False pools x~ directly);
    multi_scale: joint, part and body scales (Table 4; False keeps the joint scale);
    diff_mode: all | frame | node (Table 5); reduction: channel reduction in the attention;
    ms_loss: 'd3m' (eqs. 6-9) or 'infonce' (every strong embedding trained by eq. 3 alone; Table 7).
    The strong augmentation set is the feeder's ``aug_method`` (none | aimclr | msmclr; Table 6).
    ``MinedMoCo``'s keys: mining_epoch (1000: never, the paper's equations have no mining), topk, and
    L_Ms's weight schedule (0 / 0, the paper)."""

    capture_safe = True          # tools/benchmark.py --count-ops: no host synchronisation in the step

    def __init__(self, *args, msm_attention=True, multi_scale=True, diff_mode='all', reduction=2,
                 ms_loss='d3m', **kwargs):
        super().__init__(*args, **kwargs)
        if ms_loss not in MS_LOSSES:
            raise ValueError(f"model_args.ms_loss={ms_loss!r}: use one of {', '.join(MS_LOSSES)}")
        self.ms_loss = ms_loss
        self.msm = None
        if self.pretrain and msm_attention:
            self.msm = MsMAttention(self.encoder_q.feature_dim, self.encoder_q.layout, multi_scale, reduction, diff_mode)

    def strong_embeddings(self, im_strong):
        """{scale: L2-normalised embedding} of the strong view (z_joint, z_part, z_body; eq. in 3.1)."""
        fmap = self.query_feature_map(im_strong)
        M = im_strong.size(4)
        if self.msm is None:
            return {'strong': self.project_query(fmap, M)}
        return {name: self.project_query(h, M) for name, h in self.msm(fmap).items()}

    def forward(self, im_q, im_k=None, im_q_strong=None, epoch=0):
        if not self.pretrain:
            return self.forward_eval(im_q, im_k)
        q = self.embed_query(im_q)
        strong = self.strong_embeddings(im_q_strong)
        with torch.no_grad():
            self.momentum_update()
            k = self.embed_key(im_k)
        logits = info_nce_logits(q, k, self.queue, self.T)
        scale_logits = {name: info_nce_logits(z, k, self.queue, self.T) for name, z in strong.items()}
        loss_info = self.query_infonce(logits, list(scale_logits.values()), epoch)
        if self.ms_loss == 'd3m':
            scale_losses = {name: distribution_cross_entropy(logits, l) for name, l in scale_logits.items()}
        else:
            scale_losses = {name: self.contrastive_loss(l) for name, l in scale_logits.items()}
        loss_ms = sum(scale_losses.values()) / len(scale_losses)
        self.enqueue(k)
        out = {
            'loss': self.total_loss(loss_info, loss_ms, epoch),
            'loss_info': loss_info.detach(),
            'loss_ms': loss_ms.detach(),
            'acc_pos': (logits.argmax(dim=1) == 0).float().mean(),
            'embed_std': embedding_std(q),
        }
        out.update({f'loss_{name}': v.detach() for name, v in scale_losses.items()})
        return out
