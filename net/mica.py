"""MICA (Modeling Internal and Contextual Attention): W. Xin, Y. Teng, J. Zhang, Y. Liu, R. Liu, Y. Hu,
Q. Miao, "Modeling the Internal and Contextual Attention for Self-Supervised Skeleton-Based Action
Recognition", Sensors 25(21), 6532, 2025, doi:10.3390/s25216532.

A base (``base_method``): SkeleMixCLR (``net/skelemixclr.py``: its mixing, objective and head; the baseline of
the paper's Tables 2 and 3 and of its configs) or SkeletonCLR (plain InfoNCE, section 4's wording), on the
MoCo core (K 32768, tau 0.2, m 0.999), with
* FreST (``net/frest.py``) appended to the skeleton encoder (query and key) on its feature map; it
  stays part of the encoder at evaluation (``encoder_q.neck.*``);
* Feature Modulation (section 4.1, eq. L_KL, Algorithm 1): frozen text embeddings of the class
  descriptions are the anchors of the skeleton-language domain; the student is the distribution over
  the anchors of the query embedding (``fm_embedding: query``: z_q itself, Algorithm 1's shapes, at the
  text width or, narrower, against the anchors in their principal subspace; ``projection``: a separate
  Linear(hidden_dim, text width)), with
  Gaussian noise on the student and the anchors in training; the teacher P(X) (``fm_target``):
  ``text`` (paper mode, uses labels) softmax(anchors[y] . anchors^T / tau_t), the sample's class text
  embedding z_t against the anchors; ``teacher`` (label-free) the momentum key embedding's distribution
  (sharper tau_t, detached); ``label`` the smoothed one-hot class; L_KL = KL(teacher || student), one
  term per prompt kind averaged: ``fm_objective: part_pooled`` (as GAP, which section 5.2 follows: the
  body-part kinds are read from part features pooled over the layout's ``text_parts`` joints, through one
  Linear per part or the FM head, ``part_head``; section 5.2's "multi-part contrastive learning
  objective"), ``multi_part`` (every
  kind against the one global embedding) or one term on the averaged anchor (``averaged``);
* the modality harmonizer (section 4.2): cross-attention (inner width ``harmonizer_width``) with the
  frame-level skeleton features as queries and the word-level text features of the descriptions as
  keys/values, added back to the skeleton feature on the FM path.
Table 3's size of the paper configs (docs/METHODS.md): ``part_head: shared``, ``harmonizer_width: 128``,
z_q at SkeleMixCLR's 128, FreST's depthwise decoupling.
L = L_base + lambda L_KL (section 4.3; L_base = L_info, or SkeleMixCLR's L).  The text stack is not needed at run time: the anchors and
token features are read from a file made by ``tools/gen_text_features.py``.
"""
import math
import os

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from net.frest import FreST
from net.moco import embedding_std
from net.skelemixclr import SkeleMixCLR
from net.text_features import (PROMPT_KINDS, check_text_dataset, feature_class_names, load_text_features,
                               read_dataset_info)

FM_TARGETS = ('text', 'teacher', 'label')
FM_EMBEDDINGS = ('query', 'projection')
FM_OBJECTIVES = ('part_pooled', 'multi_part', 'averaged')
PART_HEADS = ('linear', 'shared')
LABEL_TARGETS = ('text', 'label')       # FM teachers that read the sample's class label
# ``pretrain_labels`` values: pretraining read no labels / read the training labels / not recorded (an
# evaluation model before its weights are loaded, or a checkpoint made before the record existed)
LABELS_FREE, LABELS_USED, LABELS_UNKNOWN = 0, 1, 255
GLOBAL_KINDS = ('global', 'label')      # prompt kinds read against the whole-body embedding
BASE_METHODS = ('skelemixclr', 'skeletonclr')


def fm_kl_loss(student_logits, teacher_logits):
    """Algorithm 1's ``loss_kld``: KL(softmax(teacher) || softmax(student)), batch mean."""
    return F.kl_div(F.log_softmax(student_logits, dim=1), F.softmax(teacher_logits, dim=1), reduction='batchmean')


