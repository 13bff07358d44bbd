"""MICA (Modeling Internal and Contextual Attention; ``../shared/papers/mica.txt``).

SkeletonCLR's MoCo core (K 32768, tau 0.2, m 0.999) with
* FreST (``net/frest.py``) appended to the skeleton encoder (query and key) on its feature map; it
  stays part of the encoder at evaluation (``encoder_q.neck.*``);
* Feature Modulation (section 4.1, eq. L_KL, Algorithm 1): frozen text embeddings of every class
  description are the anchors of the skeleton-language domain; the student is the distribution over
  the anchors of the projected query feature, the teacher that of the momentum key feature (sharper
  temperature, detached), with Gaussian noise on the student input and the anchors in training;
  L_KL = KL(teacher || student); ``fm_target: label`` uses the sample's smoothed one-hot class as the
  teacher where labels exist;
* the modality harmonizer (section 4.2): cross-attention with the frame-level skeleton features as
  queries and the word-level text features of the descriptions as keys/values, added back to the
  skeleton feature before the FM projection.
L = L_info + lambda L_KL (section 4.3).  The text stack is not needed at run time: the anchors and
token features are read from a file made by ``tools/gen_text_features.py``.
"""
import os

import torch
import torch.nn as nn
import torch.nn.functional as F

from net.frest import FreST
from net.moco import MoCo, embedding_std, info_nce_logits
from net.text.features import PROMPT_KINDS, load_text_features

FM_TARGETS = ('teacher', 'label')


def feature_map_length(num_frames, strides=(2, 2)):
    """Frames left after ST-GCN's temporal strides (kernel 9, padding 4): ceil(T / s) per stride."""
    for s in strides:
        num_frames = (num_frames - 1) // s + 1
    return num_frames


def fm_kl_loss(student_logits, teacher_logits):
    """Algorithm 1's ``loss_kld``: KL(softmax(teacher) || softmax(student)), batch mean."""
    return F.kl_div(F.log_softmax(student_logits, dim=1), F.softmax(teacher_logits, dim=1), reduction='batchmean')


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


