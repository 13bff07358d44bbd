"""CLIP's byte-level BPE tokenizer (after openai/CLIP ``simple_tokenizer.py``, MIT, see
LICENSE-CLIP.txt), with the bundled vocabulary ``bpe_simple_vocab_16e6.txt.gz``.

    tokenize(['a person is drinking water'])  # LongTensor (1, 77): 49406 320 2533 533 5778 1573 49407 0 ...
"""
import gzip
import html
import os
from functools import lru_cache

import torch

DEFAULT_BPE_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'bpe_simple_vocab_16e6.txt.gz')
SOT_TOKEN = '<|startoftext|>'
EOT_TOKEN = '<|endoftext|>'
SOT_ID = 49406
EOT_ID = 49407
CONTEXT_LENGTH = 77


@lru_cache()
def bytes_to_unicode():
    """Map each byte 0..255 to a printable unicode character (the GPT-2/CLIP byte alphabet)."""
    bs = list(range(ord('!'), ord('~') + 1)) + list(range(ord('¡'), ord('¬') + 1)) + \
        list(range(ord('®'), ord('ÿ') + 1))
    cs = bs[:]
    n = 0
    for b in range(2 ** 8):
        if b not in bs:
            bs.append(b)
            cs.append(2 ** 8 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def get_pairs(word):
    """Set of adjacent symbol pairs in a word (a tuple of symbols)."""
    return set(zip(word[:-1], word[1:]))


def basic_clean(text):
    import ftfy
    text = ftfy.fix_text(text)
    text = html.unescape(html.unescape(text))
    return text.strip()


def whitespace_clean(text):
    import regex
    return regex.sub(r'\s+', ' ', text).strip()


class SimpleTokenizer:
    """CLIP's BPE tokenizer: ftfy + html cleaning, whitespace collapsing, lower-casing, byte-level BPE
    with ``</w>`` word ends. Ids match OpenAI CLIP."""

    def __init__(self, bpe_path=DEFAULT_BPE_PATH):
        import regex
        self.byte_encoder = bytes_to_unicode()
        self.byte_decoder = {v: k for k, v in self.byte_encoder.items()}
        merges = gzip.open(bpe_path).read().decode('utf-8').split('\n')
        merges = merges[1:49152 - 256 - 2 + 1]
        merges = [tuple(merge.split()) for merge in merges]
        vocab = list(bytes_to_unicode().values())
        vocab = vocab + [v + '</w>' for v in vocab]
        vocab.extend(''.join(merge) for merge in merges)
        vocab.extend([SOT_TOKEN, EOT_TOKEN])
        self.encoder = dict(zip(vocab, range(len(vocab))))
        self.decoder = {v: k for k, v in self.encoder.items()}
        self.bpe_ranks = dict(zip(merges, range(len(merges))))
        self.cache = {SOT_TOKEN: SOT_TOKEN, EOT_TOKEN: EOT_TOKEN}
        self.pat = regex.compile(
            r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
            regex.IGNORECASE)
        assert self.encoder[SOT_TOKEN] == SOT_ID and self.encoder[EOT_TOKEN] == EOT_ID
        self.vocab_size = len(self.encoder)

    def bpe(self, token):
        if token in self.cache:
            return self.cache[token]
        word = tuple(token[:-1]) + (token[-1] + '</w>',)
        pairs = get_pairs(word)
        if not pairs:
            return token + '</w>'
        while True:
            bigram = min(pairs, key=lambda pair: self.bpe_ranks.get(pair, float('inf')))
            if bigram not in self.bpe_ranks:
                break
            first, second = bigram
            new_word = []
            i = 0
            while i < len(word):
                try:
                    j = word.index(first, i)
                except ValueError:
                    new_word.extend(word[i:])
                    break
                new_word.extend(word[i:j])
                i = j
                if word[i] == first and i < len(word) - 1 and word[i + 1] == second:
                    new_word.append(first + second)
                    i += 2
                else:
                    new_word.append(word[i])
                    i += 1
            word = tuple(new_word)
            if len(word) == 1:
                break
            pairs = get_pairs(word)
        word = ' '.join(word)
        self.cache[token] = word
        return word

    def encode(self, text):
        """Text -> BPE ids, without start/end tokens."""
        import regex
        bpe_tokens = []
        text = whitespace_clean(basic_clean(text)).lower()
        for token in regex.findall(self.pat, text):
            token = ''.join(self.byte_encoder[b] for b in token.encode('utf-8'))
            bpe_tokens.extend(self.encoder[bpe_token] for bpe_token in self.bpe(token).split(' '))
        return bpe_tokens

    def decode(self, tokens):
        text = ''.join(self.decoder[int(t)] for t in tokens)
        return bytearray([self.byte_decoder[c] for c in text]).decode('utf-8', errors='replace') \
            .replace('</w>', ' ')


@lru_cache()
def get_tokenizer():
    """The shared tokenizer with the bundled vocabulary (built once)."""
    return SimpleTokenizer()


def tokenize(texts, context_length=CONTEXT_LENGTH, truncate=True, pad_to_longest=False):
    """Texts -> LongTensor (N, L) of ``<|startoftext|> ids <|endoftext|>`` padded with 0.

    L = ``context_length`` (77, as CLIP), or with ``pad_to_longest`` the longest prompt in the batch
    (at most ``context_length``). An over-long text is cut to ``context_length`` with EOT as its last
    token when ``truncate``; otherwise it raises a ValueError naming the text."""
    if isinstance(texts, str):
        texts = [texts]
    tokenizer = get_tokenizer()
    all_tokens = [[SOT_ID] + tokenizer.encode(text) + [EOT_ID] for text in texts]
    for i, tokens in enumerate(all_tokens):
        if len(tokens) > context_length:
            if not truncate:
                raise ValueError(f'text {texts[i]!r} is {len(tokens)} tokens, longer than the context '
                                 f'length {context_length} (use truncate=True to cut it)')
            all_tokens[i] = tokens[:context_length]
            all_tokens[i][-1] = EOT_ID
    length = max((len(t) for t in all_tokens), default=0) if pad_to_longest else context_length
    result = torch.zeros(len(all_tokens), length, dtype=torch.long)
    for i, tokens in enumerate(all_tokens):
        result[i, :len(tokens)] = torch.tensor(tokens, dtype=torch.long)
    return result
