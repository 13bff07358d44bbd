"""The processor's data: feeders built in the run's stream and checked against the model, the seeded
per-epoch sampler, the device-resident loader and the worker-seeded DataLoader."""
import os
import random
import signal

import numpy as np
import torch

from processor.build import build_feeder, inference_encoder, model_layout
from processor.checkpoint import _WORK_DIR_LOCKS
from torchlight.io import UserError


class EpochSampler(torch.utils.data.Sampler):
    """Shuffled (or ordered) indices, reseeded from ``seed + epoch`` each epoch: reproducible, not
    the same order every epoch, and resumable at any epoch.

    Under torchrun (``world`` > 1) every rank draws the same permutation and takes its contiguous
    ``batch_size / world`` slice of every global batch of ``batch_size`` (incomplete batches dropped)."""

    def __init__(self, num_samples, seed=0, shuffle=True, rank=0, world=1, batch_size=None):
        self.num_samples = num_samples
        self.seed = seed
        self.shuffle = shuffle
        self.rank, self.world, self.batch_size = rank, world, batch_size
        self.epoch = 0

    def set_epoch(self, epoch):
        self.epoch = epoch

    def order(self):
        if not self.shuffle:
            return list(range(self.num_samples))
        g = torch.Generator()
        g.manual_seed(self.seed * 100003 + self.epoch)
        return torch.randperm(self.num_samples, generator=g).tolist()

    def __iter__(self):
        order = self.order()
        if self.world <= 1:
            return iter(order)
        local = self.batch_size // self.world
        batches = self.num_samples // self.batch_size
        return iter([i for b in range(batches) for i in
                     order[b * self.batch_size + self.rank * local: b * self.batch_size + (self.rank + 1) * local]])

    def __len__(self):
        if self.world <= 1:
            return self.num_samples
        return self.num_samples // self.batch_size * (self.batch_size // self.world)


class DeviceLoader:
    """Batches (data, label, index) drawn by index from a split held on the device: the same batches,
    in the same order, as the DataLoader over ``feeder`` with ``sampler`` (``data_on_device: true``)."""

    def __init__(self, feeder, sampler, batch_size, drop_last, device):
        self.dataset, self.sampler, self.batch_size, self.drop_last = feeder, sampler, batch_size, drop_last
        ids = np.asarray(feeder.index)
        self.data = torch.from_numpy(np.asarray(feeder.data[ids], dtype=np.float32)).to(device)
        self.label = torch.as_tensor(np.asarray(feeder.label)[ids], dtype=torch.long, device=device)
        self.ids = torch.as_tensor(ids, dtype=torch.long, device=device)

    def __len__(self):
        n = len(self.sampler)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self):
        order = torch.as_tensor(list(iter(self.sampler)), dtype=torch.long, device=self.data.device)
        for b in range(len(self)):
            pos = order[b * self.batch_size:(b + 1) * self.batch_size]
            yield self.data[pos], self.label[pos], self.ids[pos]


def seed_worker(worker_id):
    """Per-worker seeds derived from the loader's per-epoch base seed (differ by worker and epoch).
    A worker leaves Ctrl-C to the main process (which stops cleanly) and drops the inherited work_dir
    lock, so that a killed run's orphaned workers never block its resume."""
    worker_seed = torch.initial_seed() % 2 ** 32
    np.random.seed(worker_seed)
    random.seed(worker_seed)
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:
        pass
    for fd in list(_WORK_DIR_LOCKS.values()):
        try:
            os.close(fd)
        except OSError:
            pass


def worker_base_seed(seed, epoch):
    """The base seed of the DataLoader workers of ``epoch`` (a function of the run's seed and epoch only)."""
    return (seed * 1000003 + epoch * 7919 + 12345) % 2 ** 63


class SeededDataLoader(torch.utils.data.DataLoader):
    """A DataLoader whose workers are seeded per epoch from the run's own generator (reseeded from
    ``seed`` and the sampler's epoch before every pass) instead of the global torch RNG: the global RNG,
    which drives the batched augmentations in the main process, sees no draw from the loader, so the
    results depend neither on ``num_worker`` nor on where a run was resumed (``DeviceLoader`` draws
    nothing either). Workers are started per epoch (not persistent) so that their seeds are those of
    the epoch in a resumed process as in an uninterrupted one."""

    def __init__(self, *args, seed=0, **kwargs):
        super().__init__(*args, generator=torch.Generator(), **kwargs)
        self.run_seed = seed

    def __iter__(self):
        self.generator.manual_seed(worker_base_seed(self.run_seed, getattr(self.sampler, 'epoch', 0)))
        return super().__iter__()