def text_teacher_logits(anchors, label, tau_t):
    """Paper-mode teacher (Algorithm 1's ``z_t / tau_t``, z_t the sample's class text embedding), read
    over the anchors so that it is a distribution like the student's: anchors[y] . anchors^T / tau_t,
    (N, num_class), or (P, N, num_class) for P anchor sets (P, num_class, D) at once.  It peaks at the
    sample's class and spreads over semantically close classes."""
    return anchors[..., label, :] @ anchors.transpose(-1, -2) / tau_t


def per_kind(z, anchors):
    """z (N, D) for every prompt kind, or (P, N, D) one per kind: as (P, N, D)."""
    return z.unsqueeze(0).expand(anchors.size(0), -1, -1) if z.dim() == 2 else z


def part_pooling(parts, num_node):
    """(P, V) membership of the parts (lists of joints): row p is 1 on part p's joints, 0 elsewhere."""
    member = torch.zeros(len(parts), num_node)
    for p, joints in enumerate(parts):
        member[p, list(joints)] = 1.0
    return member


def part_pool(feature_map, member, num_person):
    """GAP's part features of every part in one pass: the feature map (N*M, C, T', V) averaged over each
    part's joints (``member``, (P, V) from ``part_pooling``), the frames and the persons
    (``feature[..., joints].mean(4).mean(3).mean(1)``): (P, N, C)."""
    member = member.to(feature_map.dtype)
    x = (feature_map.mean(dim=2) @ member.T) / member.sum(dim=1)                   # (N*M, C, P)
    x = x.permute(2, 0, 1)
    return x.reshape(x.size(0), -1, num_person, x.size(2)).mean(dim=2)


def principal_basis(anchors, width):
    """(D, width) orthonormal basis in which a ``width``-d embedding is read against D-d text anchors
    (``anchors`` (..., C, D), all prompt kinds together): the identity (zero-padded) when width >= D, else
    the top ``width`` right singular vectors of the stacked anchors (uncentred PCA: the ``width``-d subspace
    that keeps the most of the anchors' energy; exact when their span has at most ``width`` dimensions).
    Signs are fixed (each vector's largest-magnitude entry positive) so the basis does not depend on the
    LAPACK build.  Computed in float64 once, from the text file: no parameters."""
    flat = anchors.reshape(-1, anchors.size(-1)).double()
    dim = flat.size(1)
    if width >= dim:
        return torch.eye(dim, width, dtype=anchors.dtype)
    basis = torch.linalg.svd(flat, full_matrices=False).Vh[:width].T                  # (D, width)
    signs = basis.gather(0, basis.abs().argmax(dim=0, keepdim=True)).sign()
    return (basis * signs).to(anchors.dtype)


def read_text(path, encoder, descriptions, prompts, num_class):
    """Anchors from a feature file: per prompt kind (P, num_class, D) (each sentence normalised), their
    normalised mean (num_class, D), and the word features (W, D) of the 'global' sentences."""
    if descriptions and not os.path.isfile(descriptions):
        raise ValueError(f"model_args.descriptions: '{descriptions}' does not exist")
    text = load_text_features(path, encoder=encoder, descriptions=descriptions or None)
    unknown = [p for p in prompts if p not in PROMPT_KINDS]
    if unknown or not prompts:
        raise ValueError(f"model_args.prompts={list(prompts)}: choose from {', '.join(PROMPT_KINDS)}")
    pooled, tokens, mask = text['pooled'], text['tokens'], text['token_mask']
    if num_class is not None:
        if pooled.size(0) < num_class:
            raise ValueError(f"text features '{path}' describe {pooled.size(0)} classes, the model has "
                             f"num_class={num_class}: use the descriptions of this dataset")
        pooled, tokens, mask = pooled[:num_class], tokens[:num_class], mask[:num_class]
    parts = F.normalize(pooled[:, [PROMPT_KINDS.index(p) for p in prompts]], dim=-1).transpose(0, 1)
    anchors = F.normalize(parts.mean(dim=0), dim=-1)
    return {'parts': parts.contiguous(), 'anchors': anchors, 'words': tokens[mask], 'meta': text['meta']}


