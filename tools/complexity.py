"""Parameters and FLOPs of a config's inference encoder (the model the papers' complexity tables count).

The model is built from the config's ``model`` / ``model_args``.  For the contrastive wrappers
(SkeletonCLR, AimCLR, MsMCLR, MICA: subclasses of ``net.moco.MoCo``) ``pretrain`` is forced to False,
so only ``encoder_q`` is built, with its ``num_class`` classifier: the inference model (MICA's FreST
stays in it as ``encoder_q.neck``); the key encoder, queue, projection head and training-only heads are
not counted.  For supervised configs (``net.st_gcn.Model``, ``net.ctrgcn.Model``, ...) the model itself.

Parameters: the total and one row per top-level submodule of the encoder (``data_bn``,
``st_gcn_networks``, ``edge_importance``, ``neck`` = FreST, ``fc``, ...), so e.g. MICA Table 3's
"+ FreST" row is the ``neck`` row.

FLOPs convention (printed with every table):
* one forward pass of ONE sample in eval mode, input (1, C, T, V, M) with random values (no data
  needed); all M persons of the sample are included;
* counted with ``torch.utils.flop_counter.FlopCounterMode``: matmul / linear / conv / einsum / bmm
  (and attention), 2 FLOPs per multiply-add (MAC), biases not counted;
* FFTs (``aten._fft_r2c`` / ``_fft_c2r`` / ``_fft_c2c``, used by MICA's FreST), which FlopCounterMode
  does not count, are added as 5 * n * log2(n) FLOPs per 1-D transform of length n (the usual
  Cooley-Tukey estimate, as in FFTW's benchmarks; real and complex transforms alike);
* element-wise work (BatchNorm, activations, residual additions, pooling, the frequency-domain filter
  products, masks) is not counted;
* MACs = FLOPs / 2.  The papers' "GFLOPs" of this family are usually such MACs: compare the MACs column.

Usage::

    python tools/complexity.py --config config/ntu60/xsub.yaml
    python tools/complexity.py --config config/ucla/linear_eval_mica.yaml --config config/ucla/linear_eval_skeletonclr.yaml
    python tools/complexity.py --config config/ucla/recognition_ctrgcn.yaml --frames 64 --json ctrgcn.json
    python tools/complexity.py --config config/ntu60/xsub.yaml --model-args frest=False   # the base encoder
    python tools/complexity.py --table3 [--json table3.json]     # MICA's Table 3 rows beside the paper's

``--table3`` prints the three complexity rows of MICA's Table 3 (NTU-60 x-sub) beside the paper's: the
parameters of the *pretraining* model (query and momentum key encoders with their heads and FreST, and
the training-only modules: what the paper's 1.90 M for SkeleMixCLR counts) and the FLOPs per clip of the
inference encoder (64 frames, two persons, the convention below); docs/METHODS.md, "Table 3's budget".

T (frames) defaults to the config's own: ``model_args.num_frames`` (MICA), ``model_args.window_size``
(HCN), the test/train feeder's ``window_size``, else the T of the feeder's data file when it exists
(header only), else 50.  V comes from the layout (``model_args.graph_args.layout``), M from
``model_args.num_person``, else the data file's M, else 2.  The table says where each came from;
give ``--frames`` / ``--persons`` to make the numbers independent of the data on disk.
"""
import argparse
import json
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from torchlight.boundary import early  # noqa: E402

early(__name__)              # a Ctrl-C during the imports below is one line

import torch  # noqa: E402

from processor.build import build_model, inference_encoder, load_config  # noqa: E402
from torchlight import options  # noqa: E402
from torchlight.io import DictAction, UserError, atomic_write, deep_update, run_tool  # noqa: E402
from torchlight.readers import npy_header  # noqa: E402

