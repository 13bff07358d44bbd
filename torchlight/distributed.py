"""Multi-process training with ``torchrun`` (one process per GPU, or CPU processes with gloo).

A plain run (no ``WORLD_SIZE`` in the environment) is a single process and needs no launcher.  Under
``torchrun --nproc_per_node=G main.py ...`` every process builds the same model from the same seed and
trains on its own share of every global batch; gradients are averaged over processes after each
backward (``average_gradients``: the same update as DistributedDataParallel without overlap), so the
weights stay identical on every rank.  MoCo keys are computed with shuffle-BN across ranks (the batch
gathered, permuted by rank 0, each rank encoding a slice) and gathered from all ranks before they enter the
queue (``all_gather``).  Logging, checkpoints and evaluation happen on rank 0.  ``batch_size`` in the
YAML is the global batch (split over ranks), so the reference learning rates apply unchanged.
"""
import os

import torch
import torch.distributed as dist


def world_size():
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank():
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main():
    return rank() == 0


def init_from_environment():
    """Join the process group torchrun describes (``WORLD_SIZE`` > 1); return (rank, world size)."""
    size = int(os.environ.get('WORLD_SIZE', '1'))
    if size <= 1:
        return 0, 1
    if not dist.is_initialized():
        backend = 'nccl' if torch.cuda.is_available() and os.environ.get('DIST_BACKEND', '') != 'gloo' else 'gloo'
        dist.init_process_group(backend=backend)
    return dist.get_rank(), dist.get_world_size()


def shutdown(wait=True):
    """Leave the process group at the end of a run: with ``wait`` every rank first waits for the others
    (rank 0 may still be saving or evaluating), so no process exits while gloo/NCCL threads are live."""
    if dist.is_available() and dist.is_initialized():
        if wait:
            dist.barrier()
        dist.destroy_process_group()


def local_rank():
    return int(os.environ.get('LOCAL_RANK', '0'))


@torch.no_grad()
def all_gather(tensor):
    """Concatenate ``tensor`` from every rank along dim 0, in rank order (identity on one process)."""
    if world_size() == 1:
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(world_size())]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts)


def average_gradients(parameters):
    """Average the gradients of ``parameters`` over ranks (after backward, before the optimiser step)."""
    if world_size() == 1:
        return
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world_size()
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()


@torch.no_grad()
def broadcast(tensor, source=0):
    """Overwrite ``tensor`` in place with rank ``source``'s (no-op on one process)."""
    if world_size() > 1:
        dist.broadcast(tensor, source)
    return tensor


@torch.no_grad()
def broadcast_buffers(module):
    """Copy rank 0's buffers (BatchNorm statistics) to every rank, e.g. before saving or evaluating."""
    if world_size() == 1:
        return
    for buf in module.buffers():
        dist.broadcast(buf, 0)


def all_reduce_mean(value):
    """Mean of a float over ranks."""
    if world_size() == 1:
        return value
    device = 'cuda' if dist.get_backend() == 'nccl' else 'cpu'
    t = torch.tensor([float(value)], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.item() / world_size()