class DataMixin:
    """Part of ``Processor``: ``load_data`` builds ``self.data_loader`` ('train', 'test')."""

    def build_feeder(self, name, args, split):
        """The feeder ``name`` with ``args`` in this run's stream (``processor.build.build_feeder``), checked
        against the model's input."""
        cfg = dict(vars(self.arg), **{f'{split}_feeder': name, f'{split}_feeder_args': args})
        feeder = build_feeder(cfg, split, stream=self.arg.stream, layout=self.model_layout(),
                              uses_labels=self.uses_labels, batch_augment=True)     # augmented on the device
        self.check_magnitude(feeder)
        empty = getattr(feeder, 'empty_samples', None)
        if empty is not None and len(empty):
            self.print_log(f"Notice: {len(empty)} of {len(feeder.data)} samples in '{feeder.data_path}' are all "
                           f"zero (no skeleton), e.g. sample {int(empty[0])} "
                           f"'{feeder.sample_name[int(empty[0])]}'; they are kept")
        # the data must fit the model's input (C, V, and M where the model fixes it) before any training
        shape = getattr(getattr(feeder, 'data', None), 'shape', None)
        if shape is not None and len(shape) == 5:
            try:
                inference_encoder(self.model).check_input(torch.zeros((1,) + tuple(shape[1:]), device='meta'))
            except ValueError as e:
                raise UserError(f"data file '{feeder.data_path}' ({split}, shape {tuple(shape)}) does not fit "
                                f"{self.arg.model}: {e}") from e
        return feeder

    def model_layout(self):
        """The skeleton layout of the model's graph (``model_args.graph_args.layout``), or None."""
        return model_layout(self.model)

    MAX_COORDINATE = 1e6

    @classmethod
    def check_magnitude(cls, feeder):
        """Finite but huge values (|x| > 1e6: no skeleton is measured in such units) overflow float32 to
        Inf in the network; say so at load instead of a 'loss is nan' later."""
        data = getattr(feeder, 'data', None)
        if not isinstance(data, np.ndarray) or data.ndim < 2 or not len(data) \
                or not np.issubdtype(data.dtype, np.floating):
            return
        chunk = max(1, (64 << 20) // max(1, data[0].nbytes))
        for start in range(0, len(data), chunk):
            block = np.abs(np.asarray(data[start:start + chunk]))
            peaks = block.reshape(len(block), -1).max(1)
            if np.nanmax(peaks) > cls.MAX_COORDINATE:
                bad = start + int(np.argmax(peaks > cls.MAX_COORDINATE))
                raise UserError(f"data file '{feeder.data_path}' holds values up to {float(np.nanmax(peaks)):.3g} "
                                f"(first in sample {bad}): skeleton coordinates are metres or pixels; values beyond "
                                f"{cls.MAX_COORDINATE:g} overflow float32 to Inf in the network. Rescale the data")

    def make_loader(self, feeder, batch_size, train):
        world = self.world if train else 1
        if world > 1 and batch_size % world:
            raise UserError(f'batch_size={batch_size} must be a multiple of the {world} processes (global batch)')
        sampler = EpochSampler(len(feeder), seed=self.arg.seed, shuffle=train, rank=self.rank, world=world,
                               batch_size=batch_size)
        batch_size = batch_size // world
        if not len(feeder):
            raise UserError(f"the {'training' if train else 'test'} split is empty: data file '{feeder.data_path}' "
                            'holds no samples (or none is selected); convert the data again or give another split')
        if train and batch_size > len(feeder):
            advised = (getattr(self, 'size_advice', None) or {}).get('batch_size')
            raise UserError(f'batch_size={batch_size} is larger than the {len(feeder)} training samples '
                            f"of '{feeder.data_path}' (the last incomplete batch is dropped)"
                            + (f': give --batch_size {advised[0]}, the size advice for this set (printed above, '
                               'processor/small_data.py)' if advised else ''))
        if train:
            steps, dropped = divmod(len(feeder), batch_size * world)
            self.print_log(f'Training data: {len(feeder)} samples, batch_size {batch_size * world}: {steps} '
                           f"iteration{'s' if steps != 1 else ''} per epoch, {dropped} samples dropped per epoch "
                           '(drop_last: the last incomplete batch; other samples each epoch, the order is reshuffled)')
        if self.data_on_device(feeder):
            return DeviceLoader(feeder, sampler, batch_size, drop_last=train, device=self.dev)
        return SeededDataLoader(
            feeder, batch_size=batch_size, sampler=sampler, num_workers=self.arg.num_worker,
            drop_last=train, pin_memory=self.dev.type == 'cuda', worker_init_fn=seed_worker, seed=self.arg.seed)

    def data_on_device(self, feeder):
        """``data_on_device``: true/false, or auto: a GPU split that fits in a third of the free memory."""
        if self.arg.data_on_device != 'auto':
            return self.arg.data_on_device
        if self.dev.type != 'cuda':
            return False
        size = 4 * len(feeder.index) * int(np.prod(feeder.data.shape[1:]))      # float32 on the device
        return size <= torch.cuda.mem_get_info(self.dev)[0] / 3

    def loads_train_split(self):
        """Whether the run reads the training split (training; kNN evaluation's memory bank)."""
        return self.arg.phase == 'train'

    # whether the training split is trained on (batches, drop_last; kNN evaluation: a memory bank)
    trains_on_train_split = True

    def advise_size(self, num_samples):
        """The size advice of this run's training set (processor/small_data.py), printed before any check of
        the settings against the set; -> {key: (value, why)}."""
        return {}

    def load_data(self):
        self.data_loader = {}
        self.train_feeder = self.test_feeder = None
        self.size_advice = {}
        if self.loads_train_split() and self.arg.train_feeder_args:
            self.train_feeder = self.build_feeder(self.arg.train_feeder, self.arg.train_feeder_args, 'train')
            if self.train_feeder.layout is not None:
                self.print_log(f'Skeleton: {self.train_feeder.layout.describe()}, for feeder and model')
            if self.trains_on_train_split and self.arg.phase == 'train':
                self.size_advice = self.advise_size(len(self.train_feeder))
            self.data_loader['train'] = self.make_loader(self.train_feeder, self.arg.batch_size,
                                                         self.trains_on_train_split)
        if self.arg.test_feeder_args:
            self.test_feeder = self.build_feeder(self.arg.test_feeder, self.arg.test_feeder_args, 'test')
            self.data_loader['test'] = self.make_loader(self.test_feeder, self.arg.test_batch_size, False)