DEFAULT_FRAMES = 50
DEFAULT_PERSONS = 2
CONVENTION = ('FLOPs per sample of one eval-mode forward pass (all persons of the sample): matmul/linear/'
              'conv/einsum/bmm counted by torch.utils.flop_counter.FlopCounterMode as 2 FLOPs per '
              'multiply-add (biases not counted); FFTs added as 5*n*log2(n) FLOPs per 1-D transform of '
              'length n; element-wise ops (BN, activations, residual adds, pooling, frequency filter '
              'products) not counted. MACs = FLOPs / 2 (the "G" of the papers usually means GMACs).')


# ------------------------------------------------------------------------------------------------
# config -> inference encoder

def build_inference_model(cfg):
    """(model, encoder): the config's model built for inference (``processor.build.build_model`` with
    ``for_inference``: contrastive wrappers with ``pretrain: False``) and its inference encoder
    (``model.encoder_q`` or the model itself), both in eval mode."""
    model = build_model(cfg, for_inference=True)
    return model.eval(), inference_encoder(model).eval()


def graph_layout(model_args, encoder=None):
    """The model's skeleton layout (``net.utils.layouts.Layout``) or None."""
    from net.utils.layouts import get_layout
    graph_args = model_args.get('graph_args') or {}
    spec = graph_args.get('layout')
    if spec is None and encoder is not None:
        return encoder.layout
    return get_layout(spec if spec is not None else 'ntu-rgb+d')


def data_shape(cfg):
    """(name, shape) of the first existing feeder data file (header only, memory-mapped), or None."""
    for split in ('test', 'train'):
        path = (cfg.get(f'{split}_feeder_args') or {}).get('data_path')
        if path and os.path.isfile(path):
            try:
                shape, _ = npy_header(path, 'data file')
            except ValueError:       # unreadable file: fall back to the defaults
                continue
            if len(shape) == 5:
                return f'{split} data file', shape
    return None


def input_shape(cfg, encoder, frames=None, joints=None, persons=None, channels=None):
    """(shape (1, C, T, V, M), {dim: where its value came from}).  Fallbacks after the config's own
    values: the shape of the feeder's data file when it exists, else T = 50, M = 2."""
    model_args = cfg.get('model_args') or {}
    source = {}
    data = data_shape(cfg) if frames is None or persons is None else None
    if frames is None:
        candidates = [('model_args.num_frames', model_args.get('num_frames')),
                      ('model_args.window_size', model_args.get('window_size'))]
        for split in ('test', 'train'):
            candidates.append((f'{split}_feeder_args.window_size', (cfg.get(f'{split}_feeder_args') or {}).get('window_size')))
        for name, value in candidates:
            if value is not None and int(value) > 0:
                frames, source['T'] = int(value), name
                break
        else:
            frames, source['T'] = (data[1][2], data[0]) if data else (DEFAULT_FRAMES, 'default')
    else:
        source['T'] = '--frames'
    if joints is None:
        joints = getattr(encoder, 'num_node', None) or graph_layout(model_args, encoder).num_node
        source['V'] = 'layout'
    else:
        source['V'] = '--joints'
    if persons is None:
        persons = model_args.get('num_person')
        if persons is not None:
            persons, source['M'] = int(persons), 'model_args.num_person'
        else:
            persons, source['M'] = (data[1][4], data[0]) if data else (DEFAULT_PERSONS, 'default')
    else:
        source['M'] = '--persons'
    if channels is None:
        channels = int(model_args.get('in_channels', 3))
    return (1, channels, int(frames), int(joints), int(persons)), source


# ------------------------------------------------------------------------------------------------
# counting

def count_parameters(module):
    return sum(p.numel() for p in module.parameters())


def parameter_rows(encoder):
    """[(name, params)] per top-level child of ``encoder`` (children without parameters included),
    plus ``(own)`` for parameters registered directly on the encoder."""
    rows = [(name, count_parameters(child)) for name, child in encoder.named_children()]
    own = sum(p.numel() for p in encoder.parameters(recurse=False))
    if own:
        rows.append(('(own)', own))
    return rows