class CrossAttention(nn.Module):
    """Multi-head cross-attention whose keys and values are the same for every sample: queries (N, L, C),
    keys/values (W, D) -> (N, L, C).  The arithmetic and the parameter names of ``nn.MultiheadAttention``
    (``q_proj_weight`` (d, C), ``k_proj_weight`` / ``v_proj_weight`` (d, D), ``in_proj_bias`` (3d),
    ``out_proj``), with an inner width d (``width``, default C) that may differ from C; the keys and values
    are projected once per call, not once per sample, and the N*L queries attend in one batch."""

    def __init__(self, channels, text_dim, num_heads=4, width=None):
        super().__init__()
        width = channels if width is None else width
        if width % num_heads:
            raise ValueError(f'model_args.harmonizer_width={width} must be a multiple of harmonizer_heads={num_heads}')
        self.num_heads, self.width = num_heads, width
        self.q_proj_weight = nn.Parameter(torch.empty(width, channels))
        self.k_proj_weight = nn.Parameter(torch.empty(width, text_dim))
        self.v_proj_weight = nn.Parameter(torch.empty(width, text_dim))
        self.in_proj_bias = nn.Parameter(torch.empty(3 * width))
        self.out_proj = nn.Linear(width, channels)
        for weight in (self.q_proj_weight, self.k_proj_weight, self.v_proj_weight):    # nn.MultiheadAttention's init
            nn.init.xavier_uniform_(weight)
        nn.init.zeros_(self.in_proj_bias)
        nn.init.zeros_(self.out_proj.bias)

    def attend(self, queries, words):
        """softmax(q k^T / sqrt(d_h)) v per head, before the output projection: (N, L, d)."""
        n, length, _ = queries.shape
        h = self.num_heads
        bq, bk, bv = self.in_proj_bias.chunk(3)
        q = F.linear(queries.reshape(n * length, -1), self.q_proj_weight, bq)           # (N*L, d)
        k, v = F.linear(words, self.k_proj_weight, bk), F.linear(words, self.v_proj_weight, bv)   # (W, d): once
        q, k, v = (t.view(t.size(0), h, -1).transpose(0, 1).unsqueeze(0) for t in (q, k, v))  # (1, h, rows, d_h)
        out = F.scaled_dot_product_attention(q, k, v)                                 # (1, h, N*L, d_h)
        return out[0].transpose(0, 1).reshape(n, length, self.width)

    def forward(self, queries, words):
        return self.out_proj(self.attend(queries, words))


class ModalityHarmonizer(nn.Module):
    """Cross-attention (``CrossAttention``, inner width ``width``): frame-level skeleton features (N, T', C)
    attend to the word-level text features (W, D) of the class descriptions; returns the time-averaged
    attended feature (N, C) (the mean over frames taken before the output projection, which is linear)."""

    def __init__(self, channels, text_dim, num_heads=4, width=None):
        super().__init__()
        self.attention = CrossAttention(channels, text_dim, num_heads, width)
        self.norm = nn.LayerNorm(channels)

    def forward(self, frames, words):
        return self.attention.out_proj(self.attention.attend(self.norm(frames), words).mean(dim=1))


