"""CSRE: Contrastive Spatiotemporal Representation Enhancement, a train-time head (paper ``csre.txt``;
the authors' code zhshj0110/CSRE).

The head takes a supervised encoder's pre-pooling feature map ``(N*M, C, T', V)`` (``encode``), averages
the persons, decomposes it into a spatial and a temporal embedding (STFD, eqs. 4-5: ``decompose``), keeps
both in memory banks addressed by sample index (eq. 6: ``update_banks``), samples label-aware positives and
negatives from the banks (Sec. 3.3.3, Table 6: ``sample``) and returns a multi-positive InfoNCE loss per
branch on cosine similarities (eqs. 7-9: ``contrast``); the processor adds ``loss`` to the cross-entropy
(eq. 10).  The encoder's checkpoints never hold the head.  Reading choices, defaults and their sources,
and the earlier readings kept as options: docs/METHODS.md, "Supervised recognition and CSRE".
"""

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

STRATEGIES = ('R', 'H', 'R+H')
BRANCHES = ('s', 't', 'g')
CHOICES = {'negative_softmax': ('separate', 'joint'), 'min_candidates': ('full', 'any'),
           'bank_update': ('before', 'after'), 'branch_reduction': ('mean', 'sum')}


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
        bank_copies: rows per sample in index-addressed banks (the processor gives the feeder's
            ``repeat``): the c-th write of sample i goes to row i + c mod copies x num_samples, as the
            authors' banks have one row per repeated copy (NW-UCLA ``repeat: 5``: 5 x 1,020 rows).
        num_positives, num_hard_negatives, num_random_negatives: sampling counts (Sec. 4.2: 128/512/512).
        positive_sampling, negative_sampling: 'R', 'H' or 'R+H' (Table 6).
        temperature: tau of eqs. 8-9; a float, or a tuple (tau_s, tau_t[, tau_g]).
        loss_weight: lambda multiplying the branch losses' mean (or sum) (eq. 10).
        branch_reduction: 'mean' (the authors' (L_s + L_t) / 2) or 'sum' (eq. 10 as printed).
        negative_softmax: 'separate' (one softmax per negative kind, the authors) or 'joint' (one
            softmax over hard + disjoint random negatives).
        min_candidates: 'full' (skip anchors without the full sample, the authors) or 'any'.
        bank_update: 'before' (write the batch, then contrast, own entry included: the authors) or
            'after' (contrast with the earlier bank, own entry excluded).
        spatial, temporal, global_contrast: branch switches (Table 5: SC, TC, GC).
        num_frames: T' of the feature map (required when ``temporal``); other T' are pooled to it.
        persistent_banks: whether the banks appear in ``state_dict()`` (for resumable checkpoints).
    """

    def __init__(self, channels, num_node, num_samples=None, num_class=None, embed_dim=256, reduction=8,
                 bank_capacity=None, num_positives=128, num_hard_negatives=512, num_random_negatives=512,
                 positive_sampling='H', negative_sampling='R+H', temperature=0.8, loss_weight=1.0,
                 spatial=True, temporal=True, global_contrast=False, num_frames=None,
                 persistent_banks=True, branch_reduction='mean', negative_softmax='separate',
                 min_candidates='full', bank_update='before', bank_copies=1):
        super().__init__()
        if not (spatial or temporal or global_contrast):
            raise ValueError('CSRE needs at least one of spatial / temporal / global_contrast')
        for key, value in (('positive_sampling', positive_sampling), ('negative_sampling', negative_sampling)):
            if value not in STRATEGIES:
                raise ValueError(f"train_head_args.{key}={value!r}: use one of {', '.join(STRATEGIES)}")
        for key, value in (('branch_reduction', branch_reduction), ('negative_softmax', negative_softmax),
                           ('min_candidates', min_candidates), ('bank_update', bank_update)):
            if value not in CHOICES[key]:
                raise ValueError(f"train_head_args.{key}={value!r}: use one of {', '.join(CHOICES[key])}")
        for key, value in (('reduction', reduction), ('embed_dim', embed_dim)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f'train_head_args.{key}={value!r}: must be a positive integer')
        for key, value in (('num_positives', num_positives), ('num_hard_negatives', num_hard_negatives),
                           ('num_random_negatives', num_random_negatives)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f'train_head_args.{key}={value!r}: must be an integer >= 0')
        self.branch_reduction, self.negative_softmax = branch_reduction, negative_softmax
        self.min_candidates, self.bank_update = min_candidates, bank_update
        if temporal and not num_frames:
            raise ValueError('the temporal branch needs num_frames (T\' of the feature map); '
                             'see the encoder\'s feature_map_shape (net/utils/encoder.py)')
        if bank_capacity is None and not num_samples:
            raise ValueError('give num_samples (index-addressed banks) or bank_capacity (FIFO banks)')
        self.channels = channels
        self.num_node = num_node
        self.num_frames = num_frames
        self.num_class = num_class
        self.embed_dim = embed_dim
        self.fifo = bank_capacity is not None
        if isinstance(bank_copies, bool) or not isinstance(bank_copies, int) or bank_copies < 1:
            raise ValueError(f'train_head_args.bank_copies={bank_copies!r}: must be an integer >= 1')
        self.num_samples = None if self.fifo else int(num_samples)
        self.bank_copies = 1 if self.fifo else bank_copies
        self.bank_size = int(bank_capacity) if self.fifo else self.num_samples * self.bank_copies
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
        if not all(t > 0 for t in self.temperature.values()):
            raise ValueError(f'train_head_args.temperature={temperature!r}: must be > 0')
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
        for b in self.branches:                      # STD_unit's initialisation of the projections
            proj = getattr(self, f'proj_{b}')
            nn.init.kaiming_normal_(proj.weight, mode='fan_out')
            nn.init.zeros_(proj.bias)

        # Memory banks (eq. 6): features, labels (-1 = empty) and the sample index stored in each row.
        for b in self.branches:
            self.register_buffer(f'bank_{b}', torch.zeros(self.bank_size, embed_dim), persistent=persistent_banks)
        self.register_buffer('bank_label', torch.full((self.bank_size,), -1, dtype=torch.long),
                             persistent=persistent_banks)
        self.register_buffer('bank_index', torch.full((self.bank_size,), -1, dtype=torch.long),
                             persistent=persistent_banks)
        self.register_buffer('bank_ptr', torch.zeros((), dtype=torch.long), persistent=persistent_banks)
        if self.bank_copies > 1:     # how often each sample was written: its next copy row
            self.register_buffer('bank_writes', torch.zeros(self.num_samples, dtype=torch.long),
                                 persistent=persistent_banks)

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
            if self.bank_copies > 1:      # copy c of sample i lives in row i + c * num_samples
                rows = index + self.num_samples * (self.bank_writes[index] % self.bank_copies)
                self.bank_writes[index] += 1
        for b, f in features.items():
            getattr(self, f'bank_{b}')[rows] = f.detach()[keep].to(getattr(self, f'bank_{b}').dtype)
        self.bank_label[rows] = label[keep]
        self.bank_index[rows] = index[keep]

    @property
    def num_filled(self):
        return int((self.bank_label >= 0).sum())

    # ------------------------------------------------------------------ sampling (Sec. 3.3.3, Table 6)
    def _draw(self, sim, cand, strategy, n_hard, n_random, disjoint=True):
        """Pick bank rows among ``cand`` (B, K): hard = highest ``sim``, random = random scores + topk.

        Returns (idx, valid, sizes): the picks of each kind side by side and the column count of each kind
        (hard first).  ``disjoint``: random picks avoid the hard ones (else they are drawn from all of
        ``cand``, as the authors' ``random.sample`` over every negative)."""
        idx, valid = [], []
        if 'H' in strategy:
            i, v = _masked_topk(sim, cand, n_hard)
            idx.append(i)
            valid.append(v)
            if disjoint:
                # scatter_add: invalid slots may repeat a valid index
                taken = torch.zeros(cand.shape, dtype=torch.int32, device=cand.device).scatter_add_(1, i, v.int())
                cand = cand & (taken == 0)
        if 'R' in strategy:
            i, v = _masked_topk(torch.rand_like(sim), cand, n_random)
            idx.append(i)
            valid.append(v)
        return torch.cat(idx, dim=1), torch.cat(valid, dim=1), [t.size(1) for t in idx]

    def negatives_needed(self):
        """The negative candidates an anchor needs under ``min_candidates='full'``: the largest count drawn
        (hard and random negatives come from the same candidates; the authors' ``negative_num``)."""
        counts = [self.num_hard_negatives] * ('H' in self.negative_sampling) + \
            [self.num_random_negatives] * ('R' in self.negative_sampling)
        return max(counts)

    def classes_without_full_sample(self, labels):
        """Classes whose anchors can never get the full sample under ``min_candidates='full'``, given the
        training labels (index-addressed banks hold ``bank_copies`` rows per sample): a list of
        ``(class, positive candidates, negative candidates)``.  Empty for FIFO banks, whose contents depend
        on the order, and under ``min_candidates='any'``."""
        if self.fifo or self.min_candidates != 'full':
            return []
        labels = np.asarray(labels).astype(np.int64).ravel()
        classes, counts = np.unique(labels, return_counts=True)
        own = 1 if self.bank_update == 'after' else 0              # 'after' excludes the anchor's own row
        short = []
        for c, n in zip(classes.tolist(), counts.tolist()):
            positives = n * self.bank_copies - own
            negatives = (labels.size - n) * self.bank_copies
            if positives < self.num_positives or negatives < self.negatives_needed():
                short.append((c, positives, negatives))
        return short

    @torch.no_grad()
    def sample(self, anchor, label, index, bank, return_groups=False):
        """Sample positives / negatives for each anchor from ``bank`` (rows of the shared label bank).

        Args:
            anchor: (B, D) normalised anchor embeddings; label, index: (B,) labels and sample indices.
            bank: (K, D) normalised bank embeddings.
            return_groups: also return the column count of each negative group (one per softmax).
        Returns:
            pos_idx (B, P), pos_valid (B, P), neg_idx (B, Q), neg_valid (B, Q) [, group sizes]: bank row
            indices and masks; invalid slots (too few candidates) carry arbitrary indices and must be
            ignored.  With ``min_candidates='full'`` every slot of an anchor without its full sample is
            invalid.
        """
        label = label.to(self.bank_label.device).long()
        index = index.to(self.bank_label.device).long()
        sim = anchor.detach().to(bank.dtype) @ bank.t()                       # cosine, eq. 7
        filled = (self.bank_label >= 0).unsqueeze(0).expand(label.numel(), -1)
        if self.bank_update == 'after':                                       # own stale entry excluded
            filled = filled & (self.bank_index.unsqueeze(0) != index.unsqueeze(1))
        same = self.bank_label.unsqueeze(0) == label.unsqueeze(1)
        pos_cand, neg_cand = filled & same, filled & ~same
        P = self.num_positives
        if self.positive_sampling == 'R+H':
            p_hard, p_rand = P - P // 2, P // 2
        else:
            p_hard = p_rand = P
        # hardest positives = lowest similarity -> top-k of -sim
        pos_idx, pos_valid, _ = self._draw(-sim, pos_cand, self.positive_sampling, p_hard, p_rand)
        neg_idx, neg_valid, sizes = self._draw(sim, neg_cand, self.negative_sampling, self.num_hard_negatives,
                                               self.num_random_negatives,
                                               disjoint=self.negative_softmax == 'joint')
        if self.min_candidates == 'full':
            full = (pos_cand.sum(1) >= P) & (neg_cand.sum(1) >= self.negatives_needed())
            pos_valid = pos_valid & full.unsqueeze(1)
            neg_valid = neg_valid & full.unsqueeze(1)
        if self.negative_softmax == 'joint':
            sizes = [neg_idx.size(1)]
        if return_groups:
            return pos_idx, pos_valid, neg_idx, neg_valid, sizes
        return pos_idx, pos_valid, neg_idx, neg_valid

    # ------------------------------------------------------------------ loss (eqs. 7-9)
    @staticmethod
    def _per_positive_loss(pos, pos_valid, neg, neg_valid):
        """-log(e^p / (e^p + sum_n e^n)) per (anchor, positive) for one negative group; (B, P) and the
        (B,) mask of anchors that have a negative in the group."""
        has_neg = neg_valid.any(dim=1)
        # rows with no valid negative are filled with zeros (never used) to keep logsumexp's gradient finite
        neg = torch.where(neg_valid, neg, neg.new_tensor(float('-inf')))
        neg = torch.where(has_neg.unsqueeze(1), neg, torch.zeros_like(neg))
        neg_lse = torch.logsumexp(neg, dim=1, keepdim=True) if neg.size(1) else \
            neg.new_full((neg.size(0), 1), float('-inf'))
        per_pos = torch.logaddexp(pos, neg_lse) - pos
        return torch.where(pos_valid, per_pos, torch.zeros_like(per_pos)), has_neg

    def contrast(self, anchor, label, index, branch):
        """Multi-positive InfoNCE of ``anchor`` against the ``branch`` bank; returns (loss, num_anchors)."""
        bank = getattr(self, f'bank_{branch}')
        pos_idx, pos_valid, neg_idx, neg_valid, sizes = self.sample(anchor, label, index, bank, return_groups=True)
        # Gather the sampled (detached) bank rows: a copy, so a later in-place bank write does not
        # invalidate the saved tensors of this graph.  Gradient flows through the anchor only.
        # The loss is computed in float32 even under autocast (temperature-scaled logsumexp).
        tau = self.temperature[branch]
        with torch.autocast(device_type=anchor.device.type, enabled=False):
            a = anchor.float().unsqueeze(2)
            bank = bank.detach().float()
            pos = torch.bmm(bank[pos_idx], a).squeeze(2) / tau    # (B, P)
            neg = torch.bmm(bank[neg_idx], a).squeeze(2) / tau    # (B, Q)
        pos = torch.where(pos_valid, pos, torch.zeros_like(pos))
        total = torch.zeros_like(pos[:, 0])
        terms = torch.zeros_like(total)
        for n, v in zip(neg.split(sizes, dim=1), neg_valid.split(sizes, dim=1)):
            per_pos, has_neg = self._per_positive_loss(pos, pos_valid, n, v)
            total = total + torch.where(has_neg, per_pos.sum(dim=1), torch.zeros_like(total))
            terms = terms + has_neg.to(total.dtype) * pos_valid.sum(dim=1)
        ok = pos_valid.any(dim=1) & (terms > 0)
        n = int(ok.sum())
        if n == 0:
            return anchor.sum() * 0.0, 0
        return (total[ok] / terms[ok]).mean(), n

    def forward(self, feature_map, num_person, label, index, update=None):
        """Contrastive losses for one training step and the bank write of this batch (before the losses
        with ``bank_update='before'``, after them with ``'after'``).

        Args:
            feature_map: (N*M, C, T', V) encoder output before pooling.
            num_person: M.  label, index: (N,) class labels and training-set sample indices.
            update: write the banks (default: ``self.training``).
        Returns:
            {'loss': lambda * mean (or sum) of the enabled branch losses (eq. 10), 'loss_s' / 'loss_t' /
             'loss_g' for the enabled branches, 'num_anchors': anchors that had their sample (min over
             branches), 'bank_filled': filled bank rows}.
        """
        if self.num_class is not None and label.numel() and int(label.max()) >= self.num_class:
            raise ValueError(f'label {int(label.max())} out of range for num_class={self.num_class}')
        feats = self.decompose(feature_map, num_person)
        write = self.training if update is None else update
        if write and self.bank_update == 'before':
            self.update_banks(feats, label, index)
        out, total, counts = {}, 0.0, []
        for b in self.branches:
            loss_b, n = self.contrast(feats[b], label, index, b)
            out[f'loss_{b}'] = loss_b
            total = total + loss_b
            counts.append(n)
        if self.branch_reduction == 'mean':
            total = total / len(self.branches)
        out['loss'] = self.loss_weight * total
        out['num_anchors'] = min(counts)
        if write and self.bank_update == 'after':
            self.update_banks(feats, label, index)
        out['bank_filled'] = self.num_filled
        return out