class MICA(MoCo):
    """``model: net.mica.MICA``: MoCo's ``model_args`` plus

    FreST: frest, fres, fret, global_filter, local_filter, adaptive_mask (switches), tau_f (mask
        threshold on the median-normalised energy), num_frames (input T, sizes the temporal filter);
    text: text_features (file from tools/gen_text_features.py), text_encoder ('minilm' | 'clip', checked
        against the file), descriptions (the YAML the file was made from, checksum checked), prompts
        (which description sentences form the anchors, averaged);
    FM: feature_modulation (switch), lambda_kl (0.01), tau_s, tau_t (student/teacher temperatures),
        noise_std (Algorithm 1), fm_target ('teacher' | 'label'), label_smoothing;
    harmonizer (switch), harmonizer_heads.
    """

    def __init__(self, *args, frest=True, fres=True, fret=True, global_filter=True, local_filter=True,
                 adaptive_mask=True, tau_f=1.0, num_frames=50,
                 text_features=None, text_encoder='minilm', descriptions=None, prompts=PROMPT_KINDS,
                 feature_modulation=True, lambda_kl=0.01, tau_s=0.1, tau_t=0.04, noise_std=0.01,
                 fm_target='teacher', label_smoothing=0.1, harmonizer=True, harmonizer_heads=4, **kwargs):
        super().__init__(*args, **kwargs)
        encoders = [self.encoder_q] + ([self.encoder_k] if self.pretrain else [])
        if frest:
            for encoder in encoders:
                encoder.neck = FreST(encoder.feature_dim, feature_map_length(num_frames), encoder.num_node,
                                     fres=fres, fret=fret, global_filter=global_filter, local_filter=local_filter,
                                     adaptive_mask=adaptive_mask, tau=tau_f)
            if self.pretrain:
                for param_q, param_k in zip(self.encoder_q.neck.parameters(), self.encoder_k.neck.parameters()):
                    param_k.data.copy_(param_q.data)
                    param_k.requires_grad = False
        self.feature_modulation = feature_modulation and self.pretrain
        if not self.feature_modulation:
            if self.pretrain and harmonizer:
                raise ValueError('model_args.harmonizer needs feature_modulation: True (it feeds the FM projection)')
            return
        if fm_target not in FM_TARGETS:
            raise ValueError(f"model_args.fm_target={fm_target!r}: use one of {', '.join(FM_TARGETS)}")
        if not text_features:
            raise ValueError('model_args.text_features is required for feature modulation, e.g. '
                             "config/text/features/ntu120.minilm.npz (or set feature_modulation: False)")
        self.load_text(text_features, text_encoder, descriptions, prompts, kwargs.get('num_class'))
        channels, text_dim = self.encoder_q.feature_dim, self.anchors.size(1)
        self.fm_proj = nn.Linear(channels, text_dim)
        self.harmonizer = ModalityHarmonizer(channels, text_dim, harmonizer_heads) if harmonizer else None
        self.lambda_kl, self.tau_s, self.tau_t = lambda_kl, tau_s, tau_t
        self.noise_std, self.fm_target, self.label_smoothing = noise_std, fm_target, label_smoothing

    def load_text(self, path, encoder, descriptions, prompts, num_class):
        """Anchors (num_class, D): the mean of the chosen prompts' normalised sentence embeddings;
        word features (W, D) of the 'global' descriptions, with their padding mask (not saved)."""
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
        chosen = pooled[:, [PROMPT_KINDS.index(p) for p in prompts]]
        anchors = F.normalize(F.normalize(chosen, dim=-1).mean(dim=1), dim=-1)
        self.register_buffer('anchors', anchors, persistent=False)
        self.register_buffer('words', tokens[mask], persistent=False)            # (W, D) real tokens only
        self.text_meta = text['meta']

    def fm_feature(self, feature_map, num_person):
        """Pooled skeleton feature (+ harmonizer) projected into the text space, L2-normalised."""
        h = self.encoder_q.pool(feature_map, num_person)
        if self.harmonizer is not None:
            frames = feature_map.mean(dim=3)                                         # (N*M, C, T')
            frames = frames.view(-1, num_person, *frames.shape[1:]).mean(dim=1).transpose(1, 2)
            h = h + self.harmonizer(frames, self.words)
        return F.normalize(self.fm_proj(h), dim=1)

    def fm_loss(self, fmap_q, fmap_k, num_person, label=None):
        """L_KL of Algorithm 1 (project reading: docs/METHODS.md)."""
        anchors = self.anchors
        z_s = self.fm_feature(fmap_q, num_person)
        if self.training and self.noise_std > 0:
            z_s = z_s + torch.randn_like(z_s) * self.noise_std
            anchors = anchors + torch.randn_like(anchors) * self.noise_std
        student = z_s @ anchors.T / self.tau_s
        with torch.no_grad():
            if self.fm_target == 'label':
                if label is None:
                    raise ValueError("model_args.fm_target='label' needs labels from the feeder")
                n = anchors.size(0)
                target = F.one_hot(label.long(), n).float() * (1 - self.label_smoothing) + self.label_smoothing / n
                return F.kl_div(F.log_softmax(student, dim=1), target, reduction='batchmean')
            teacher = self.fm_feature(fmap_k, num_person) @ self.anchors.T / self.tau_t
        return fm_kl_loss(student, teacher)

    def forward(self, im_q, im_k=None, label=None, **unused):
        if not self.pretrain:
            return self.forward_eval(im_q, im_k)
        M = im_q.size(4)
        fmap_q = self.query_feature_map(im_q)
        q = self.project_query(fmap_q, M)
        with torch.no_grad():
            self.momentum_update()
            fmap_k = self.key_feature_map(im_k)
            k = self.project_key(fmap_k, M)
        logits = info_nce_logits(q, k, self.queue, self.T)
        loss_info = self.contrastive_loss(logits)
        out = {'loss_info': loss_info.detach()}
        loss = loss_info
        if self.feature_modulation:
            loss_kl = self.fm_loss(fmap_q, fmap_k, M, label)
            loss = loss + self.lambda_kl * loss_kl
            out['loss_kl'] = loss_kl.detach()
        self.enqueue(k)
        out.update(loss=loss, acc_pos=(logits.argmax(dim=1) == 0).float().mean(), embed_std=embedding_std(q))
        return out
