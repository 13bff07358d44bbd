"""CSRE: Contrastive Spatiotemporal Representation Enhancement (train-time head).

Paper: "A Generically Contrastive Spatiotemporal Representation Enhancement for 3D Skeleton Action
Recognition" (seed ``csre.txt``; design notes ``docs/DESIGN.md`` section 6).

CSRE is a *training add-on* for a supervised skeleton encoder.  The encoder keeps its own classifier and
cross-entropy loss (eqs. 1-3); this head takes the encoder's pre-pooling feature map
``(N*M, C, T', V)`` (``net.st_gcn.Model.encode``), decomposes it into a spatial-specific and a
temporal-specific embedding (STFD, eqs. 4-5), stores those in two memory banks addressed by sample index
(eq. 6), samples label-aware positives and negatives from the banks (Sec. 3.3.3, Table 6) and returns an
InfoNCE loss per branch (eqs. 7-9) that the processor adds to the cross-entropy (eq. 10).  The head is a
separate ``nn.Module`` that lives next to the encoder, so the encoder's checkpoint never contains any
CSRE parameter or bank: drop the head and the encoder is a plain classifier at test time.

Reading choices (the extracted paper text lost the symbols of eqs. 1-10, so some are ours):

* Persons: the map is averaged over the M person slots *before* STFD (same as ``Model.pool`` averages
  over persons).  STFD is linear (eqs. 4-5: "linear transformation functions"), so before/after give the
  same pre-normalisation embedding; "before" is M times cheaper.
* Temporal length: the temporal branch flattens T' into channels, so its projection needs a fixed T'.
  ``num_frames`` (= T' of the feature map, e.g. 16 for ST-GCN on 64 frames) is given at construction; a
  map with a different T' is adaptively average-pooled to ``num_frames`` (so variable-length input
  works).  ``feature_map_shape(encoder, ...)`` runs a dummy forward to find T' and C.
* Anchors are the current batch's embeddings (with gradient); bank entries are detached (eq. 6).  The
  loss is computed against the bank *before* this step's write, and an anchor's own (stale) bank entry is
  excluded from its candidates, so positives are always other training samples.
* Multi-positive InfoNCE (eqs. 8-9) in the form of SkeletonGCL / cross-image pixel contrast, which the
  paper follows for sampling ([33]): for anchor a, positive set P, negative set N,
  ``L(a) = -1/|P| * sum_{p in P} log( e^{s(a,p)/tau} / (e^{s(a,p)/tau} + sum_{n in N} e^{s(a,n)/tau}) )``
  with s the cosine similarity (eq. 7).  Averaged over anchors that have >= 1 positive and >= 1 negative.
* ``loss = loss_weight * (L_s + L_t [+ L_g])`` (eq. 10); the processor adds it to L_CE.

Defaults and their source:

* ``embed_dim=256``                    Sec. 4.2 ("dimensions of the attentive features ... is 256").
* ``num_positives=128, num_hard_negatives=512, num_random_negatives=512``   Sec. 4.2.
* ``positive_sampling='H', negative_sampling='R+H'``   Sec. 3.3.3 and Table 6 (best row, 85.6%).
* ``temperature=0.8``                  Sec. 4.2 searches {0.5, 0.8, 1.0}; the chosen value is not printed,
  0.8 is the middle of the grid (and the DESIGN default).  Per-branch values can be given as a tuple.
* ``loss_weight=1.0``                  eq. 10 as read in DESIGN.md sec. 6 (L_CE + L_s + L_t, no weight).
* ``reduction=4``                      Eq. 4's channel-reduction rate r; its value is not in the extracted
  text, 4 is our choice (the SE-style default).
* ``bank_capacity=None``               Sec. 3.3.1: banks the size of the dataset; Sec. 4.5 "Training
  Consumption" suggests a MoCo-style queue for large sets -> ``bank_capacity=K`` gives a FIFO queue.
* ``spatial=True, temporal=True, global_contrast=False``   Table 5 (CSRE = SC + TC; adding GC drops
  85.6 -> 85.5).

Counts when a strategy is 'R+H' for positives: ``num_positives`` is split half hard / half random
(the paper gives one count for positives).  For negatives the paper's two counts are used directly:
'H' -> ``num_hard_negatives``, 'R' -> ``num_random_negatives``, 'R+H' -> both (random drawn from the
candidates not already picked as hard).  Fewer candidates than asked -> use what there is (validity mask).
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

STRATEGIES = ('R', 'H', 'R+H')
BRANCHES = ('s', 't', 'g')


def feature_map_shape(encoder, in_channels, num_frame, num_node, num_person=1):
    """(C', T', V) of ``encoder.encode`` for an input (1, in_channels, num_frame, num_node, num_person).

    Runs one dummy forward in eval mode without gradient; the encoder's mode is restored."""
    was_training = encoder.training
    param = next(encoder.parameters(), None)
    device = param.device if param is not None else 'cpu'
    encoder.eval()
    try:
        with torch.no_grad():
            fmap = encoder.encode(torch.zeros(1, in_channels, num_frame, num_node, num_person, device=device))
    finally:
        encoder.train(was_training)
    return tuple(fmap.shape[1:])


