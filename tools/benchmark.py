"""Speed and memory of a config's training step, measured on the available device.

    python tools/benchmark.py --config config/ntu60/xsub/pretrain_skeletonclr.yaml config/ntu60/xsub.yaml \
        [--batch-size 128] [--warmup 5] [--iters 20] [--amp none|bf16|fp16] [--compile MODE] \
        [--implementation auto|fast|reference] [--mode auto|pretrain|supervised|linear|inference] \
        [--data synthetic|config] [--profile 15] [--json out.json]

For every config it builds the config's model and training feeder exactly as the processors do, puts
the data on the device (``--data synthetic``: an NTU-shaped set N x 3 x T x V x M generated here, with
the layout's V; ``config``: the config's own ``data_path``), and times ``--iters`` steps after
``--warmup``: batch gather + augmentation on the device (the feeder's ``views``), forward, backward and
optimiser step (``pretrain`` / ``supervised``), the linear-evaluation step on a frozen encoder
(``linear``) or a no-grad forward (``inference``).  It prints and optionally writes JSON with samples
per second, seconds per iteration (median, min, max), peak memory (CUDA: max allocated; CPU: peak RSS
of the process), the fraction of the step spent on data (gather + augmentation), and the settings
(batch, AMP, compile, ST-GCN implementation, device name, torch version, threads).  ``--profile K``
adds one ``torch.profiler`` pass over a few steps and prints the K operators/kernels with the most
self time (CUDA time on a GPU).  Speed is measured here, never asserted in tests.
"""
import argparse
import contextlib
import json
import os
import pickle
import resource
import statistics
import sys
import tempfile
import time

import numpy as np
import torch
import torch.nn.functional as F
import yaml

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from feeder.tools import to_stream  # noqa: E402
from net.utils.layouts import get_layout  # noqa: E402
from torchlight.io import UserError, import_class, run_tool  # noqa: E402

MODES = ('auto', 'pretrain', 'supervised', 'linear', 'inference')


def detect_mode(cfg):
    args = cfg.get('model_args', {})
    if args.get('pretrain') is True:
        return 'pretrain'
    if args.get('pretrain') is False:
        return 'linear'
    return 'supervised'


def synthetic_files(folder, num_samples, frames, num_node, persons, num_class):
    """An NTU-shaped random set (smooth random trajectories) as *_position.npy / *_label.pkl."""
    rng = np.random.RandomState(0)
    data = np.cumsum(rng.randn(num_samples, 3, frames, num_node, persons).astype(np.float32) * 0.05, axis=2)
    labels = (np.arange(num_samples) % num_class).tolist()
    path = os.path.join(folder, 'bench_position.npy')
    np.save(path, data)
    with open(os.path.join(folder, 'bench_label.pkl'), 'wb') as f:
        pickle.dump(([f'b{i}' for i in range(num_samples)], labels), f)
    return path, os.path.join(folder, 'bench_label.pkl')


def peak_memory(device):
    if device.type == 'cuda':
        return torch.cuda.max_memory_allocated(device) / 2 ** 30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20      # KiB -> GiB on Linux