def _fft_flops(logical_shape, dims):
    """5 n log2 n FLOPs per 1-D transform of length n, over every transformed dim."""
    numel = math.prod(logical_shape)
    total = 0
    for d in dims:
        n = logical_shape[d]
        if n > 1:
            total += 5 * numel * math.log2(n)
    return int(round(total))


def _fft_r2c_flop(self_shape, dim, *args, out_shape=None, **kwargs):
    return _fft_flops(self_shape, dim)


def _fft_c2c_flop(self_shape, dim, *args, out_shape=None, **kwargs):
    return _fft_flops(self_shape, dim)


def _fft_c2r_flop(self_shape, dim, *args, out_shape=None, **kwargs):
    return _fft_flops(out_shape, dim)           # the real output is the logical signal


def fft_flop_mapping():
    aten = torch.ops.aten
    return {aten._fft_r2c: _fft_r2c_flop, aten._fft_c2r: _fft_c2r_flop, aten._fft_c2c: _fft_c2c_flop}


def _subtree_flops(counts, prefix):
    """FLOPs recorded inside module ``prefix``: its own entry, or (for containers that are never
    called themselves, e.g. an ``nn.ModuleList``) the sum over its outermost called descendants."""
    if prefix in counts:
        return int(sum(counts[prefix].values()))
    keys = [k for k in counts if k.startswith(prefix + '.')]
    top = [k for k in keys if not any(k != o and k.startswith(o + '.') for o in keys)]
    return int(sum(sum(counts[k].values()) for k in top))


def count_flops(module, *inputs):
    """FLOPs of ``module(*inputs)`` in eval mode (see the module docstring for the convention):
    {'total': int, 'by_module': {child name: int}, 'by_op': {op name: int}}.

    ``by_module`` has one entry per top-level child of ``module`` (FLOPs of work done inside it).
    Gradients are switched off by ``requires_grad_(False)`` on the parameters (restored afterwards)
    rather than ``torch.no_grad()``, under which torch's ModuleTracker fails on parameters passed as
    forward arguments (CTR-GCN's ``alpha``)."""
    from torch.utils.flop_counter import FlopCounterMode
    was_training = module.training
    flags = [(p, p.requires_grad) for p in module.parameters()]
    module.eval()
    for p, _ in flags:
        p.requires_grad_(False)
    counter = FlopCounterMode(display=False, depth=None, custom_mapping=fft_flop_mapping())
    try:
        with counter:
            module(*inputs)
    finally:
        module.train(was_training)
        for p, flag in flags:
            p.requires_grad_(flag)
    counts = counter.get_flop_counts()
    total = counter.get_total_flops()
    by_op = {str(op).replace('aten.', ''): int(c) for op, c in counts.get('Global', {}).items()}
    root = type(module).__name__
    by_module = {name: _subtree_flops(counts, f'{root}.{name}') for name, _ in module.named_children()}
    return {'total': int(total), 'by_module': by_module, 'by_op': by_op}


def analyse(cfg, config_path='<config>', frames=None, joints=None, persons=None, model_args_override=None):
    """Everything the table shows, as a JSON-able dict."""
    if model_args_override:
        cfg = dict(cfg, model_args=deep_update(dict(cfg.get('model_args') or {}), model_args_override))
    model, encoder = build_inference_model(cfg)
    shape, source = input_shape(cfg, encoder, frames, joints, persons)
    x = torch.randn(*shape)
    try:
        flops = count_flops(encoder, x)
    except (RuntimeError, ValueError) as e:
        raise UserError(f'{config_path}: the encoder does not run on input {shape}: '
                        f'{str(e).splitlines()[0][:300]}') from e
    param_rows = dict(parameter_rows(encoder))
    modules = []
    for name in list(param_rows) + [n for n in flops['by_module'] if n not in param_rows]:
        f = flops['by_module'].get(name, 0)
        modules.append({'name': name, 'params': param_rows.get(name, 0), 'flops': f, 'macs': f / 2})
    total_params = count_parameters(encoder)
    encoder_class = f'{type(encoder).__module__}.{type(encoder).__name__}'
    return {
        'config': config_path,
        'model': cfg['model'],
        'encoder': encoder_class + (' (encoder_q, pretrain: False)' if encoder is not model else ''),
        'input_shape': list(shape),
        'input_source': source,
        'params': total_params,
        'trainable_params': sum(p.numel() for p in encoder.parameters() if p.requires_grad),
        'flops': flops['total'],
        'macs': flops['total'] / 2,
        'modules': modules,
        'flops_by_op': flops['by_op'],
        'convention': CONVENTION,
    }


