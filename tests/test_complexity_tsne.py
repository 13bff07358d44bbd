"""tools/complexity.py (parameters, FLOPs/MACs of the inference encoder) and tools/tsne.py."""
import importlib.util
import json
import os

import numpy as np
import pytest
import torch
import torch.nn as nn
import yaml

from conftest import ROOT, tiny_dataset
from tools import complexity, tsne

UCLA_MICA = os.path.join(ROOT, 'config', 'ucla', 'linear_eval_mica.yaml')
NTU_MICA = os.path.join(ROOT, 'config', 'ntu60', 'xsub.yaml')


# ------------------------------------------------------------------------------------------------
# complexity

def test_hand_count_conv_linear():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 5 * 5, 3))
    out = complexity.count_flops(model, torch.randn(1, 2, 5, 5))
    conv_macs = 4 * 2 * 3 * 3 * 5 * 5          # out channels * in channels * kernel * output pixels
    linear_macs = 100 * 3
    assert out['total'] == 2 * (conv_macs + linear_macs)
    assert out['by_module'] == {'0': 2 * conv_macs, '1': 0, '2': 0, '3': 2 * linear_macs}
    assert dict(complexity.parameter_rows(model)) == {'0': 2 * 4 * 9 + 4, '1': 0, '2': 0, '3': 100 * 3 + 3}
    assert model.training                       # mode restored


class _FFT(nn.Module):
    def forward(self, x):
        spec = torch.fft.rfft(x, dim=1)
        return torch.fft.irfft(spec, n=x.size(1), dim=1)


def test_fft_convention():
    out = complexity.count_flops(_FFT(), torch.randn(2, 8, 4))
    per_pass = 5 * (2 * 8 * 4) * 3                # 5 n log2 n per transform, 8 transforms of n = 8
    assert out['total'] == 2 * per_pass
    assert out['by_op'] == {'_fft_r2c': per_pass, '_fft_c2r': per_pass}


def _hook_macs(model, x):
    """Independent hand count by forward hooks: Conv2d, the ST-GCN graph einsum, Linear."""
    from net.st_gcn import ConvTemporalGraphical
    macs = []

    def conv(m, inp, out):
        macs.append(out.numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1])

    def graph(m, inp, out):
        n, c, t, w = out[0].shape
        macs.append(n * m.kernel_size * c * t * inp[1].size(1) * w)

    def linear(m, inp, out):
        macs.append(out.numel() * m.in_features)

    hooks = []
    for mod in model.modules():
        if isinstance(mod, nn.Conv2d):
            hooks.append(mod.register_forward_hook(conv))
        elif isinstance(mod, ConvTemporalGraphical):
            hooks.append(mod.register_forward_hook(graph))
        elif isinstance(mod, nn.Linear):
            hooks.append(mod.register_forward_hook(linear))
    model.eval()
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return sum(macs)


def test_tiny_stgcn_params_and_flops():
    cfg = {'model': 'net.st_gcn.Model',
           'model_args': {'hidden_channels': 4, 'hidden_dim': 8, 'num_class': 5,
                          'graph_args': {'layout': 'nw-ucla', 'strategy': 'spatial'}}}
    result = complexity.analyse(cfg, frames=12, persons=1)
    model, encoder = complexity.build_inference_model(cfg)
    assert encoder is model
    assert result['input_shape'] == [1, 3, 12, 20, 1]
    assert result['params'] == sum(p.numel() for p in model.parameters())
    assert sum(m['params'] for m in result['modules']) == result['params']
    assert sum(m['flops'] for m in result['modules']) == result['flops']
    assert result['macs'] == _hook_macs(model, torch.randn(1, 3, 12, 20, 1))