def sync(device):
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def build(cfg, mode, batch_size, device, implementation=None):
    args = dict(cfg.get('model_args', {}))
    if implementation:                     # the ST-GCN implementation (net.st_gcn.Model's switch)
        args['implementation'] = implementation
    if mode == 'pretrain':
        queue = int(args.get('queue_size', 32768))
        args['queue_size'] = max(batch_size, queue // batch_size * batch_size)
    elif mode in ('linear', 'inference') and 'pretrain' in args:
        args['pretrain'] = False
    try:
        model = import_class(cfg['model'])(**args)
    except (TypeError, ValueError) as e:
        raise UserError(f"model_args do not fit {cfg['model']}: {e}") from e
    return model.to(device)


def benchmark(config, args, device):
    with open(config) as f:
        cfg = yaml.safe_load(f)
    if not isinstance(cfg, dict) or 'model' not in cfg:
        raise UserError(f"config '{config}' has no `model:` key")
    encoder_name = cfg.get('model_args', {}).get('base_encoder') or cfg['model']
    if args.implementation and 'net.st_gcn' not in encoder_name:
        raise UserError(f"--implementation applies to net.st_gcn.Model; {config} uses {encoder_name}")
    mode = detect_mode(cfg) if args.mode == 'auto' else args.mode
    batch = args.batch_size or int(cfg.get('batch_size', 128))
    feeder_args = dict(cfg.get('train_feeder_args', {}))
    layout = get_layout(cfg.get('model_args', {}).get('graph_args', {}).get('layout', 'ntu-rgb+d'))
    num_class = int(cfg.get('model_args', {}).get('num_class', 60))
    with tempfile.TemporaryDirectory() as tmp:
        if args.data == 'synthetic':
            persons = args.persons if args.persons else int(cfg.get('model_args', {}).get('num_person', 2))
            data_path, label_path = synthetic_files(tmp, max(args.num_samples, batch), args.frames,
                                                    layout.num_node, persons, num_class)
            feeder_args.update(data_path=data_path, label_path=label_path)
        feeder_args['mmap'] = False
        feeder_name = cfg.get('train_feeder', 'feeder.ntu_feeder.Feeder_single')
        feeder = import_class(feeder_name)(**feeder_args)
    model = build(cfg, mode, batch, device, args.implementation)
    stream = cfg.get('stream', 'joint')
    data = torch.from_numpy(np.asarray(feeder.data, dtype=np.float32)).to(device)     # device-resident
    labels = torch.as_tensor(feeder.label, device=device)
    params = [p for p in model.parameters() if p.requires_grad]
    if mode == 'linear':
        encoder = model.encoder_q if hasattr(model, 'encoder_q') else model
        for name, p in encoder.named_parameters():
            p.requires_grad = name.startswith('fc.')
        params = [p for p in encoder.fc.parameters()]
    optimizer = torch.optim.SGD(params, lr=0.01, momentum=0.9) if mode != 'inference' else None
    if args.compile != 'none':
        model.compile(mode=args.compile)           # in place, as the processors' `compile` key does
    amp_dtype = {'bf16': torch.bfloat16, 'fp16': torch.float16}.get(args.amp)
    scaler = torch.amp.GradScaler(device.type, enabled=args.amp == 'fp16')

    def autocast():
        if amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, dtype=amp_dtype)

    def step(generator):
        t0 = time.perf_counter()
        idx = torch.randint(0, data.size(0), (batch,), device=device, generator=generator)
        views = feeder.views(data[idx])
        if stream != 'joint':
            views = [to_stream(v, stream, layout.parents if stream == 'bone' else None) for v in views]
        label = labels[idx]
        sync(device)
        t1 = time.perf_counter()
        if mode == 'inference':
            model.eval()
            with torch.no_grad(), autocast():
                model(views[0])
        else:
            model.train()
            with autocast():
                if mode == 'pretrain':
                    loss = model(*views, label=label)['loss']
                elif mode == 'linear':
                    encoder.eval()
                    with torch.no_grad():
                        feats = encoder.forward_features(views[0])
                    loss = F.cross_entropy(encoder.fc(feats.float()), label)
                else:
                    loss = F.cross_entropy(model(views[0]).float(), label)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        sync(device)
        return t1 - t0, time.perf_counter() - t0

    generator = torch.Generator(device=device).manual_seed(0)
    if device.type == 'cuda':
        torch.cuda.reset_peak_memory_stats(device)
    for _ in range(args.warmup):
        step(generator)
    timings = [step(generator) for _ in range(args.iters)]
    data_time = sum(t[0] for t in timings)
    totals = [t[1] for t in timings]
    median = statistics.median(totals)
    top_ops = profile(step, generator, device, args.profile) if args.profile else None
    return {
        'config': config, 'model': cfg['model'], 'mode': mode, 'batch_size': batch,
        'samples_per_second': batch / median, 'seconds_per_iteration': {'median': median, 'min': min(totals), 'max': max(totals)},
        'peak_memory_gib': peak_memory(device), 'data_fraction': data_time / sum(totals),
        'amp': args.amp, 'compile': args.compile, 'implementation': args.implementation or 'config',
        'data': args.data, 'data_placement': 'device-resident', 'top_ops': top_ops,
        'shape': list(data.shape[1:]), 'device': torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu',
        'threads': torch.get_num_threads(), 'torch': torch.__version__,
    }