def _masked_topk(score, mask, k):
    """Top-k of ``score`` among entries where ``mask``; returns (indices (B, k), valid (B, k)).

    Rows with fewer than k candidates return invalid slots (valid False) whose index must be ignored."""
    k = min(int(k), score.size(1))
    if k <= 0:
        empty = score.new_zeros(score.size(0), 0, dtype=torch.long)
        return empty, empty.bool()
    masked = score.masked_fill(~mask, float('-inf'))
    values, idx = masked.topk(k, dim=1)
    return idx, torch.isfinite(values)


class CSRE(nn.Module):
    """Train-time CSRE head (STFD + memory banks + label-aware sampling + InfoNCE).

    Args:
        channels: C of the encoder's feature map (N*M, C, T', V).
        num_node: V (25 for NTU, 20 for NW-UCLA...).
        num_samples: size of the training set (bank rows, addressed by the feeder's sample index);
            may be None when ``bank_capacity`` is given.
        num_class: number of classes (only used to validate labels; optional).
        embed_dim: embedding size of f_s / f_t / f_g (Sec. 4.2: 256).
        reduction: channel-reduction rate r of eq. 4.
        bank_capacity: None -> index-addressed banks of ``num_samples`` rows (eq. 6); an int -> FIFO queue of
            that many rows (Sec. 4.5, MoCo-style).
        num_positives, num_hard_negatives, num_random_negatives: sampling counts (Sec. 4.2: 128/512/512).
        positive_sampling, negative_sampling: 'R', 'H' or 'R+H' (Table 6).
        temperature: tau of eqs. 8-9; a float, or a tuple (tau_s, tau_t[, tau_g]).
        loss_weight: lambda multiplying the summed contrastive losses (eq. 10).
        spatial, temporal, global_contrast: branch switches (Table 5: SC, TC, GC).
        num_frames: T' of the feature map (required when ``temporal``); other T' are pooled to it.
        persistent_banks: whether the banks appear in ``state_dict()`` (for resumable checkpoints).
    """

    def __init__(self, channels, num_node, num_samples=None, num_class=None, embed_dim=256, reduction=4,
                 bank_capacity=None, num_positives=128, num_hard_negatives=512, num_random_negatives=512,
                 positive_sampling='H', negative_sampling='R+H', temperature=0.8, loss_weight=1.0,
                 spatial=True, temporal=True, global_contrast=False, num_frames=None,
                 persistent_banks=True):
        super().__init__()
        if not (spatial or temporal or global_contrast):
            raise ValueError('CSRE needs at least one of spatial / temporal / global_contrast')
        if positive_sampling not in STRATEGIES or negative_sampling not in STRATEGIES:
            raise ValueError(f'sampling strategies must be one of {STRATEGIES}, got '
                             f'{positive_sampling!r} / {negative_sampling!r}')
        if temporal and not num_frames:
            raise ValueError('the temporal branch needs num_frames (T\' of the feature map); '
                             'see net.csre.feature_map_shape')
        if bank_capacity is None and not num_samples:
            raise ValueError('give num_samples (index-addressed banks) or bank_capacity (FIFO banks)')
        self.channels = channels
        self.num_node = num_node
        self.num_frames = num_frames
        self.num_class = num_class
        self.embed_dim = embed_dim
        self.fifo = bank_capacity is not None
        self.bank_size = int(bank_capacity) if self.fifo else int(num_samples)
        self.num_positives = num_positives
        self.num_hard_negatives = num_hard_negatives
        self.num_random_negatives = num_random_negatives
        self.positive_sampling = positive_sampling
        self.negative_sampling = negative_sampling
        self.loss_weight = loss_weight
        if isinstance(temperature, (tuple, list)):
            temps = list(temperature) + [temperature[-1]] * (3 - len(temperature))
        else:
            temps = [temperature] * 3
        self.temperature = dict(zip(BRANCHES, (float(t) for t in temps)))
        self.branches = [b for b, on in zip(BRANCHES, (spatial, temporal, global_contrast)) if on]

        reduced = max(1, channels // reduction)
        # eq. 4: 1x1 (per-position linear) channel reduction C -> C/r; eq. 5: flatten + linear to embed_dim.
        if spatial:
            self.reduce_s = nn.Conv1d(channels, reduced, 1)
            self.proj_s = nn.Linear(reduced * num_node, embed_dim)
        if temporal:
            self.reduce_t = nn.Conv1d(channels, reduced, 1)
            self.proj_t = nn.Linear(reduced * num_frames, embed_dim)
        if global_contrast:
            self.proj_g = nn.Linear(channels, embed_dim)

        # Memory banks (eq. 6): features, labels (-1 = empty) and the sample index stored in each row.
        for b in self.branches:
            self.register_buffer(f'bank_{b}', torch.zeros(self.bank_size, embed_dim), persistent=persistent_banks)
        self.register_buffer('bank_label', torch.full((self.bank_size,), -1, dtype=torch.long),
                             persistent=persistent_banks)
        self.register_buffer('bank_index', torch.full((self.bank_size,), -1, dtype=torch.long),
                             persistent=persistent_banks)
        self.register_buffer('bank_ptr', torch.zeros((), dtype=torch.long), persistent=persistent_banks)

    # ------------------------------------------------------------------ STFD (eqs. 4-5)
    def decompose(self, feature_map, num_person):
        """(N*M, C, T', V) -> dict of L2-normalised embeddings {'s','t'[, 'g']}, each (N, embed_dim)."""
        NM, C, T, V = feature_map.shape
        if NM % num_person:
            raise ValueError(f'feature map batch {NM} is not a multiple of num_person={num_person}')
        if C != self.channels or V != self.num_node:
            raise ValueError(f'feature map (C={C}, V={V}) does not match the head (C={self.channels}, '
                             f'V={self.num_node})')
        x = feature_map.view(NM // num_person, num_person, C, T, V).mean(dim=1)   # persons averaged first
        N = x.size(0)
        out = {}
        if 's' in self.branches:
            xs = self.reduce_s(x.mean(dim=2))                                    # temporal pooling -> (N, C/r, V)
            out['s'] = self.proj_s(xs.reshape(N, -1))
        if 't' in self.branches:
            xt = x.mean(dim=3)                                                   # spatial pooling -> (N, C, T')
            if xt.size(2) != self.num_frames:
                xt = F.adaptive_avg_pool1d(xt, self.num_frames)
            xt = self.reduce_t(xt)
            out['t'] = self.proj_t(xt.reshape(N, -1))
        if 'g' in self.branches:
            out['g'] = self.proj_g(x.mean(dim=(2, 3)))                           # global feature (Table 5 GC)
        return {k: F.normalize(v, dim=1) for k, v in out.items()}

    # ------------------------------------------------------------------ memory banks (eq. 6)
    @torch.no_grad()
    def update_banks(self, features, label, index):
        """Write detached embeddings + labels: by sample index, or FIFO at the queue pointer."""
        label = label.to(self.bank_label.device).long()
        index = index.to(self.bank_label.device).long()
        if self.fifo:
            B = label.numel()
            keep = slice(max(0, B - self.bank_size), B)   # a batch larger than the queue keeps its tail
            n = B - keep.start
            rows = (self.bank_ptr + torch.arange(n, device=label.device)) % self.bank_size
            self.bank_ptr.copy_((self.bank_ptr + n) % self.bank_size)
        else:
            keep = slice(0, label.numel())
            rows = index
        for b, f in features.items():
            getattr(self, f'bank_{b}')[rows] = f.detach()[keep].to(getattr(self, f'bank_{b}').dtype)
        self.bank_label[rows] = label[keep]
        self.bank_index[rows] = index[keep]

    @property
    def num_filled(self):
        return int((self.bank_label >= 0).sum())

    # ------------------------------------------------------------------ sampling (Sec. 3.3.3, Table 6)
    def _draw(self, sim, cand, strategy, n_hard, n_random):
        """Pick bank rows among ``cand`` (B, K): hard = highest ``sim``, random = random scores + topk."""
        idx, valid = [], []
        if 'H' in strategy:
            i, v = _masked_topk(sim, cand, n_hard)
            idx.append(i)
            valid.append(v)
            # do not draw a hard pick again at random (scatter_add: invalid slots may repeat a valid index)
            taken = torch.zeros(cand.shape, dtype=torch.int32, device=cand.device).scatter_add_(1, i, v.int())
            cand = cand & (taken == 0)
        if 'R' in strategy:
            i, v = _masked_topk(torch.rand_like(sim), cand, n_random)
            idx.append(i)
            valid.append(v)
        return torch.cat(idx, dim=1), torch.cat(valid, dim=1)

    @torch.no_grad()
    def sample(self, anchor, label, index, bank):
        """Sample positives / negatives for each anchor from ``bank`` (rows of the shared label bank).

        Args:
            anchor: (B, D) normalised anchor embeddings; label, index: (B,) labels and sample indices.
            bank: (K, D) normalised bank embeddings.
        Returns:
            pos_idx (B, P), pos_valid (B, P), neg_idx (B, Q), neg_valid (B, Q): bank row indices and
            masks; invalid slots (too few candidates) carry arbitrary indices and must be ignored.
        """
        label = label.to(self.bank_label.device).long()
        index = index.to(self.bank_label.device).long()
        sim = anchor.detach().to(bank.dtype) @ bank.t()                       # cosine, eq. 7
        filled = (self.bank_label >= 0) & (self.bank_index.unsqueeze(0) != index.unsqueeze(1))
        same = self.bank_label.unsqueeze(0) == label.unsqueeze(1)
        pos_cand, neg_cand = filled & same, filled & ~same
        P = self.num_positives
        if self.positive_sampling == 'R+H':
            p_hard, p_rand = P - P // 2, P // 2
        else:
            p_hard = p_rand = P
        # hardest positives = lowest similarity -> top-k of -sim
        pos_idx, pos_valid = self._draw(-sim, pos_cand, self.positive_sampling, p_hard, p_rand)
        neg_idx, neg_valid = self._draw(sim, neg_cand, self.negative_sampling,
                                        self.num_hard_negatives, self.num_random_negatives)
        return pos_idx, pos_valid, neg_idx, neg_valid

    # ------------------------------------------------------------------ loss (eqs. 7-9)
    def contrast(self, anchor, label, index, branch):
        """Multi-positive InfoNCE of ``anchor`` against the ``branch`` bank; returns (loss, num_anchors)."""
        bank = getattr(self, f'bank_{branch}')
        pos_idx, pos_valid, neg_idx, neg_valid = self.sample(anchor, label, index, bank)
        # Gather the sampled (detached) bank rows: a copy, so the in-place bank write at the end of forward
        # does not invalidate the saved tensors of this graph.  Gradient flows through the anchor only.
        # The loss is computed in float32 even under autocast (temperature-scaled logsumexp).
        tau = self.temperature[branch]
        with torch.autocast(device_type=anchor.device.type, enabled=False):
            a = anchor.float().unsqueeze(2)
            bank = bank.detach().float()
            pos = torch.bmm(bank[pos_idx], a).squeeze(2) / tau    # (B, P)
            neg = torch.bmm(bank[neg_idx], a).squeeze(2) / tau    # (B, Q)
        has_pos, has_neg = pos_valid.any(dim=1), neg_valid.any(dim=1)
        ok = has_pos & has_neg
        # rows with no valid negative are filled with zeros (never used) to keep logsumexp's gradient finite
        neg = torch.where(neg_valid, neg, neg.new_tensor(float('-inf')))
        neg = torch.where(has_neg.unsqueeze(1), neg, torch.zeros_like(neg))
        neg_lse = torch.logsumexp(neg, dim=1, keepdim=True) if neg.size(1) else \
            neg.new_full((neg.size(0), 1), float('-inf'))
        pos = torch.where(pos_valid, pos, torch.zeros_like(pos))
        per_pos = torch.logaddexp(pos, neg_lse) - pos                         # -log(e^p / (e^p + sum e^n))
        per_pos = torch.where(pos_valid, per_pos, torch.zeros_like(per_pos))
        per_anchor = per_pos.sum(dim=1) / pos_valid.sum(dim=1).clamp(min=1)
        n = int(ok.sum())
        if n == 0:
            return anchor.sum() * 0.0, 0
        return per_anchor[ok].mean(), n

    def forward(self, feature_map, num_person, label, index, update=None):
        """Contrastive losses for one training step, then the bank write of this batch.

        Args:
            feature_map: (N*M, C, T', V) encoder output before pooling.
            num_person: M.  label, index: (N,) class labels and training-set sample indices.
            update: write the banks (default: ``self.training``).
        Returns:
            {'loss': lambda * sum of the enabled branch losses (eq. 10), 'loss_s' / 'loss_t' / 'loss_g' for
             the enabled branches, 'num_anchors': anchors that had both positives and negatives (min over
             branches), 'bank_filled': filled bank rows}.
        """
        if self.num_class is not None and label.numel() and int(label.max()) >= self.num_class:
            raise ValueError(f'label {int(label.max())} out of range for num_class={self.num_class}')
        feats = self.decompose(feature_map, num_person)
        out, total, counts = {}, 0.0, []
        for b in self.branches:
            loss_b, n = self.contrast(feats[b], label, index, b)
            out[f'loss_{b}'] = loss_b
            total = total + loss_b
            counts.append(n)
        out['loss'] = self.loss_weight * total
        out['num_anchors'] = min(counts)
        if self.training if update is None else update:
            self.update_banks(feats, label, index)
        out['bank_filled'] = self.num_filled
        return out