# ------------------------------------------------------------------------------------------------
# MICA's Table 3

# (row, config, model_args over it, the paper's #Params in M, its FLOPs in G)
TABLE3 = (('SkeleMixCLR', 'config/ntu60/xsub/pretrain_skelemixclr.yaml', {}, 1.90, 1.70),
          ('+ L_FM', 'config/ntu60/xsub.yaml', {'frest': False, 'harmonizer': False}, 1.90, 1.70),
          ('+ L_FM, FreST (MICA)', 'config/ntu60/xsub.yaml', {}, 2.08, 1.72))
TABLE3_INPUT = dict(frames=64, persons=2)       # the paper's 64-frame NTU clips, both person slots


def pretraining_parameters(cfg):
    """{'params': all parameters of the config's pretraining model, 'by_module': per top-level module
    (``encoder_q``, ``encoder_k``, training-only modules such as ``harmonizer``)}."""
    model = build_model(cfg)
    return {'params': count_parameters(model),
            'by_module': {name: count_parameters(child) for name, child in model.named_children()
                          if count_parameters(child)}}


def table3_rows(root='.'):
    """MICA's Table 3 complexity rows, as dicts: the row, its config and overrides, the pretraining
    model's parameters (and by module), the inference encoder's FLOPs per clip, the paper's values."""
    rows = []
    for name, config, override, paper_params, paper_flops in TABLE3:
        cfg = load_config(os.path.join(root, config))
        cfg = dict(cfg, model_args=deep_update(dict(cfg['model_args']), override))
        counted = pretraining_parameters(cfg)
        flops = analyse(cfg, config, **TABLE3_INPUT)['flops']
        rows.append({'row': name, 'config': config, 'model_args': override, **counted, 'flops': flops,
                     'paper_params': paper_params * 1e6, 'paper_flops': paper_flops * 1e9,
                     'params_vs_paper': counted['params'] / (paper_params * 1e6) - 1,
                     'flops_vs_paper': flops / (paper_flops * 1e9) - 1})
    return rows


def format_table3(rows):
    lines = ["MICA's Table 3 (NTU-60 x-sub): parameters of the pretraining model (query + key encoders, heads, "
             'FreST, training-only modules); FLOPs of the inference encoder per clip (64 frames, 2 persons)', '',
             f"{'row':<22} {'params':>10} {'paper':>7} {'vs paper':>9} {'GFLOPs':>8} {'paper':>6} {'vs paper':>9}  modules",
             '-' * 110]
    for r in rows:
        modules = ', '.join(f'{k} {v:,}' for k, v in r['by_module'].items())
        lines.append(f"{r['row']:<22} {r['params']:>10,} {r['paper_params'] / 1e6:>6.2f}M {100 * r['params_vs_paper']:>+8.1f}% "
                     f"{r['flops'] / 1e9:>8.3f} {r['paper_flops'] / 1e9:>6.2f} {100 * r['flops_vs_paper']:>+8.1f}%  {modules}")
    return '\n'.join(lines)


# ------------------------------------------------------------------------------------------------
# output

def _m(n):
    return f'{n / 1e6:.4f} M'


def _g(n):
    return f'{n / 1e9:.4f} G'


