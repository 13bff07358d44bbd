"""Whether pretraining helped: the closing verdict of every evaluation of pretrained weights (linear, kNN,
finetune and semi-supervised).

A learned encoder's top-1 is set beside (docs/METHODS.md, "Does pretraining help?"):

* the untrained encoder it started from: the same processor, config, probe and seed with ``--weights
  random`` and the init of its pretraining (``--init_of <weights>``), run once and cached in
  ``verdict_cache`` under the digest of the run's settings and the content of its arrays;
* the ridge floor of the probe's own arrays (``tools/floor.py``'s definition on the training samples the
  probe reads and the test split), cached by content.
"""
import copy
import hashlib
import json
import os

import numpy as np

from torchlight.io import UserError, atomic_write
from torchlight.readers import load_json

# settings that do not change what an evaluation measures (left out of the cache key)
NOT_IN_KEY = ('work_dir', 'config', 'weights', 'init_of', 'verdict', 'verdict_cache', 'resume', 'progress_bar',
              'print_log', 'save_log', 'save_result', 'log_interval', 'save_interval', 'num_worker', 'device',
              'ignore_weights', 'allow_label_pretraining', 'weights_init')
FLOOR_MAX_NUMBERS = 60_000_000      # larger probe arrays get no floor here (tools/floor.py computes it offline)


def digest(obj):
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:20]


def file_digest(path, cache):
    """sha256 of a file's content, memoised by (path, size, mtime) in ``cache`` (a dict saved with the cache)."""
    stat = os.stat(path)
    key = f'{os.path.abspath(path)}:{stat.st_size}:{stat.st_mtime_ns}'
    if key not in cache:
        h = hashlib.sha256()
        with open(path, 'rb') as f:
            for block in iter(lambda: f.read(1 << 24), b''):
                h.update(block)
        cache[key] = h.hexdigest()[:20]
    return cache[key]


def read_json(path):
    """A cache record (``torchlight.readers.load_json``), None when there is none yet."""
    return load_json(path, 'verdict cache file') if os.path.isfile(path) else None


def write_json(obj, path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    atomic_write(path, lambda f: f.write(json.dumps(obj, indent=1) + '\n'), mode='w')


class Verdict:
    """The verdict of one evaluation processor ``p`` (after its run): ``compute(top1)`` -> record or None."""

    def __init__(self, processor):
        self.p = processor
        self.cache = os.path.abspath(processor.arg.verdict_cache)
        self.digests_path = os.path.join(self.cache, 'file_digests.json')
        self.digests = read_json(self.digests_path) or {}

    def data_digests(self):
        """{feeder split: {data, label, subset}} digests of the arrays the run reads."""
        out = {}
        for split, loader in self.p.data_loader.items():
            feeder = loader.dataset
            out[split] = {'data': file_digest(feeder.data_path, self.digests),
                          'label': file_digest(feeder.label_path, self.digests),
                          'index': hashlib.sha256(np.asarray(feeder.index, dtype=np.int64).tobytes()).hexdigest()[:20]}
        write_json(self.digests, self.digests_path)
        return out

    def untrained(self, data):
        """{top1, init, cached} of the untrained encoder under this run's processor, config and seed."""
        from processor.processor import init_name, pretraining_init
        p = self.p
        found = pretraining_init(p.arg.weights)
        family = p.arg.weights_init if found is None else found
        settings = {k: v for k, v in vars(p.arg).items() if k not in NOT_IN_KEY}
        key = digest({'processor': p.name or type(p).__name__, 'settings': settings, 'data': data,
                      'weights_init': family})
        folder = os.path.join(self.cache, 'untrained', key)
        record_path = os.path.join(folder, 'verdict_untrained.json')
        record = read_json(record_path)
        if record is not None:
            return dict(record, cached=True)
        argv = ['--config', os.path.join(p.arg.work_dir, 'config.yaml'), '--work_dir', folder, '--weights', 'random',
                '--verdict', 'false', '--progress_bar', 'false', '--resume', 'auto']
        argv += ['--init_of', p.arg.weights] if found is not None else ['--weights_init', str(bool(family)).lower()]
        p.print_log(f'Verdict: the untrained encoder ({init_name(family)}, seed {p.arg.seed}) under the same probe, '
                    f'once for these arrays and settings: {folder}')
        baseline = type(p)(argv, name=p.name)
        outcome = baseline.start()
        top1 = baseline.primary_top1(outcome)
        if top1 is None:
            raise UserError(f'verdict: the untrained run in {folder} gave no top-1')
        record = {'top1': top1, 'init': init_name(family),
                  'init_source': p.arg.weights if found is not None else 'the evaluation config (pretraining unknown)'}
        write_json(record, record_path)
        return dict(record, cached=False)

    def floor(self, data):
        """{top1, alpha} of the ridge floor of the probe's arrays (None when too large or without both splits)."""
        if 'train' not in self.p.data_loader or 'test' not in self.p.data_loader:
            return None
        path = os.path.join(self.cache, 'floor', digest(data) + '.json')
        record = read_json(path)
        if record is not None:
            return record
        train, test = self.p.data_loader['train'].dataset, self.p.data_loader['test'].dataset
        numbers = int(np.prod(train.data.shape[1:])) * (len(train.index) + len(test.index))
        if numbers > FLOOR_MAX_NUMBERS:
            return None
        from tools.floor import ridge_floor
        take = lambda f: (np.asarray(f.data[np.asarray(f.index)], dtype=np.float64), np.asarray(f.label)[f.index])
        (tx, ty), (vx, vy) = take(train), take(test)
        found = ridge_floor(tx, ty, vx, vy)
        record = None if found is None else {'top1': round(found[0], 4), 'alpha': found[1]}
        if record is not None:
            write_json(record, path)
        return record

    def compute(self, top1):
        """``top1`` (percent) of the learned encoder -> the verdict record (also printed as one line)."""
        p = self.p
        data = self.data_digests()
        untrained, floor = self.untrained(data), self.floor(data)
        gain = round(top1 - untrained['top1'], 2)
        record = {'learned_top1': round(top1, 4), 'untrained_top1': untrained['top1'], 'untrained_init': untrained['init'],
                  'untrained_init_source': untrained['init_source'], 'gain_over_untrained': gain,
                  'floor_top1': floor and floor['top1'], 'gain_over_floor': floor and round(top1 - floor['top1'], 2)}
        words = f"{'+' if gain >= 0 else ''}{gain:.1f} points over its untrained init" if gain >= 0 else \
            f'{-gain:.1f} points BELOW its untrained init'
        floor_words = 'no floor (arrays too large here: tools/floor.py)' if floor is None else \
            f"{abs(record['gain_over_floor']):.1f} points {'over' if record['gain_over_floor'] >= 0 else 'under'} " \
            f"the raw-joint floor ({floor['top1']:.1f}%)"
        record['line'] = (f"Verdict: top-1 {top1:.1f}%; the untrained encoder it started from ({untrained['init']}, same "
                          f"probe, seed {p.arg.seed}) {untrained['top1']:.1f}%: pretraining {words}, {floor_words}")
        p.print_log(record['line'])
        return record


def add_verdict(processor, result):
    """``result`` (a result.json dict with ``top1_last``) gains the ``verdict`` of its run, when it evaluates
    pretrained weights and ``verdict: true``."""
    from processor.processor import untrained_weights
    p = processor
    if not (p.arg.verdict and p.is_main and p.arg.weights and not untrained_weights(p.arg.weights)):
        return result
    result = copy.deepcopy(result)
    result['verdict'] = Verdict(p).compute(result['top1_last'])
    return result