def test_mica_linear_eval_reports_frest_neck():
    from net.frest import count_parameters
    cfg = complexity.load_config(UCLA_MICA)
    result = complexity.analyse(cfg, UCLA_MICA, persons=1)   # M explicit: the default reads the data file
    model, encoder = complexity.build_inference_model(cfg)
    assert not hasattr(model, 'encoder_k') and encoder is model.encoder_q
    rows = {m['name']: m for m in result['modules']}
    assert rows['neck']['params'] == count_parameters(model.encoder_q.neck) > 0
    assert rows['neck']['flops'] > 0
    assert result['params'] == sum(p.numel() for p in model.encoder_q.parameters())
    assert result['input_shape'] == [1, 3, 50, 20, 1]
    assert result['input_source'] == {'T': 'model_args.num_frames', 'V': 'layout', 'M': '--persons'}
    assert result['flops_by_op']['_fft_r2c'] > 0 and result['flops_by_op']['_fft_c2r'] > 0
    assert sum(m['flops'] for m in result['modules']) == result['flops']


def test_complexity_cli_ntu60_xsub(tmp_path, capsys):
    out = tmp_path / 'cx.json'
    complexity.main(['--config', NTU_MICA, '--json', str(out)])
    printed = capsys.readouterr().out
    assert 'neck' in printed and 'MACs' in printed and 'Convention' in printed
    data = json.loads(out.read_text())
    (result,) = data['results']
    assert 'encoder_q' in result['encoder']
    assert result['input_shape'] == [1, 3, 64, 25, 2]             # the paper config's 64 frames
    names = [m['name'] for m in result['modules']]
    assert 'neck' in names and 'fc' in names
    assert result['macs'] * 2 == result['flops'] > 0
    # the base encoder without FreST: the difference is exactly the neck
    base = complexity.analyse(complexity.load_config(NTU_MICA), model_args_override={'frest': False})
    neck = {m['name']: m for m in result['modules']}['neck']
    assert result['params'] - base['params'] == neck['params']


def test_mica_table3_parameter_rows_are_within_5_percent_of_the_paper():
    """Table 3's #Params (1.90 / 1.90 / 2.08 M): the pretraining models of the SkeleMixCLR config, of MICA with
    FM only (FreST and the harmonizer off) and of MICA; FM adds no parameter (the paper: "does not change
    the number of parameters"), FreST and the harmonizer add 0.21 M (the paper: 0.18 M)."""
    os.chdir(ROOT)
    counted = []
    for name, config, override, paper, _ in complexity.TABLE3:
        cfg = complexity.load_config(config)
        cfg = dict(cfg, model_args=dict(cfg['model_args'], **override))
        params = complexity.pretraining_parameters(cfg)
        assert abs(params['params'] / (paper * 1e6) - 1) <= 0.05, (name, params)
        counted.append(params)
    skelemixclr, fm, mica = counted
    assert fm == skelemixclr
    assert set(mica['by_module']) == {'encoder_q', 'encoder_k', 'harmonizer'}
    assert 0.15e6 < mica['params'] - fm['params'] < 0.25e6


# ------------------------------------------------------------------------------------------------
# t-SNE

def test_tsne_separates_two_clusters():
    pytest.importorskip('sklearn')
    rng = np.random.RandomState(0)
    x = np.concatenate([rng.randn(40, 10), rng.randn(40, 10) + 8.0])
    labels = np.repeat([0, 1], 40)
    emb = tsne.run_tsne(x, perplexity=10, seed=0, n_iter=400)
    assert emb.shape == (80, 2) and np.isfinite(emb).all()
    assert tsne.knn_purity(emb, labels, k=5) > 0.9


def test_tsne_without_scikit_learn_is_one_line_naming_the_extra(tmp_path, monkeypatch):
    import builtins
    real_import = builtins.__import__

    def no_sklearn(name, *args, **kwargs):
        if name.startswith('sklearn'):
            raise ImportError('No module named sklearn')
        return real_import(name, *args, **kwargs)
    monkeypatch.setattr(builtins, '__import__', no_sklearn)
    with pytest.raises(ValueError, match=r'needs scikit-learn: pip install -r requirements-analysis.txt') as e:
        tsne.main(['--config', _tiny_setup(tmp_path), '--out', str(tmp_path / 'x.png')])
    assert '\n' not in str(e.value)