class MICA(SkeleMixCLR):
    """``model: net.mica.MICA``: MoCo's ``model_args`` plus

    base: base_method ('skelemixclr': SkeleMixCLR's objective, mixing and head (``swap_cfg``,
        ``head_bn: hidden``), the baseline of the paper's Tables 2 and 3; 'skeletonclr': plain InfoNCE,
        section 4's wording, the class default);
    FreST: frest, fres, fret, global_filter, local_filter, adaptive_mask (switches), tau_f (mask
        threshold on the median-normalised energy, 2.0), num_frames (input T, sizes the temporal
        filter), decoupling ('linear' | 'depthwise' | 'none'), filter_std (0.02);
    text: text_features (file from tools/gen_text_features.py), text_encoder ('minilm' | 'clip', checked
        against the file), descriptions (the YAML the file was made from, checksum checked), prompts
        (which description sentences form the anchors);
    FM: feature_modulation (switch), lambda_kl (0.01), tau_s, tau_t (student/teacher temperatures),
        noise_std (Algorithm 1), fm_target ('text' | 'teacher' | 'label'), fm_embedding ('query' |
        'projection'), fm_objective ('part_pooled' | 'multi_part' | 'averaged'), part_head ('linear': one
        Linear per part to the FM width, GAP's; 'shared': the FM embedding's own head, no parameters),
        label_smoothing;
    harmonizer (switch), harmonizer_heads, harmonizer_width (the attention's inner width; default the
        skeleton feature width).
    ``feature_dim`` defaults to the text width with ``fm_embedding: query`` (384 MiniLM, 512 CLIP), else 128;
    a narrower z_q is read against the anchors in their principal subspace (``principal_basis``).
    """

    forward_keywords = ('label',)      # fm_target text / label use the class labels in pretraining

    def __init__(self, *args, frest=True, fres=True, fret=True, global_filter=True, local_filter=True,
                 adaptive_mask=True, tau_f=2.0, num_frames=50, decoupling='linear', filter_std=0.02,
                 text_features=None, text_encoder='minilm', descriptions=None, prompts=PROMPT_KINDS,
                 feature_modulation=True, lambda_kl=0.01, tau_s=0.1, tau_t=0.04, noise_std=0.01,
                 fm_target='text', fm_embedding='query', fm_objective='multi_part', part_head='linear',
                 label_smoothing=0.1, harmonizer=True, harmonizer_heads=4, harmonizer_width=None, feature_dim=None,
                 base_method='skeletonclr', head_bn=None, **kwargs):
        if base_method not in BASE_METHODS:
            raise ValueError(f"model_args.base_method={base_method!r}: use one of {', '.join(BASE_METHODS)}")
        self.base_method = base_method
        if head_bn is None:                   # each base's own head unless given
            head_bn = 'hidden' if base_method == 'skelemixclr' else False
        fm = feature_modulation and kwargs.get('pretrain', True)
        text = None
        if fm:
            for key, value, allowed in (('fm_target', fm_target, FM_TARGETS),
                                        ('fm_embedding', fm_embedding, FM_EMBEDDINGS),
                                        ('fm_objective', fm_objective, FM_OBJECTIVES),
                                        ('part_head', part_head, PART_HEADS)):
                if value not in allowed:
                    raise ValueError(f"model_args.{key}={value!r}: use one of {', '.join(allowed)}")
            if not text_features:
                raise ValueError('model_args.text_features is required for feature modulation, e.g. '
                                 "config/text/features/ntu120.minilm.npz (or set feature_modulation: False)")
            text = read_text(text_features, text_encoder, descriptions, prompts, kwargs.get('num_class'))
            if fm_embedding == 'query' and feature_dim is None:
                feature_dim = text['anchors'].size(1)
        # FreS -> FreT after the last block of both encoders (``build_neck``, before the key copy)
        self.frest_args = dict(num_frames=num_frames, fres=fres, fret=fret, global_filter=global_filter,
                               local_filter=local_filter, adaptive_mask=adaptive_mask, tau=tau_f,
                               decoupling=decoupling, filter_std=filter_std) if frest else None
        super().__init__(*args, feature_dim=128 if feature_dim is None else feature_dim, head_bn=head_bn, **kwargs)
        self.feature_modulation = fm
        # the checkpoint's record of label use in pretraining (``LABELS_*``; evaluations read it)
        used = LABELS_USED if fm and fm_target in LABEL_TARGETS else LABELS_FREE
        self.register_buffer('pretrain_labels', torch.tensor(used if self.pretrain else LABELS_UNKNOWN, dtype=torch.uint8))
        if not self.feature_modulation:
            if self.pretrain and harmonizer:
                raise ValueError('model_args.harmonizer needs feature_modulation: True (it feeds the FM embedding)')
            return
        self.lambda_kl, self.tau_s, self.tau_t = lambda_kl, tau_s, tau_t
        self.noise_std, self.fm_target, self.label_smoothing = noise_std, fm_target, label_smoothing
        self.fm_embedding, self.fm_objective, self.part_head = fm_embedding, fm_objective, part_head
        self.prompts = list(prompts)
        self.text_meta, self.text_source = text['meta'], (text_features, descriptions)
        channels, text_dim = self.encoder_q.feature_dim, text['anchors'].size(1)
        # the FM embedding: z_q (its width feature_dim) or a projection to the text width
        width = self.queue.size(0) if fm_embedding == 'query' else text_dim
        self.register_buffer('anchors', text['anchors'], persistent=False)          # (num_class, D)
        self.register_buffer('part_anchors', text['parts'], persistent=False)       # (P, num_class, D)
        self.register_buffer('words', text['words'], persistent=False)              # (W, D) real tokens only
        # the anchors the student reads, in the FM width (the text width: the anchors themselves)
        basis = principal_basis(self.fm_anchors, width)
        self.register_buffer('student_anchors', None if width == text_dim else self.fm_anchors @ basis,
                             persistent=False)
        self.fm_proj = nn.Linear(channels, text_dim) if fm_embedding == 'projection' else None
        self.harmonizer = ModalityHarmonizer(channels, text_dim, harmonizer_heads, harmonizer_width) \
            if harmonizer else None
        self.part_proj, self.part_kinds = None, []
        if fm_objective == 'part_pooled':
            layout = self.encoder_q.layout
            described = dict(layout.text_parts)
            for kind in prompts:
                if kind not in GLOBAL_KINDS and kind not in described:
                    raise ValueError(f"model_args.fm_objective=part_pooled: layout '{layout.name}' has no text_parts "
                                     f"entry for the prompt kind '{kind}' (add text_parts to the layout, docs/DATA.md, "
                                     "or use fm_objective: multi_part)")
            self.part_kinds = [k for k in prompts if k not in GLOBAL_KINDS]
            self.register_buffer('part_members', part_pooling([described[k] for k in self.part_kinds],
                                                              layout.num_node), persistent=False)
            # prompt kind i reads row kind_rows[i] of [whole body, part 1, part 2, ...]
            rows = [0 if k in GLOBAL_KINDS else 1 + self.part_kinds.index(k) for k in prompts]
            self.kind_rows = None if rows == list(range(len(rows))) else rows
            self.register_buffer('kind_index', torch.tensor(rows), persistent=False)
            if part_head == 'linear':
                self.part_proj = nn.ModuleDict({k: nn.Linear(channels, width) for k in self.part_kinds})

    @property
    def part_joints(self):
        """{part kind: its joints (the layout's ``text_parts``)} of the part-wise objective."""
        described = dict(self.encoder_q.layout.text_parts)
        return {k: list(described[k]) for k in self.part_kinds}

    @property
    def uniform_terms(self):
        """{'loss_kl': L_KL when the student is uniform over the C classes}: ln C - H(P), averaged over the
        classes and prompt kinds (ln C for a one-hot teacher); the pretraining monitor warns when the FM
        term stays there.  None for the label-free teacher, whose P varies with the batch."""
        if not (self.pretrain and self.feature_modulation) or self.fm_target not in LABEL_TARGETS:
            return {}
        anchors = self.fm_anchors
        teacher = self.fm_targets(label=torch.arange(anchors.size(1), device=anchors.device))
        entropy = -(teacher * teacher.clamp_min(1e-30).log()).sum(-1)
        return {'loss_kl': math.log(anchors.size(1)) - float(entropy.mean())}

    def build_mix(self, swap_cfg):
        """SkeleMix on the SkeleMixCLR base; none on SkeletonCLR (L_info alone)."""
        return super().build_mix(swap_cfg) if self.base_method == 'skelemixclr' else None

    def check_data(self, labels, label_path, dataset=None, class_subset=False):
        """The text feature file must describe the training data (``check_text_dataset``): the dataset name
        (``dataset``, else ``dataset.yaml`` next to ``label_path``), the class names and the labels."""
        if not self.feature_modulation:
            return
        info = read_dataset_info(label_path)
        where = ' (key dataset)'
        if not dataset and info.get('dataset'):
            dataset, where = info['dataset'], f" ({info['path']})"
        labels = np.asarray(labels)
        path, descriptions = self.text_source
        check_text_dataset(self.text_meta, path, anchors=int(self.anchors.size(0)),
                           label_classes=int(labels.max()) + 1 if labels.size else None, dataset=dataset,
                           class_names=info.get('classes'),
                           file_class_names=feature_class_names(self.text_meta, descriptions),
                           allow_subset=class_subset, where=where)

    def build_neck(self, encoder):
        """FreST(C', T', V) on the encoder's map; T' from the encoder itself (no stride list)."""
        if self.frest_args is None:
            return None
        args = dict(self.frest_args)
        channels, frames, joints = encoder.feature_map_shape(args.pop('num_frames'))
        return FreST(channels, frames, joints, **args)

    @property
    def fm_anchors(self):
        """(P, num_class, D): one anchor set per prompt kind (multi_part) or the averaged one (P = 1), in the
        text space (what the text teacher reads)."""
        return self.anchors.unsqueeze(0) if self.fm_objective == 'averaged' else self.part_anchors

    @property
    def fm_student_anchors(self):
        """The anchors the student (and the label-free teacher) read, in the FM embedding's width: the text
        anchors, or their coordinates in the principal basis when z_q is narrower than the text."""
        return self.fm_anchors if self.student_anchors is None else self.student_anchors

    def fm_heads(self, pooled, key=False):
        """The FM head of pooled features (..., C): z_q's head (the query encoder's ``fc``, the key encoder's
        with ``key``) or the separate projection, L2-normalised."""
        if self.fm_embedding == 'projection':
            head = self.fm_proj
        else:
            head = self.encoder_k.fc if key else self.encoder_q.fc
        return F.normalize(head(pooled), dim=-1)

    def fm_feature(self, feature_map, num_person, q=None, pooled=None):
        """The FM embedding of a feature map, L2-normalised: the MoCo embedding (``fm_embedding: query``;
        ``q`` is returned as is when there is no harmonizer) or the separate projection, of the pooled
        feature (``pooled``, else pooled here) plus the harmonizer's output."""
        if self.fm_embedding == 'query' and self.harmonizer is None and q is not None:
            return q
        if pooled is None:
            pooled = self.encoder_q.pool(feature_map, num_person)
        if self.harmonizer is not None:
            frames = feature_map.mean(dim=3)                                         # (N*M, C, T')
            frames = frames.view(-1, num_person, *frames.shape[1:]).mean(dim=1).transpose(1, 2)
            pooled = pooled + self.harmonizer(frames, self.words)
        return self.fm_heads(pooled)

    def fm_embeddings(self, feature_map, num_person, whole, key=False):
        """The embeddings the prompt kinds are read against: ``whole`` (N, D), the whole-body FM embedding,
        for every kind (``multi_part``, ``averaged``), or with ``part_pooled`` (P, N, D): ``whole`` for the
        global kinds and, for the body-part kinds, their part features (``part_pool`` over the layout's
        ``text_parts`` joints, all parts in one pass) through ``part_proj`` (one Linear per part, as one
        batched product) or the shared FM head (``part_head: shared``), L2-normalised."""
        if not self.part_kinds:
            return whole
        parts = part_pool(feature_map, self.part_members, num_person)                 # (parts, N, C)
        if self.part_proj is None:
            parts = self.fm_heads(parts.flatten(0, 1), key=key).view(parts.size(0), parts.size(1), -1)
        else:
            linears = [self.part_proj[k] for k in self.part_kinds]
            weight = torch.stack([m.weight for m in linears]).transpose(1, 2)          # (parts, C, D)
            bias = torch.stack([m.bias for m in linears]).unsqueeze(1)                 # (parts, 1, D)
            parts = F.normalize(torch.baddbmm(bias, parts, weight), dim=-1)
        stacked = torch.cat([whole.unsqueeze(0), parts])
        return stacked if self.kind_rows is None else stacked.index_select(0, self.kind_index)

    @torch.no_grad()
    def fm_targets(self, z_t=None, label=None):
        """Teacher distributions P(X), (P, N, num_class), detached: the text teacher over the clean text
        anchors (tau_t), the smoothed class, or the label-free key embedding over the student's anchors."""
        if self.fm_target == 'teacher':
            anchors = self.fm_student_anchors
            return torch.softmax(torch.einsum('pnd,pkd->pnk', per_kind(z_t, anchors), anchors) / self.tau_t, dim=-1)
        if label is None:
            raise ValueError(f"model_args.fm_target={self.fm_target!r} needs labels from the feeder "
                             "(fm_target: teacher is the label-free mode)")
        anchors = self.fm_anchors
        label = label.long()
        n = anchors.size(1)
        if self.fm_target == 'label':
            hot = (label[:, None] == torch.arange(n, device=label.device)).to(anchors.dtype)   # no host range check
            target = hot * (1 - self.label_smoothing) + self.label_smoothing / n
            return target.unsqueeze(0).expand(anchors.size(0), -1, -1)
        return torch.softmax(text_teacher_logits(anchors, label, self.tau_t), dim=-1)

    def fm_logits(self, z_s, z_t=None, label=None):
        """Student logits (P, N, num_class) of Algorithm 1 (noise on z_q and on the anchors in training,
        ``l_b / tau_s``) and the teacher distributions (``fm_targets``)."""
        anchors = self.fm_student_anchors
        noisy = anchors
        if self.training and self.noise_std > 0:
            z_s = z_s + torch.randn_like(z_s) * self.noise_std
            noisy = anchors + torch.randn_like(anchors) * self.noise_std
        student = torch.einsum('pnd,pkd->pnk', per_kind(z_s, anchors), noisy) / self.tau_s
        return student, self.fm_targets(z_t, label)

    def fm_loss(self, z_s, z_t=None, label=None):
        """L_KL = mean over prompt kinds of KL(P || Q), each a batch mean (project reading: docs/METHODS.md)."""
        student, target = self.fm_logits(z_s, z_t, label)
        return F.kl_div(F.log_softmax(student, dim=-1), target, reduction='sum') / (student.size(0) * student.size(1))

    def forward(self, im_q, im_k=None, label=None, mixes=None):
        if not self.pretrain:
            return self.forward_eval(im_q, im_k)
        M = im_q.size(4)
        fmap_q = self.query_feature_map(im_q)
        pooled_q = self.encoder_q.pool(fmap_q, M)
        q = F.normalize(self.encoder_q.fc(pooled_q), dim=1)
        embedded = self.encode_mixes(im_q, mixes) if self.mix is not None else []
        with torch.no_grad():
            self.momentum_update()
            fmap_k = self.key_feature_map(im_k)
            k = self.project_key(fmap_k, M)
        out = self.mix_losses(embedded, q, k)        # L_info (and SkeleMix's terms on that base)
        if self.feature_modulation:
            z_t = None
            if self.fm_target == 'teacher':
                with torch.no_grad():
                    z_t = k if self.fm_embedding == 'query' else self.fm_feature(fmap_k, M)
                    z_t = self.fm_embeddings(fmap_k, M, z_t, key=True)
            z_s = self.fm_embeddings(fmap_q, M, self.fm_feature(fmap_q, M, q, pooled_q))
            loss_kl = self.fm_loss(z_s, z_t, label)
            out['loss'] = out['loss'] + self.lambda_kl * loss_kl
            out['loss_kl'] = loss_kl.detach()
        self.enqueue(k)
        return out
