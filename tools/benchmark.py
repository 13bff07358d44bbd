"""Speed and memory of a config's training step, measured on the available device.

    python tools/benchmark.py --config config/ntu60/xsub/pretrain_skeletonclr.yaml config/ntu60/xsub.yaml \
        [--batch-size 128] [--warmup 5] [--iters 20] [--amp none|bf16|fp16] [--compile MODE] \
        [--implementation auto|fast|reference] [--mode auto|pretrain|supervised|linear|inference] \
        [--data synthetic|config] [--profile 15] [--json out.json]

For every config it builds the processor that ``main.py`` runs for the step (``pretrain``:
``PretrainProcessor``, ``supervised``: ``Recognition``, ``linear`` / ``inference``: ``LinearEvaluation``)
from the config (``processor.build.load_config``, with the benchmark's batch, AMP, compile and ST-GCN
implementation over it), with the data on the device (``data_on_device``; ``--data synthetic``: an
NTU-shaped set N x 3 x T x V x M generated here, with the layout's V; ``config``: the config's own
``data_path``), and times ``--iters`` steps after ``--warmup`` of the processor's own ``train_epoch``:
batch gather + augmentation (the feeder's ``views``), forward, loss, backward and optimiser step exactly
as a run does them (the linear-evaluation step: frozen encoder forward + fc); ``inference`` times no-grad
forward passes of the processor's model.  It prints and optionally writes JSON with samples
per second, seconds per iteration (median, min, max), peak memory (CUDA: max allocated; CPU: peak RSS,
per config: the process's peak is reset before each, ``peak_rss_scope``), the CPU seconds of the process
per iteration and the load average (on a shared machine the wall time includes waits for a core), with
several configs each one's time and memory relative to the first's, the fraction of the step spent on data (gather + augmentation), and the settings
(batch, AMP, compile, ST-GCN implementation, device name, torch version, threads).  ``--profile K``
adds one ``torch.profiler`` pass over a few steps and prints the K operators/kernels with the most
self time (CUDA time on a GPU).  ``--count-ops`` times nothing: it runs ``--iters`` training steps after
``--warmup`` under an operator counter (``OpCounter``, a ``TorchDispatchMode`` below autograd, so the
backward and the optimiser step are counted too) and reports per step the operator calls, the copies
(``aten::copy_``, ``_to_copy`` -- ``.to()`` and dtype casts --, ``clone`` -- ``.contiguous()`` --) and the
host synchronisations (``.item()``, ``float()``/``bool()`` of a tensor, Python branches on tensor values:
``aten::_local_scalar_dense``; ``nonzero`` and other ops whose output shape depends on the data; device to
host copies; ``.cpu()``, ``.numpy()``, ``.tolist()`` calls), with the ST-GCN implementation of the GPU path
(``fast``) unless ``--implementation`` says otherwise; the counts of the CPU are those of the GPU.  On
CUDA, ``torch.cuda.set_sync_debug_mode`` warnings are counted as well.  Speed is measured here, never
asserted in tests.
"""
import argparse
import collections
import contextlib
import json
import os
import pickle
import resource
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from torchlight.boundary import early  # noqa: E402

early(__name__)              # a Ctrl-C during the imports below is one line

import numpy as np  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402

from net.utils.layouts import get_layout  # noqa: E402
from processor.build import load_config  # noqa: E402
from torchlight import options  # noqa: E402
from torchlight.io import DictAction, UserError, atomic_write, run_tool  # noqa: E402

MODES = ('auto', 'pretrain', 'supervised', 'linear', 'inference')


PROCESSOR_OF_MODE = {'pretrain': 'processor.pretrain.PretrainProcessor',
                     'supervised': 'processor.recognition.Recognition',
                     'linear': 'processor.linear_evaluation.LinearEvaluation',
                     'inference': 'processor.linear_evaluation.LinearEvaluation'}


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
    return peak_rss()


