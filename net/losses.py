"""Losses shared by the contrastive methods, each written once.

* ``distribution_cross_entropy``: AimCLR's D3M loss and MsMCLR's multi-scale loss (MsMCLR eqs. 6-8):
  the normal view's distribution over [positive, queue] (detached) supervises another view's.
* ``nearest_neighbour_mask`` / ``multi_positive_infonce``: AimCLR's nearest-neighbour mining.
* ``divergence_weight``: the small-data schedule of the divergence term (D3M, L_Ms); 1 in the references.
"""
import torch
import torch.nn.functional as F


def divergence_weight(epoch, hold=0, ramp=0):
    """Weight of the divergence term (AimCLR's D3M, MsMCLR's L_Ms) at the 0-based ``epoch``: 0 for the
    first ``hold`` epochs, then (epoch - hold + 1) / (ramp + 1) up to 1, i.e. a linear ramp over ``ramp``
    epochs.  ``hold = ramp = 0`` is the references' constant 1 (docs/METHODS.md, "Every seed learns")."""
    return min(1.0, max(0.0, (epoch - hold + 1) / (ramp + 1)))


def distribution_cross_entropy(target_logits, logits):
    """-sum_i p_i(target) log p_i(view), averaged over the batch.

    Both arguments are temperature-scaled logits (N, 1 + K) over [positive, queue]; the target
    distribution is detached.  AimCLR's D3M loss (eq. 8 of AimCLR) and MsMCLR's L_1..L_3
    (eqs. 6-8).  The reference computes ``log(softmax(.))``; ``log_softmax`` is the same value
    without the underflow at large K."""
    target = torch.softmax(target_logits.detach(), dim=1)
    return -(target * F.log_softmax(logits, dim=1)).sum(dim=1).mean()


@torch.no_grad()
def nearest_neighbour_mask(negative_logits, topk):
    """Positive mask (N, 1 + K) for AimCLR's nearest-neighbour mining: column 0 (the key) plus, for
    every view in ``negative_logits`` (each (N, K) similarities to the queue), its ``topk`` most
    similar queue entries."""
    first = negative_logits[0]
    mined = torch.zeros_like(first)
    for logits in negative_logits:
        mined.scatter_(1, logits.topk(topk, dim=1).indices, 1.0)
    return torch.cat([torch.ones_like(first[:, :1]), mined], dim=1)


def multi_positive_infonce(logits, positive_mask):
    """InfoNCE with several positives: -mean over the mask of log softmax(logits) (AimCLR NNM loss)."""
    log_prob = F.log_softmax(logits, dim=1)
    return (-(log_prob * positive_mask).sum(dim=1) / positive_mask.sum(dim=1)).mean()
