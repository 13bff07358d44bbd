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
  the anchors of the query embedding (``fm_embedding: query``: z_q itself, Algorithm 1's shapes, with
  ``feature_dim`` = the text width; ``projection``: a separate Linear(hidden_dim, text width)), with
  Gaussian noise on the student and the anchors in training; the teacher P(X) (``fm_target``):
  ``text`` (paper mode, uses labels) softmax(anchors[y] . anchors^T / tau_t), the sample's class text
  embedding z_t against the anchors; ``teacher`` (label-free) the momentum key embedding's distribution
  (sharper tau_t, detached); ``label`` the smoothed one-hot class; L_KL = KL(teacher || student), one
  term per prompt kind averaged: ``fm_objective: part_pooled`` (as GAP, which section 5.2 follows: the
  body-part kinds are read from part features pooled over the layout's ``text_parts`` joints, one
  Linear per part; section 5.2's "multi-part contrastive learning objective"), ``multi_part`` (every
  kind against the one global embedding) or one term on the averaged anchor (``averaged``);
* the modality harmonizer (section 4.2): cross-attention with the frame-level skeleton features as
  queries and the word-level text features of the descriptions as keys/values, added back to the
  skeleton feature on the FM path.
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
    (N, num_class).  It peaks at the sample's class and spreads over semantically close classes."""
    return anchors[label] @ anchors.T / tau_t


def per_kind(z, anchors):
    """z (N, D) for every prompt kind, or (P, N, D) one per kind: as (P, N, D)."""
    return z.unsqueeze(0).expand(anchors.size(0), -1, -1) if z.dim() == 2 else z


def part_pool(feature_map, joints, num_person):
    """GAP's part feature: the feature map (N*M, C, T', V) averaged over the part's ``joints``, the frames
    and the persons (``feature[..., joints].mean(4).mean(3).mean(1)``): (N, C)."""
    x = feature_map[:, :, :, joints].mean(3).mean(2)
    return x.view(-1, num_person, x.size(1)).mean(dim=1)


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