def status_kib(field):
    """A ``VmRSS`` / ``VmHWM`` line of /proc/self/status in KiB, or None off Linux."""
    try:
        with open('/proc/self/status') as f:
            for line in f:
                if line.startswith(field + ':'):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def reset_peak_rss():
    """Start a new resident-memory peak for this process (Linux: ``5`` to /proc/self/clear_refs resets
    VmHWM to the current RSS), so each config of one run gets its own peak; False where it cannot."""
    try:
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')
        return True
    except OSError:
        return False


def peak_rss():
    """Peak resident memory of the process in GiB since the last ``reset_peak_rss`` (VmHWM), else since its
    start (``ru_maxrss``)."""
    hwm = status_kib('VmHWM')
    if hwm is None:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20      # KiB -> GiB on Linux
    return hwm / 2 ** 20


def sync(device):
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


class TimedLoader:
    """The processor's own training loader cut to ``steps`` batches (drawn again from the start when it
    runs out) and timed: ``step_times`` (from one batch to the next, i.e. the whole training step) and
    ``data_times`` (drawing the batch plus the feeder's augmentation, ``feeder.views``, of that step)."""

    def __init__(self, loader, steps, device):
        self.loader, self.steps, self.device = loader, steps, device
        self.dataset, self.sampler = loader.dataset, getattr(loader, 'sampler', None)
        self.marks, self.data_times = [], []
        feeder_views = self.dataset.views

        def timed_views(batch):
            sync(device)
            started = time.perf_counter()
            out = feeder_views(batch)
            sync(device)
            if self.data_times:
                self.data_times[-1] += time.perf_counter() - started
            return out
        self.dataset.views = timed_views

    def __len__(self):
        return self.steps

    def __iter__(self):
        self.marks, self.cpu_marks, self.data_times = [], [], []
        batches = iter(self.loader)
        for _ in range(self.steps):
            sync(self.device)
            started = time.perf_counter()
            self.marks.append(started)
            self.cpu_marks.append(time.process_time())
            try:
                batch = next(batches)
            except StopIteration:
                batches = iter(self.loader)
                batch = next(batches)
            sync(self.device)
            self.data_times.append(time.perf_counter() - started)
            yield batch
        sync(self.device)
        self.marks.append(time.perf_counter())
        self.cpu_marks.append(time.process_time())

    @property
    def step_times(self):
        return [b - a for a, b in zip(self.marks, self.marks[1:])]

    @property
    def cpu_times(self):
        """CPU seconds of the process (all its threads) per step: on a machine shared with other jobs the
        wall time also counts the waits for a core."""
        return [b - a for a, b in zip(self.cpu_marks, self.cpu_marks[1:])]


