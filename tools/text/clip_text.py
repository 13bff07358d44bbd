"""The text tower of OpenAI CLIP ViT-B/32 in plain PyTorch, with OpenAI's parameter names
(149 tensors, 63,428,096 parameters), and loading from OpenAI's ``ViT-B-32.pt`` (TorchScript) or a
plain / open_clip state dict.

    model = load_clip_text()                       # ~/.cache/clip/ViT-B-32.pt, frozen, eval mode
    pooled, tokens, mask = model.encode_texts(['a person is drinking water'])

The MLP activation is not stored in a state dict: OpenAI's weights (and open_clip's ``openai``,
``laion400m_*`` and ``metaclip_400m`` ViT-B-32 weights) use QuickGELU, open_clip's ``laion2b_*``,
``datacomp_*`` and ``commonpool_*`` ViT-B-32 weights use GELU, with the same keys.  OpenAI's archive
implies QuickGELU; for a plain / open_clip state dict ``activation`` must be given.
"""
import hashlib
import os
import warnings
from collections import OrderedDict

import torch
import torch.nn as nn

from .tokenizer import CONTEXT_LENGTH, tokenize

DEFAULT_CLIP_PATH = os.path.join(os.path.expanduser('~'), '.cache', 'clip', 'ViT-B-32.pt')
CLIP_MODEL_ID = 'openai/ViT-B-32'
ACTIVATIONS = ('quick_gelu', 'gelu')
VIT_B_32_TEXT = dict(vocab_size=49408, context_length=CONTEXT_LENGTH, width=512, layers=12, heads=8,
                     embed_dim=512)
# entries of OpenAI's full CLIP archive that are not part of the text tower
NON_TEXT_KEYS = ('logit_scale', 'input_resolution', 'context_length', 'vocab_size')


class LayerNorm(nn.LayerNorm):
    """LayerNorm computed in float32 (as CLIP's, for fp16 inputs)."""

    def forward(self, x):
        return super().forward(x.float()).type(x.dtype)


class QuickGELU(nn.Module):
    def forward(self, x):
        return x * torch.sigmoid(1.702 * x)


def mlp_activation(name):
    """'quick_gelu' (x * sigmoid(1.702 x), OpenAI CLIP) or 'gelu' (exact GELU, open_clip's default)."""
    if name not in ACTIVATIONS:
        raise ValueError(f"CLIP activation {name!r} is unknown: use one of {', '.join(ACTIVATIONS)}")
    return QuickGELU() if name == 'quick_gelu' else nn.GELU()


class ResidualAttentionBlock(nn.Module):
    def __init__(self, width, heads, activation='quick_gelu'):
        super().__init__()
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.ln_1 = LayerNorm(width)
        self.mlp = nn.Sequential(OrderedDict([
            ('c_fc', nn.Linear(width, width * 4)),
            ('gelu', mlp_activation(activation)),       # no parameters: same keys for both
            ('c_proj', nn.Linear(width * 4, width)),
        ]))
        self.ln_2 = LayerNorm(width)

    def forward(self, x, attn_mask):
        y = self.ln_1(x)
        x = x + self.attn(y, y, y, need_weights=False, attn_mask=attn_mask)[0]
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    def __init__(self, width, layers, heads, activation='quick_gelu'):
        super().__init__()
        self.resblocks = nn.ModuleList([ResidualAttentionBlock(width, heads, activation) for _ in range(layers)])

    def forward(self, x, attn_mask):
        for block in self.resblocks:
            x = block(x, attn_mask)
        return x


