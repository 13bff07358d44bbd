"""docs/EXTENDING.md, worked example: a contrastive method.  SkeletonCLR with the symmetrised loss of
MoCo v3 (each view is once the query and once the key).  An illustration, not a method of the papers."""
import torch

from net.moco import MoCo, embedding_std, info_nce_logits


class SymmetricCLR(MoCo):
    def forward(self, im_q, im_k=None):
        if not self.pretrain:
            return self.forward_eval(im_q, im_k)
        q1, q2 = self.embed_query(im_q), self.embed_query(im_k)
        with torch.no_grad():
            self.momentum_update()
            k1, k2 = self.embed_key(im_q), self.embed_key(im_k)
        loss = (self.contrastive_loss(info_nce_logits(q1, k2, self.queue, self.T))
                + self.contrastive_loss(info_nce_logits(q2, k1, self.queue, self.T))) / 2
        self.enqueue(k2)
        return {'loss': loss, 'loss_info': loss.detach(), 'embed_std': embedding_std(q1)}