def format_table(result):
    shape = result['input_shape']
    src = result['input_source']
    lines = [
        f"config : {result['config']}",
        f"model  : {result['model']} -> {result['encoder']}",
        f"input  : (N, C, T, V, M) = {tuple(shape)}  (T from {src['T']}, V from {src['V']}, M from {src['M']})",
        '',
        f"{'module':<20} {'params':>12} {'params (M)':>12} {'share':>7} {'MACs (G)':>11} {'FLOPs (G)':>11}",
        '-' * 78,
    ]
    total_p, total_f = result['params'], result['flops']
    for row in result['modules']:
        share = 100.0 * row['params'] / total_p if total_p else 0.0
        lines.append(f"{row['name']:<20} {row['params']:>12,} {row['params'] / 1e6:>12.4f} {share:>6.1f}% "
                     f"{row['macs'] / 1e9:>11.4f} {row['flops'] / 1e9:>11.4f}")
    lines.append('-' * 78)
    lines.append(f"{'total':<20} {total_p:>12,} {total_p / 1e6:>12.4f} {100.0:>6.1f}% "
                 f"{result['macs'] / 1e9:>11.4f} {total_f / 1e9:>11.4f}")
    ops = ', '.join(f'{k} {v / 1e9:.4f}' for k, v in sorted(result['flops_by_op'].items(), key=lambda kv: -kv[1]))
    lines.append(f'FLOPs by op (G): {ops}')
    return '\n'.join(lines)


def get_parser():
    parser = argparse.ArgumentParser(
        description="Parameters and FLOPs/MACs per sample of a config's inference encoder",
        epilog=CONVENTION)
    parser.add_argument('--config', type=options.input_file, action='append', default=None,
                        help='YAML config (repeat the option to compare several)')
    parser.add_argument('--table3', action='store_true',
                        help="MICA's Table 3 rows (pretraining parameters, inference FLOPs) beside the paper's")
    parser.add_argument('--frames', type=options.positive_int, default=None,
                        help='input frames T (default: the config\'s num_frames/window_size, else the data file\'s T, else 50)')
    parser.add_argument('--joints', type=options.positive_int, default=None, help='joints V (default: from the layout)')
    parser.add_argument('--persons', type=options.positive_int, default=None,
                        help='persons M (default: model_args.num_person, else the data file\'s M, else 2)')
    parser.add_argument('--model-args', '--model_args', dest='model_args', action=DictAction, default=None,
                        help='override model_args, e.g. "frest=False" or "hidden_channels=32"')
    parser.add_argument('--json', type=options.output_file, default=None, help='write the results to this JSON file')
    return parser


def main(argv=None):
    args = get_parser().parse_args(argv)
    if args.table3:
        rows = table3_rows()
        print(format_table3(rows))
        print('\nConvention: ' + CONVENTION)
        if args.json:
            write_json(args.json, {'convention': CONVENTION, 'table3': rows})
        return rows
    if not args.config:
        raise UserError('--config: give a config (or --table3)')
    torch.manual_seed(0)
    results = []
    for path in args.config:
        cfg = load_config(path)
        result = analyse(cfg, path, args.frames, args.joints, args.persons, args.model_args)
        results.append(result)
        print(format_table(result))
        print()
    if len(results) > 1:
        print(f"{'config':<50} {'params (M)':>11} {'MACs (G)':>10} {'FLOPs (G)':>10}")
        for r in results:
            print(f"{r['config']:<50} {r['params'] / 1e6:>11.4f} {r['macs'] / 1e9:>10.4f} {r['flops'] / 1e9:>10.4f}")
        print()
    print('Convention: ' + CONVENTION)
    if args.json:
        write_json(args.json, {'convention': CONVENTION, 'results': results})
    return results


def write_json(path, data):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    atomic_write(path, lambda f: json.dump(data, f, indent=2), mode='w')
    print(f'wrote {path}')


if __name__ == '__main__':
    run_tool(main)
