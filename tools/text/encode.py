"""Making MICA's text feature files (offline, ``tools/gen_text_features.py``): embed a class-description
set with a frozen text encoder and write the file that ``net/text_features.py`` reads at run time (its
docstring has the file layout)."""
import json
import os

import numpy as np
import torch
import torch.nn.functional as F

from net.text_features import ENCODERS, PROMPT_KINDS, TOKEN_KIND, class_labels, descriptions_checksum, load_descriptions
from torchlight.io import atomic_write

TOOL_VERSION = 2      # 2: int8 token features


def class_prompts(descriptions):
    """``[[label, global, head, hands, hips, feet] for each class]``."""
    return [[entry[kind].strip() for kind in PROMPT_KINDS] for entry in descriptions['classes']]


@torch.no_grad()
def compute_text_features(encoder, descriptions):
    """Embed a parsed description set with a text encoder (``encode_texts(texts) -> (pooled, tokens,
    mask)``) -> ``(pooled (C, 6, D) normalised, tokens (C, L, D), token_mask (C, L))``, float32."""
    prompts = class_prompts(descriptions)
    num_class = len(prompts)
    flat = [text for row in prompts for text in row]
    pooled, _, _ = encoder.encode_texts(flat)
    pooled = F.normalize(pooled.float(), dim=-1).reshape(num_class, len(PROMPT_KINDS), -1)
    globals_ = [row[PROMPT_KINDS.index(TOKEN_KIND)] for row in prompts]
    _, tokens, mask = encoder.encode_texts(globals_)
    length = int(mask.sum(1).max())
    tokens, mask = tokens[:, :length].float(), mask[:, :length]
    tokens = tokens * mask.unsqueeze(-1)
    return pooled.cpu(), tokens.cpu(), mask.cpu()


def save_text_features(path, pooled, tokens, token_mask, meta):
    """Write a feature file (see the module docstring); arrays are stored as float16 / bool."""
    pooled, tokens, token_mask = (t.detach().cpu().numpy() if torch.is_tensor(t) else np.asarray(t)
                                  for t in (pooled, tokens, token_mask))
    if pooled.ndim != 3 or pooled.shape[1] != len(PROMPT_KINDS):
        raise ValueError(f'pooled must be (num_class, {len(PROMPT_KINDS)}, D), got {pooled.shape}')
    if tokens.shape[:2] != token_mask.shape or tokens.shape[0] != pooled.shape[0]:
        raise ValueError(f'tokens {tokens.shape} / token_mask {token_mask.shape} do not match '
                         f'pooled {pooled.shape}')
    meta = {**meta, 'prompt_kinds': list(PROMPT_KINDS), 'dim': int(pooled.shape[2]),
            'num_class': int(pooled.shape[0]), 'tool_version': TOOL_VERSION}
    # token features as int8 with one float16 scale per token (absmax), compressed: the shipped files
    # stay small (NTU-120 ~1.5 MB instead of 3.2 MB) at ~0.4% relative error, ample for attention keys
    scale = np.abs(tokens).max(axis=-1, keepdims=True) / 127.0
    quantised = np.round(tokens / np.where(scale > 0, scale, 1.0)).astype(np.int8)
    atomic_write(path, lambda f: np.savez_compressed(
        f, pooled=pooled.astype(np.float16), tokens=quantised, token_scale=scale.astype(np.float16),
        token_mask=token_mask.astype(bool), meta=np.array(json.dumps(meta, sort_keys=True))))
    return path


def load_text_encoder(name, weights=None, device='cpu', activation=None):
    """'minilm' -> :func:`tools.text.minilm.load_minilm` (``weights``: a model folder), 'clip' ->
    :func:`tools.text.clip_text.load_clip_text` (``weights``: a ViT-B-32.pt / state dict path;
    ``activation``: quick_gelu | gelu, required for a plain / open_clip state dict)."""
    if name == 'minilm':
        if activation is not None:
            raise ValueError(f'activation={activation!r} is a CLIP setting; the minilm encoder has a fixed GELU')
        from .minilm import load_minilm
        return load_minilm(weights, device)
    if name == 'clip':
        from .clip_text import load_clip_text
        return load_clip_text(weights, device, activation)
    raise ValueError(f"unknown text encoder {name!r}: expected one of {', '.join(ENCODERS)}")


def make_text_features(encoder, descriptions_path, out_path):
    """Embed one description set with a loaded encoder and write its feature file."""
    descriptions = load_descriptions(descriptions_path)
    pooled, tokens, mask = compute_text_features(encoder, descriptions)
    meta = {'encoder': encoder.name, 'model_id': encoder.model_id,
            'weights_sha256': encoder.weights_sha256, 'activation': encoder.activation,
            'descriptions': os.path.basename(descriptions_path),
            'descriptions_sha256': descriptions_checksum(descriptions_path),
            'dataset': descriptions['dataset'],
            'class_names': class_labels(descriptions)}
    return save_text_features(out_path, pooled, tokens, mask, meta)