class ModalityHarmonizer(nn.Module):
    """Cross-attention: frame-level skeleton features (N, T', C) attend to word-level text features
    (W, D) of the class descriptions; returns the time-averaged attended feature (N, C)."""

    def __init__(self, channels, text_dim, num_heads=4):
        super().__init__()
        self.attention = nn.MultiheadAttention(channels, num_heads, kdim=text_dim, vdim=text_dim, batch_first=True)
        self.norm = nn.LayerNorm(channels)

    def forward(self, frames, words, word_padding=None):
        keys = words.unsqueeze(0).expand(frames.size(0), -1, -1)
        pad = None if word_padding is None else word_padding.unsqueeze(0).expand(frames.size(0), -1)
        attended, _ = self.attention(self.norm(frames), keys, keys, key_padding_mask=pad, need_weights=False)
        return attended.mean(dim=1)


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
        'projection'), fm_objective ('part_pooled' | 'multi_part' | 'averaged'), label_smoothing;
    harmonizer (switch), harmonizer_heads.
    ``feature_dim`` defaults to the text width with ``fm_embedding: query`` (384 MiniLM, 512 CLIP), else 128.
    """

    forward_keywords = ('label',)      # fm_target text / label use the class labels in pretraining

    def __init__(self, *args, frest=True, fres=True, fret=True, global_filter=True, local_filter=True,
                 adaptive_mask=True, tau_f=2.0, num_frames=50, decoupling='linear', filter_std=0.02,
                 text_features=None, text_encoder='minilm', descriptions=None, prompts=PROMPT_KINDS,
                 feature_modulation=True, lambda_kl=0.01, tau_s=0.1, tau_t=0.04, noise_std=0.01,
                 fm_target='text', fm_embedding='query', fm_objective='multi_part', label_smoothing=0.1,
                 harmonizer=True, harmonizer_heads=4, feature_dim=None, base_method='skeletonclr', head_bn=None,
                 **kwargs):
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
                                        ('fm_objective', fm_objective, FM_OBJECTIVES)):
                if value not in allowed:
                    raise ValueError(f"model_args.{key}={value!r}: use one of {', '.join(allowed)}")
            if not text_features:
                raise ValueError('model_args.text_features is required for feature modulation, e.g. '
                                 "config/text/features/ntu120.minilm.npz (or set feature_modulation: False)")
            text = read_text(text_features, text_encoder, descriptions, prompts, kwargs.get('num_class'))
            text_dim = text['anchors'].size(1)
            if fm_embedding == 'query':
                if feature_dim is None:
                    feature_dim = text_dim
                elif feature_dim != text_dim:
                    raise ValueError(f"model_args.feature_dim={feature_dim}: fm_embedding 'query' runs FM on the "
                                     f"MoCo embedding, which needs the text width {text_dim} ({text_encoder}): "
                                     f"set feature_dim: {text_dim} or fm_embedding: projection")
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
        self.register_buffer('anchors', text['anchors'], persistent=False)          # (num_class, D)
        self.register_buffer('part_anchors', text['parts'], persistent=False)       # (P, num_class, D)
        self.register_buffer('words', text['words'], persistent=False)              # (W, D) real tokens only
        self.text_meta, self.text_source = text['meta'], (text_features, descriptions)
        channels, text_dim = self.encoder_q.feature_dim, self.anchors.size(1)
        self.fm_proj = nn.Linear(channels, text_dim) if fm_embedding == 'projection' else None
        self.harmonizer = ModalityHarmonizer(channels, text_dim, harmonizer_heads) if harmonizer else None
        self.lambda_kl, self.tau_s, self.tau_t = lambda_kl, tau_s, tau_t
        self.noise_std, self.fm_target, self.label_smoothing = noise_std, fm_target, label_smoothing
        self.fm_embedding, self.fm_objective = fm_embedding, fm_objective
        self.prompts = list(prompts)
        self.part_joints, self.part_proj = {}, None
        if fm_objective == 'part_pooled':
            layout = self.encoder_q.layout
            described = dict(layout.text_parts)
            for kind in prompts:
                if kind not in GLOBAL_KINDS and kind not in described:
                    raise ValueError(f"model_args.fm_objective=part_pooled: layout '{layout.name}' has no text_parts "
                                     f"entry for the prompt kind '{kind}' (add text_parts to the layout, docs/DATA.md, "
                                     "or use fm_objective: multi_part)")
            self.part_joints = {k: list(described[k]) for k in prompts if k not in GLOBAL_KINDS}
            self.part_proj = nn.ModuleDict({k: nn.Linear(channels, text_dim) for k in self.part_joints})

    @property
    def uniform_terms(self):
        """{'loss_kl': L_KL when the student is uniform over the C classes}: ln C - H(P), averaged over the
        classes and prompt kinds (ln C for a one-hot teacher); the pretraining monitor warns when the FM
        term stays there.  None for the label-free teacher, whose P varies with the batch."""
        if not (self.pretrain and self.feature_modulation) or self.fm_target not in LABEL_TARGETS:
            return {}
        anchors = self.fm_anchors
        teacher = self.fm_targets(anchors, label=torch.arange(anchors.size(1), device=anchors.device))
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
        """(P, num_class, D): one anchor set per prompt kind (multi_part) or the averaged one (P = 1)."""
        return self.anchors.unsqueeze(0) if self.fm_objective == 'averaged' else self.part_anchors

    def fm_feature(self, feature_map, num_person, q=None):
        """The FM embedding of a query feature map, L2-normalised: the MoCo head's output z_q
        (``fm_embedding: query``; ``q`` is returned as is when there is no harmonizer) or the separate
        projection, of the pooled feature plus the harmonizer's output."""
        if self.fm_embedding == 'query' and self.harmonizer is None and q is not None:
            return q
        h = self.encoder_q.pool(feature_map, num_person)
        if self.harmonizer is not None:
            frames = feature_map.mean(dim=3)                                         # (N*M, C, T')
            frames = frames.view(-1, num_person, *frames.shape[1:]).mean(dim=1).transpose(1, 2)
            h = h + self.harmonizer(frames, self.words)
        head = self.encoder_q.fc if self.fm_embedding == 'query' else self.fm_proj
        return F.normalize(head(h), dim=1)

    def fm_embeddings(self, feature_map, num_person, whole):
        """The embeddings the prompt kinds are read against: ``whole`` (N, D), the whole-body FM embedding,
        for every kind (``multi_part``, ``averaged``), or with ``part_pooled`` (P, N, D): ``whole`` for the
        global kinds and, for a body-part kind, the L2-normalised ``part_proj[kind]`` of ``part_pool`` over
        the layout's ``text_parts`` joints of that part (GAP's part features)."""
        if self.part_proj is None:
            return whole
        return torch.stack([whole if kind in GLOBAL_KINDS else
                            F.normalize(self.part_proj[kind](part_pool(feature_map, self.part_joints[kind],
                                                                       num_person)), dim=1)
                            for kind in self.prompts])

    @torch.no_grad()
    def fm_targets(self, anchors, z_t=None, label=None):
        """Teacher distributions P(X), (P, N, num_class), detached (clean anchors, tau_t)."""
        if self.fm_target == 'teacher':
            return torch.softmax(torch.einsum('pnd,pkd->pnk', per_kind(z_t, anchors), anchors) / self.tau_t, dim=-1)
        if label is None:
            raise ValueError(f"model_args.fm_target={self.fm_target!r} needs labels from the feeder "
                             "(fm_target: teacher is the label-free mode)")
        label = label.long()
        n = anchors.size(1)
        if self.fm_target == 'label':
            target = F.one_hot(label, n).float() * (1 - self.label_smoothing) + self.label_smoothing / n
            return target.unsqueeze(0).expand(anchors.size(0), -1, -1)
        return torch.stack([torch.softmax(text_teacher_logits(a, label, self.tau_t), dim=-1) for a in anchors])

    def fm_logits(self, z_s, z_t=None, label=None):
        """Student logits (P, N, num_class) of Algorithm 1 (noise on z_q and on the anchors in training,
        ``l_b / tau_s``) and the teacher distributions (``fm_targets``)."""
        anchors = self.fm_anchors
        noisy = anchors
        if self.training and self.noise_std > 0:
            z_s = z_s + torch.randn_like(z_s) * self.noise_std
            noisy = anchors + torch.randn_like(anchors) * self.noise_std
        student = torch.einsum('pnd,pkd->pnk', per_kind(z_s, anchors), noisy) / self.tau_s
        return student, self.fm_targets(anchors, z_t, label)

    def fm_loss(self, z_s, z_t=None, label=None):
        """L_KL = mean over prompt kinds of KL(P || Q) (project reading: docs/METHODS.md)."""
        student, target = self.fm_logits(z_s, z_t, label)
        losses = [F.kl_div(F.log_softmax(s, dim=1), t, reduction='batchmean') for s, t in zip(student, target)]
        return sum(losses) / len(losses)

    def forward(self, im_q, im_k=None, label=None):
        if not self.pretrain:
            return self.forward_eval(im_q, im_k)
        M = im_q.size(4)
        fmap_q = self.query_feature_map(im_q)
        q = self.project_query(fmap_q, M)
        embedded = self.encode_mixes(im_q) if self.mix is not None else []
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
                    z_t = self.fm_embeddings(fmap_k, M, z_t)
            loss_kl = self.fm_loss(self.fm_embeddings(fmap_q, M, self.fm_feature(fmap_q, M, q)), z_t, label)
            out['loss'] = out['loss'] + self.lambda_kl * loss_kl
            out['loss_kl'] = loss_kl.detach()
        self.enqueue(k)
        return out
