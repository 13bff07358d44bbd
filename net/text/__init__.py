"""MICA's frozen text stack: CLIP's BPE tokenizer and ViT-B/32 text tower, the all-MiniLM-L6-v2
sentence encoder (default), and the class-description / text-feature files."""
from .clip_text import CLIPTextModel, load_clip_text
from .features import (ENCODERS, PROMPT_KINDS, compute_text_features, descriptions_checksum,
                       load_descriptions, load_text_encoder, load_text_features, make_text_features,
                       save_text_features)
from .minilm import MiniLMEncoder, load_minilm
from .tokenizer import SimpleTokenizer, tokenize

__all__ = ['CLIPTextModel', 'load_clip_text', 'MiniLMEncoder', 'load_minilm', 'SimpleTokenizer',
           'tokenize', 'ENCODERS', 'PROMPT_KINDS', 'load_descriptions', 'descriptions_checksum',
           'compute_text_features', 'save_text_features', 'load_text_features', 'load_text_encoder',
           'make_text_features']