def _tiny_setup(tmp_path, stream='joint'):
    data, label = tiny_dataset(str(tmp_path), n=16, V=20, T=12, num_class=4)
    cfg = {
        'work_dir': str(tmp_path / 'run'),
        'weights': None,
        'ignore_weights': ['encoder_q.fc'],
        'test_feeder': 'feeder.ntu_feeder.Feeder_single',
        'test_feeder_args': {'data_path': data, 'label_path': label, 'shear_amplitude': -1,
                             'temperal_padding_ratio': -1},
        'model': 'net.mica.MICA',
        'model_args': {'base_encoder': 'net.st_gcn.Model', 'pretrain': False, 'hidden_channels': 4,
                       'hidden_dim': 8, 'num_class': 4, 'num_frames': 12,
                       'graph_args': {'layout': 'nw-ucla', 'strategy': 'spatial'}},
        'stream': stream,
    }
    torch.manual_seed(0)
    model, _ = complexity.build_inference_model(cfg)
    weights = tmp_path / 'random.pt'
    torch.save(model.state_dict(), weights)
    cfg['weights'] = str(weights)
    path = tmp_path / 'cfg.yaml'
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


@pytest.mark.parametrize('stream', ['joint', 'bone'])
def test_tsne_tool_writes_npz(tmp_path, stream):
    pytest.importorskip('sklearn')                  # the analysis extra
    config = _tiny_setup(tmp_path, stream)
    out = tmp_path / 'fig' / 'tsne.png'
    res = tsne.main(['--config', config, '--iters', '300', '--out', str(out),
                     '--class-names', os.path.join(ROOT, 'config', 'text', 'descriptions', 'ucla.yaml')])
    d = np.load(tmp_path / 'fig' / 'tsne.npz')
    assert d['embedding'].shape == (16, 2) and np.isfinite(d['embedding']).all()
    assert d['labels'].tolist() == [i % 4 for i in range(16)]
    assert d['features'].shape == (16, 8)
    np.testing.assert_allclose(np.linalg.norm(d['features'], axis=1), 1.0, rtol=1e-5)
    assert d['class_names'][0] == 'pick up with one hand'
    assert res['backend'] == 'sklearn'
    if importlib.util.find_spec('matplotlib') is not None:
        assert out.is_file()
    else:
        assert (tmp_path / 'fig' / 'tsne.csv').is_file()


def test_tsne_tool_class_selection_and_csv_without_matplotlib(tmp_path, monkeypatch):
    pytest.importorskip('sklearn')                  # the analysis extra
    config = _tiny_setup(tmp_path)
    monkeypatch.setattr(tsne, 'plot_embedding', lambda *a, **k: False)     # as if matplotlib were absent
    res = tsne.main(['--config', config, '--iters', '250', '--classes', '1', '3',
                     '--out', str(tmp_path / 'sel.png')])
    assert sorted(set(res['labels'].tolist())) == [1, 3] and len(res['labels']) == 8
    rows = (tmp_path / 'sel.csv').read_text().splitlines()
    assert rows[0] == 'x,y,label,index' and len(rows) == 9
    assert not (tmp_path / 'sel.png').exists() and (tmp_path / 'sel.npz').is_file()
    with pytest.raises(ValueError, match='no samples'):
        tsne.main(['--config', config, '--classes', '7', '--out', str(tmp_path / 'x.png')])


def test_tsne_tool_writes_png(tmp_path):
    pytest.importorskip('sklearn')                  # the analysis extra
    pytest.importorskip('matplotlib')
    config = _tiny_setup(tmp_path)
    out = tmp_path / 'tsne.png'
    tsne.main(['--config', config, '--out', str(out), '--iters', '250'])
    assert out.is_file() and out.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    assert (tmp_path / 'tsne.npz').is_file()