class CLIPTextModel(nn.Module):
    """CLIP's text encoder. Defaults are ViT-B/32's: width 512, 12 blocks, 8 heads, 77 tokens,
    vocabulary 49408, output 512, QuickGELU. Input: token ids from :func:`tools.text.tokenizer.tokenize`."""

    name = 'clip'

    def __init__(self, vocab_size=49408, context_length=CONTEXT_LENGTH, width=512, layers=12, heads=8,
                 embed_dim=512, activation='quick_gelu'):
        super().__init__()
        self.context_length = context_length
        self.activation = activation
        self.token_embedding = nn.Embedding(vocab_size, width)
        self.positional_embedding = nn.Parameter(torch.empty(context_length, width))
        self.transformer = Transformer(width, layers, heads, activation)
        self.ln_final = LayerNorm(width)
        self.text_projection = nn.Parameter(torch.empty(width, embed_dim))
        self.embed_dim = embed_dim
        self.model_id = CLIP_MODEL_ID
        self.weights_sha256 = None
        self.initialize_parameters()

    def initialize_parameters(self):
        """CLIP's initialisation (used for random-weight tests; real use loads weights)."""
        width, layers = self.positional_embedding.shape[1], len(self.transformer.resblocks)
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)
        proj_std = (width ** -0.5) * ((2 * layers) ** -0.5)
        attn_std = width ** -0.5
        fc_std = (2 * width) ** -0.5
        for block in self.transformer.resblocks:
            nn.init.normal_(block.attn.in_proj_weight, std=attn_std)
            nn.init.normal_(block.attn.out_proj.weight, std=proj_std)
            nn.init.normal_(block.mlp.c_fc.weight, std=fc_std)
            nn.init.normal_(block.mlp.c_proj.weight, std=proj_std)
        nn.init.normal_(self.text_projection, std=width ** -0.5)

    def causal_mask(self, length, device):
        return torch.full((length, length), float('-inf'), device=device).triu_(1)

    def encode(self, tokens, project_tokens=True):
        """Token ids (N, L), L <= 77, zero-padded (to 77 or to the longest prompt: same result, the
        mask is causal) -> ``(pooled, token_features, token_mask)``.

        - pooled (N, 512): ln_final output at the EOT token (the largest id) times text_projection,
          as CLIP's ``encode_text`` (not normalised).
        - token_features (N, L, 512): ln_final output of every token, projected by text_projection
          when ``project_tokens`` (the default; then the EOT row equals ``pooled``), else raw width.
        - token_mask (N, L) bool: True from SOT up to and including EOT.
        """
        length = tokens.shape[1]
        if length > self.context_length:
            raise ValueError(f'token length {length} exceeds the context length {self.context_length}')
        x = self.token_embedding(tokens) + self.positional_embedding[:length]
        x = self.transformer(x, self.causal_mask(length, x.device))
        x = self.ln_final(x)
        eot = tokens.argmax(dim=-1)
        if project_tokens:
            x = x @ self.text_projection
            pooled = x[torch.arange(x.shape[0], device=x.device), eot]
        else:
            pooled = x[torch.arange(x.shape[0], device=x.device), eot] @ self.text_projection
        mask = torch.arange(length, device=tokens.device)[None] <= eot[:, None]
        return pooled, x, mask

    forward = encode

    @torch.no_grad()
    def encode_texts(self, texts, truncate=True):
        """Strings -> ``encode`` of their tokens, padded to the longest prompt."""
        device = self.positional_embedding.device
        return self.encode(tokenize(texts, self.context_length, truncate, pad_to_longest=True).to(device))


def file_sha256(path, chunk=1 << 20):
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(chunk), b''):
            h.update(block)
    return h.hexdigest()