def profile(step, generator, device, top, steps=3):
    """One torch.profiler pass over ``steps`` steps: the ``top`` operators by self time (CUDA kernels'
    time on a GPU, CPU time otherwise), as a list of {name, calls, self_ms, percent}."""
    from torch.profiler import ProfilerActivity
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == 'cuda' else [])
    with torch.profiler.profile(activities=activities) as prof:
        for _ in range(steps):
            step(generator)
    attr = 'self_device_time_total' if device.type == 'cuda' else 'self_cpu_time_total'
    events = [e for e in prof.key_averages() if getattr(e, attr, 0) > 0]
    total = sum(getattr(e, attr) for e in events) or 1.0
    events.sort(key=lambda e: getattr(e, attr), reverse=True)
    return [{'name': e.key, 'calls': e.count // steps, 'self_ms': getattr(e, attr) / 1000 / steps,
             'percent': 100 * getattr(e, attr) / total} for e in events[:top]]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--config', nargs='+', required=True, help='one or more YAML configs')
    parser.add_argument('--mode', choices=MODES, default='auto', help='what a step is (auto: from the config)')
    parser.add_argument('--batch-size', type=int, default=None, help="batch size (default: the config's)")
    parser.add_argument('--warmup', type=int, default=5, help='untimed iterations first')
    parser.add_argument('--iters', type=int, default=20, help='timed iterations')
    parser.add_argument('--amp', choices=('none', 'bf16', 'fp16'), default='none', help='mixed precision')
    parser.add_argument('--compile', default='none', choices=('none', 'default', 'reduce-overhead', 'max-autotune'),
                        help='torch.compile mode (reduce-overhead: CUDA graphs)')
    parser.add_argument('--implementation', choices=('auto', 'fast', 'reference'), default=None,
                        help="ST-GCN implementation (default: the config's, i.e. auto: fast on CUDA)")
    parser.add_argument('--profile', type=int, default=0, metavar='K',
                        help='also profile 3 steps and print the K operators with the most self time')
    parser.add_argument('--data', choices=('synthetic', 'config'), default='synthetic',
                        help="synthetic NTU-shaped data, or the config's data_path")
    parser.add_argument('--num-samples', type=int, default=512, help='synthetic samples')
    parser.add_argument('--frames', type=int, default=50, help='synthetic frames T')
    parser.add_argument('--persons', type=int, default=None, help='synthetic persons M (default: 2, or num_person)')
    parser.add_argument('--device', default=None, help="'cuda', 'cuda:1' or 'cpu' (default: cuda when available)")
    parser.add_argument('--threads', type=int, default=None, help='CPU threads (torch.set_num_threads)')
    parser.add_argument('--json', default=None, help='write the results here')
    args = parser.parse_args(argv)
    if args.iters < 1 or args.warmup < 0:
        raise UserError(f'--iters must be >= 1 and --warmup >= 0 (got {args.iters}, {args.warmup})')
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device or ('cuda' if torch.cuda.is_available() else 'cpu'))
    results = []
    for config in args.config:
        if not os.path.isfile(config):
            raise UserError(f"config file '{config}' does not exist")
        r = benchmark(config, args, device)
        results.append(r)
        s = r['seconds_per_iteration']
        print(f"{config}: {r['mode']} batch {r['batch_size']} on {r['device']}: {r['samples_per_second']:.1f} samples/s, "
              f"{s['median']:.4f} s/iter (min {s['min']:.4f}, max {s['max']:.4f}), peak {r['peak_memory_gib']:.2f} GiB, "
              f"data {100 * r['data_fraction']:.1f}%, amp {r['amp']}")
        for op in r['top_ops'] or []:
            print(f"    {op['percent']:5.1f}%  {op['self_ms']:9.3f} ms/step  x{op['calls']:<5d} {op['name']}")
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(results, f, indent=2)
    return results


if __name__ == '__main__':
    run_tool(main)