def build_processor(config, cfg, mode, args, device, folder):
    """The processor of ``mode`` on the config, as ``main.py`` builds it, with the benchmark's batch, data
    (device-resident), AMP, compile and ST-GCN implementation; nothing is logged or kept."""
    from torchlight.io import import_class
    batch = args.batch_size or int(cfg.get('batch_size', 128))
    model_args = {}
    if args.implementation:                # the ST-GCN implementation (net.st_gcn.Model's switch)
        model_args['implementation'] = args.implementation
    model_args.update(args.model_args or {})
    if mode == 'pretrain':
        queue = int(cfg.get('model_args', {}).get('queue_size', 32768))
        model_args['queue_size'] = max(batch, queue // batch * batch)
    elif mode in ('linear', 'inference') and 'pretrain' in cfg.get('model_args', {}):
        model_args['pretrain'] = False
    data = {'mmap': False}
    if args.data == 'synthetic':
        layout = get_layout(cfg.get('model_args', {}).get('graph_args', {}).get('layout', 'ntu-rgb+d'))
        persons = args.persons if args.persons else int(cfg.get('model_args', {}).get('num_person', 2))
        data['data_path'], data['label_path'] = synthetic_files(
            folder, max(args.num_samples, batch), args.frames, layout.num_node, persons,
            int(cfg.get('model_args', {}).get('num_class', 60)))
    overrides = {
        'work_dir': os.path.join(folder, 'work_dir'), 'phase': 'train', 'resume': False, 'weights': None,
        'num_epoch': 1, 'batch_size': batch, 'test_batch_size': batch, 'model_args': model_args,
        'train_feeder_args': data, 'data_on_device': True, 'num_worker': 0, 'amp': args.amp,
        'compile': args.compile, 'cuda_graph': args.cuda_graph, 'print_log': False, 'save_log': False,
        'progress_bar': False,
        'eval_interval': -1, 'save_interval': -1, 'knn_interval': 0, 'cache_features': False,
        'device': [device.index or 0],
    }
    if mode in ('linear', 'inference', 'supervised'):   # these processors load a test split: the same data
        overrides['test_feeder_args'] = dict(data)
    processor_class = import_class(PROCESSOR_OF_MODE[mode])
    valid = vars(processor_class.get_parser().parse_args([]))
    merged = load_config(config, {k: v for k, v in overrides.items() if k in valid})
    path = os.path.join(folder, 'config.yaml')
    with open(path, 'w') as f:
        yaml.safe_dump(merged, f)
    return processor_class(['--config', path])


def timed_steps(proc, mode, steps, device):
    """Run ``steps`` training steps of the processor's own ``train_epoch`` (``inference``: no-grad
    forward passes of its model) over a ``TimedLoader``; returns the loader with its timings."""
    loader = TimedLoader(proc.data_loader['train'], steps, device)
    if mode == 'inference':
        proc.model.eval()
        with torch.no_grad(), proc.autocast():
            for raw, _, _ in loader:
                proc.model(proc.inputs(raw, loader.dataset))
        return loader
    return train_over(proc, loader)


def train_over(proc, loader):
    """One ``train_epoch`` of the processor over ``loader`` in place of its training loader."""
    if hasattr(proc, 'new_monitor'):                 # pretraining: what start() sets up for train_epoch
        proc.monitor = proc.new_monitor()
    saved = proc.data_loader['train']
    proc.data_loader['train'] = loader
    try:
        proc.train_epoch(0)
    finally:
        proc.data_loader['train'] = saved
    return loader


COPY_OPS = ('copy_', '_to_copy', 'clone', '_copy_from', '_copy_from_and_resize')
# operators that read a value back to the host, or whose output shape depends on the data (the host waits)
SYNC_OPS = ('_local_scalar_dense', 'nonzero', 'nonzero_static', 'masked_select', 'unique', '_unique',
            '_unique2', 'unique_consecutive', 'unique_dim', 'repeat_interleave', 'equal', 'is_nonzero')
HOST_CALLS = ('cpu', 'numpy', 'tolist')


class OpCounter(TorchDispatchMode):
    """Counts the aten operators that run while it is active (forward, backward and optimiser: the mode
    sits below autograd), with the host-reading Python calls ``Tensor.cpu/numpy/tolist`` (which do not
    dispatch on a CPU tensor) patched in for the same span."""

    def __init__(self):
        super().__init__()
        self.ops = collections.Counter()
        self.host_calls = collections.Counter()
        self.sync_warnings = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        self.ops[name] += 1
        if name == '_to_copy':
            source, target = args[0], (kwargs or {}).get('device')
            if torch.is_tensor(source) and source.device.type != 'cpu' and target is not None \
                    and torch.device(target).type == 'cpu':
                self.ops['_to_copy(device->host)'] += 1
        return func(*args, **(kwargs or {}))

    @contextlib.contextmanager
    def patched_host_calls(self):
        saved = {name: getattr(torch.Tensor, name) for name in HOST_CALLS}

        def counted(name, method):
            def call(tensor, *a, **k):
                self.host_calls[name] += 1
                return method(tensor, *a, **k)
            return call
        try:
            for name, method in saved.items():
                setattr(torch.Tensor, name, counted(name, method))
            yield
        finally:
            for name, method in saved.items():
                setattr(torch.Tensor, name, method)

    def summary(self, steps, profiler=None):
        """Per-step counts: ops, copies, host syncs, and the operators by name; with a ``profiler`` of the
        same steps, ``copy_kernels_per_step``: its ``aten::copy_`` calls of tensors with a dimension at every
        level (the copies inside other operators included, as a GPU profile counts them)."""
        per = {name: n / steps for name, n in sorted(self.ops.items(), key=lambda kv: -kv[1])}
        copies = {k: v for k, v in per.items() if k in COPY_OPS}
        syncs = {k: v for k, v in per.items() if k in SYNC_OPS or k == '_to_copy(device->host)'}
        syncs.update({f'Tensor.{k}': v / steps for k, v in self.host_calls.items()})
        if self.sync_warnings:
            syncs['cuda_sync_debug_warnings'] = self.sync_warnings / steps
        nested = None
        if profiler is not None:      # 0-d copies left out: on the CPU every Python scalar operand is one
            nested = sum(1 for e in profiler.events() if e.name == 'aten::copy_' and e.input_shapes
                         and len(e.input_shapes[0]) > 0) / steps
        return {'steps': steps, 'copy_kernels_per_step': nested,
                'ops_per_step': sum(v for k, v in per.items() if k != '_to_copy(device->host)'),
                'copies_per_step': sum(copies.values()), 'host_syncs_per_step': sum(syncs.values()),
                'copies': copies, 'host_syncs': syncs, 'ops': per}


class CountedLoader(TimedLoader):
    """The processor's loader whose last ``counted`` steps run under an ``OpCounter``: from drawing a
    batch to drawing the next one (the end of the epoch is not counted)."""

    def __init__(self, loader, steps, counted, device):
        super().__init__(loader, steps, device)
        self.counted, self.counter, self.profiler = counted, OpCounter(), None

    def __iter__(self):
        stack = contextlib.ExitStack()
        try:
            for i, batch in enumerate(super().__iter__()):
                if i == self.steps - self.counted:
                    if self.device.type == 'cuda':
                        stack.enter_context(self.cuda_sync_warnings())
                    stack.enter_context(self.counter.patched_host_calls())
                    self.profiler = stack.enter_context(torch.profiler.profile(
                        activities=[torch.profiler.ProfilerActivity.CPU], record_shapes=True))
                    stack.enter_context(self.counter)
                yield batch
        finally:
            stack.close()

    @contextlib.contextmanager
    def cuda_sync_warnings(self):
        import warnings
        torch.cuda.set_sync_debug_mode('warn')
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter('always')
                yield
        finally:
            torch.cuda.set_sync_debug_mode('default')
        self.counter.sync_warnings += sum('synchroniz' in str(w.message) for w in caught)


def count_ops(config, args, device):
    """Per training step of the config: operator calls, copies and host synchronisations (``OpCounter``)."""
    cfg = load_config(config)
    mode = detect_mode(cfg) if args.mode == 'auto' else args.mode
    if mode == 'inference':
        raise UserError('--count-ops counts training steps: give --mode pretrain, supervised or linear')
    with tempfile.TemporaryDirectory() as tmp:
        proc = build_processor(config, cfg, mode, args, device, tmp)
        try:
            loader = train_over(proc, CountedLoader(proc.data_loader['train'], args.warmup + args.iters,
                                                    args.iters, device))
        finally:
            proc.finish()
    return dict({'config': config, 'model': cfg['model'], 'mode': mode, 'batch_size': proc.arg.batch_size,
                 'amp': args.amp, 'implementation': args.implementation or 'config',
                 'device': torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu',
                 'torch': torch.__version__}, **loader.counter.summary(args.iters, loader.profiler))


def benchmark(config, args, device):
    cfg = load_config(config)
    if 'model' not in cfg:
        raise UserError(f"config '{config}' has no `model:` key")
    encoder_name = cfg.get('model_args', {}).get('base_encoder') or cfg['model']
    if args.implementation and 'net.st_gcn' not in encoder_name:
        raise UserError(f"--implementation applies to net.st_gcn.Model; {config} uses {encoder_name}")
    mode = detect_mode(cfg) if args.mode == 'auto' else args.mode
    with tempfile.TemporaryDirectory() as tmp:
        proc = build_processor(config, cfg, mode, args, device, tmp)
        if device.type == 'cuda':
            torch.cuda.reset_peak_memory_stats(device)
        rss_start = (status_kib('VmRSS') or 0) / 2 ** 20
        rss_reset = reset_peak_rss()
        try:
            loader = timed_steps(proc, mode, args.warmup + args.iters, device)
            top_ops = None
            if args.profile:
                top_ops = profile(lambda: timed_steps(proc, mode, 3, device), device, args.profile)
        finally:
            proc.finish()
    totals = loader.step_times[args.warmup:]
    data_time = sum(loader.data_times[args.warmup:])
    median = statistics.median(totals)
    batch = proc.arg.batch_size
    return {
        'config': config, 'model': cfg['model'], 'mode': mode, 'batch_size': batch,
        'samples_per_second': batch / median, 'seconds_per_iteration': {'median': median, 'min': min(totals), 'max': max(totals)},
        'cpu_seconds_per_iteration': statistics.median(loader.cpu_times[args.warmup:]),
        'load_average': os.getloadavg() if hasattr(os, 'getloadavg') else None,
        'peak_memory_gib': peak_memory(device), 'peak_rss_gib': peak_rss(), 'rss_before_gib': rss_start,
        'peak_rss_scope': 'this config' if rss_reset else 'the process', 'data_fraction': min(1.0, data_time / sum(totals)),
        'amp': args.amp, 'compile': args.compile, 'cuda_graph': args.cuda_graph, 'implementation': args.implementation or 'config',
        'model_args': args.model_args or {},
        'data': args.data, 'data_placement': 'device-resident', 'top_ops': top_ops,
        'processor': PROCESSOR_OF_MODE[mode],
        'shape': list(loader.dataset.data.shape[1:]),
        'device': torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu',
        'threads': torch.get_num_threads(), 'torch': torch.__version__,
    }


def profile(run, device, top, steps=3):
    """One torch.profiler pass over ``run()`` (``steps`` steps): the ``top`` operators by self time (CUDA
    kernels' time on a GPU, CPU time otherwise), as a list of {name, calls, self_ms, percent}."""
    from torch.profiler import ProfilerActivity
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == 'cuda' else [])
    with torch.profiler.profile(activities=activities) as prof:
        run()
    attr = 'self_device_time_total' if device.type == 'cuda' else 'self_cpu_time_total'
    events = [e for e in prof.key_averages() if getattr(e, attr, 0) > 0]
    total = sum(getattr(e, attr) for e in events) or 1.0
    events.sort(key=lambda e: getattr(e, attr), reverse=True)
    return [{'name': e.key, 'calls': e.count // steps, 'self_ms': getattr(e, attr) / 1000 / steps,
             'percent': 100 * getattr(e, attr) / total} for e in events[:top]]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--config', type=options.input_file, nargs='+', required=True, help='one or more YAML configs')
    parser.add_argument('--mode', choices=MODES, default='auto', help='what a step is (auto: from the config)')
    parser.add_argument('--batch-size', type=options.positive_int, default=None, help="batch size (default: the config's)")
    parser.add_argument('--warmup', type=options.nonnegative_int, default=5, help='untimed iterations first')
    parser.add_argument('--iters', type=options.positive_int, default=20, help='timed iterations')
    parser.add_argument('--amp', choices=('none', 'bf16', 'fp16'), default='none', help='mixed precision')
    parser.add_argument('--compile', default='none', choices=('none', 'default', 'reduce-overhead', 'max-autotune'),
                        help='torch.compile mode (reduce-overhead: CUDA graphs)')
    parser.add_argument('--cuda-graph', action='store_true',
                        help='pretraining: the training step captured as a CUDA graph (cuda_graph: true)')
    parser.add_argument('--implementation', choices=('auto', 'fast', 'reference'), default=None,
                        help="ST-GCN implementation (default: the config's, i.e. auto: fast on CUDA)")
    parser.add_argument('--profile', type=options.nonnegative_int, default=0, metavar='K',
                        help='also profile 3 steps and print the K operators with the most self time')
    parser.add_argument('--count-ops', action='store_true',
                        help='count per training step the operators, copies and host synchronisations '
                             '(no timing; ST-GCN implementation fast unless --implementation)')
    parser.add_argument('--data', choices=('synthetic', 'config'), default='synthetic',
                        help="synthetic NTU-shaped data, or the config's data_path")
    parser.add_argument('--num-samples', type=options.positive_int, default=512, help='synthetic samples')
    parser.add_argument('--frames', type=options.positive_int, default=50, help='synthetic frames T')
    parser.add_argument('--persons', type=options.positive_int, default=None, help='synthetic persons M (default: 2, or num_person)')
    parser.add_argument('--device', type=options.device, default=None, help="'cuda', 'cuda:1' or 'cpu' (default: cuda when available)")
    parser.add_argument('--threads', type=options.integer(1, 1024), default=None, help='CPU threads (torch.set_num_threads)')
    parser.add_argument('--model-args', '--model_args', dest='model_args', action=DictAction, default=None,
                        help='model_args over every config, e.g. "checkpoint_blocks=true"')
    parser.add_argument('--json', type=options.output_file, default=None, help='write the results here')
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device or ('cuda' if torch.cuda.is_available() else 'cpu'))
    if (device.type == 'cuda') != torch.cuda.is_available():
        raise UserError(f"--device {args.device}: the processors run on CUDA exactly when a GPU is visible "
                        "(hide the GPUs with CUDA_VISIBLE_DEVICES= for a CPU measurement)")
    if args.count_ops:
        return report_counts(args, device)
    results = []
    for config in args.config:
        r = benchmark(config, args, device)
        results.append(r)
        s = r['seconds_per_iteration']
        print(f"{config}: {r['mode']} batch {r['batch_size']} on {r['device']}: {r['samples_per_second']:.1f} samples/s, "
              f"{s['median']:.4f} s/iter (min {s['min']:.4f}, max {s['max']:.4f}; CPU {r['cpu_seconds_per_iteration']:.4f} s), "
              f"peak {r['peak_memory_gib']:.2f} GiB, "
              f"data {100 * r['data_fraction']:.1f}%, amp {r['amp']}")
        for op in r['top_ops'] or []:
            print(f"    {op['percent']:5.1f}%  {op['self_ms']:9.3f} ms/step  x{op['calls']:<5d} {op['name']}")
    for r in results[1:]:             # against the first config of the same run
        first = results[0]
        r['relative_to'] = {'config': first['config'],
                            'seconds_per_iteration': r['seconds_per_iteration']['median'] / first['seconds_per_iteration']['median'],
                            'cpu_seconds_per_iteration': r['cpu_seconds_per_iteration'] / first['cpu_seconds_per_iteration'],
                            'peak_memory': r['peak_memory_gib'] / first['peak_memory_gib']}
        print(f"{r['config']} / {first['config']}: time x{r['relative_to']['seconds_per_iteration']:.2f} "
              f"(CPU time x{r['relative_to']['cpu_seconds_per_iteration']:.2f}), "
              f"peak memory x{r['relative_to']['peak_memory']:.2f}")
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        atomic_write(args.json, lambda f: json.dump(results, f, indent=2), mode='w')
    return results


def report_counts(args, device):
    """``--count-ops``: print (and write with ``--json``) the per-step counts of every config."""
    if args.implementation is None:
        args.implementation = 'fast'           # the path a GPU runs
    results = []
    for config in args.config:
        r = count_ops(config, args, device)
        results.append(r)
        top = ', '.join(f'{k} {v:g}' for k, v in list(r['ops'].items())[:8])
        print(f"{config}: {r['model']} batch {r['batch_size']}, amp {r['amp']}, implementation "
              f"{r['implementation']}: per step {r['ops_per_step']:g} ops, {r['copies_per_step']:g} copies "
              f"({', '.join(f'{k} {v:g}' for k, v in r['copies'].items()) or 'none'}; "
              f"{r['copy_kernels_per_step']:g} aten::copy_ at every level), "
              f"{r['host_syncs_per_step']:g} host syncs "
              f"({', '.join(f'{k} {v:g}' for k, v in r['host_syncs'].items()) or 'none'}); most called: {top}")
    if args.json:
        atomic_write(args.json, lambda f: json.dump(results, f, indent=2), mode='w')
    return results


if __name__ == '__main__':
    run_tool(main)