def read_clip_state_dict(path):
    """``(state, kind)``: the text-tower entries of a CLIP weights file and its kind, 'openai' for
    OpenAI's TorchScript archive, 'state_dict' for a plain / open_clip state dict (optionally under
    'state_dict', optionally with a 'module.' prefix)."""
    if not os.path.isfile(path):
        raise ValueError(f"CLIP weights file '{path}' not found: OpenAI CLIP's clip.load('ViT-B/32') downloads "
                         f"ViT-B-32.pt to ~/.cache/clip/; or pass the path of a copy (--weights PATH)")
    try:
        with warnings.catch_warnings():  # torch >= 2.10 flags TorchScript as deprecated
            warnings.simplefilter('ignore', DeprecationWarning)
            state = torch.jit.load(path, map_location='cpu').state_dict()
        kind = 'openai'
    except Exception:  # not a TorchScript archive: a plain state dict
        kind = 'state_dict'
        try:
            state = torch.load(path, map_location='cpu', weights_only=True)
        except Exception as e:
            raise ValueError(f"cannot read CLIP weights file '{path}' as a TorchScript archive or a "
                             f"state dict ({type(e).__name__})") from None
    if isinstance(state, dict) and isinstance(state.get('state_dict'), dict):
        state = state['state_dict']
    if not isinstance(state, dict):
        raise ValueError(f"CLIP weights file '{path}' holds a {type(state).__name__}, not a state dict")
    out = OrderedDict()
    for key, value in state.items():
        key = key[7:] if key.startswith('module.') else key
        if key.startswith('visual.') or key in NON_TEXT_KEYS:
            continue
        out[key] = value
    return out, kind


def clip_text_config(state):
    """CLIPTextModel arguments inferred from a text-tower state dict (as CLIP's ``build_model``)."""
    width = state['ln_final.weight'].shape[0]
    return dict(vocab_size=state['token_embedding.weight'].shape[0],
                context_length=state['positional_embedding'].shape[0], width=width,
                layers=len({k.split('.')[2] for k in state if k.startswith('transformer.resblocks.')}),
                heads=width // 64, embed_dim=state['text_projection'].shape[1])


def load_clip_text(path=None, device='cpu', activation=None):
    """CLIPTextModel with weights from ``path`` (default ``~/.cache/clip/ViT-B-32.pt``), in eval mode
    with gradients off. The architecture is read from the weights (ViT-B/32: width 512, 12 blocks).

    ``activation``: 'quick_gelu' | 'gelu' | None.  None means QuickGELU for OpenAI's archive and is an
    error for a plain / open_clip state dict, whose activation the file does not record (module
    docstring).  ``model.model_id`` says what the file is ('openai/ViT-B-32' only for OpenAI's
    ViT-B/32 archive), ``model.activation`` the activation, ``model.weights_sha256`` the file's sha256."""
    path = os.path.expanduser(path or DEFAULT_CLIP_PATH)
    if activation is not None and activation not in ACTIVATIONS:
        raise ValueError(f"CLIP activation {activation!r} is unknown: use one of {', '.join(ACTIVATIONS)}")
    state, kind = read_clip_state_dict(path)
    if activation is None:
        if kind != 'openai':
            raise ValueError(f"'{path}' is a plain / open_clip state dict, which does not record the MLP "
                             "activation: give activation quick_gelu (OpenAI weights; open_clip 'openai', "
                             "'laion400m_*', 'metaclip_400m') or gelu (open_clip 'laion2b_*', 'datacomp_*', "
                             "'commonpool_*'), e.g. tools/gen_text_features.py --activation gelu")
        activation = 'quick_gelu'
    try:
        config = clip_text_config(state)
    except KeyError as e:
        raise ValueError(f"'{path}' is not a CLIP text tower: no {e.args[0]} entry") from None
    model = CLIPTextModel(**config, activation=activation)
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        raise ValueError(f"'{path}' is not a CLIP text tower: missing {missing[:3]} ({len(missing)}), "
                         f"unexpected {unexpected[:3]} ({len(unexpected)})")
    for key, value in state.items():
        if tuple(value.shape) != tuple(expected[key].shape):
            raise ValueError(f"'{path}': {key} has shape {tuple(value.shape)}, expected "
                             f"{tuple(expected[key].shape)}")
    model.load_state_dict({k: v.float() for k, v in state.items()})
    if kind == 'openai' and config == VIT_B_32_TEXT:
        model.model_id = CLIP_MODEL_ID
    else:
        model.model_id = f'clip-text-{kind}:{os.path.basename(path)}'
    model.weights_sha256 = file_sha256(path)
    model.requires_grad_(False)
    return model.eval().to(device)
