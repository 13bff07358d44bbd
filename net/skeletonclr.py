"""SkeletonCLR (Li et al., CrosSCLR, CVPR 2021): MoCo v2 on two augmented skeleton views."""
import torch

from net.moco import MoCo, embedding_std, info_nce_logits


class SkeletonCLR(MoCo):
    """``model: net.skeletonclr.SkeletonCLR`` with the reference ``model_args``.

    ``forward(im_q, im_k)`` returns a dict of losses and diagnostics in pretraining
    (``loss`` is what is optimised), and logits for ``pretrain: False``."""

    capture_safe = True          # tools/benchmark.py --count-ops: no host synchronisation in the step

    def forward(self, im_q, im_k=None):
        if not self.pretrain:
            return self.forward_eval(im_q, im_k)
        q = self.embed_query(im_q)
        with torch.no_grad():
            self.momentum_update()
            k = self.embed_key(im_k)
        logits = info_nce_logits(q, k, self.queue, self.T)
        loss = self.contrastive_loss(logits)
        self.enqueue(k)
        return {
            'loss': loss,
            'loss_info': loss.detach(),
            'acc_pos': (logits.argmax(dim=1) == 0).float().mean(),
            'embed_std': embedding_std(q),
        }
