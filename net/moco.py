"""The MoCo core shared by every contrastive method (He et al., CVPR 2020; MoCo v2 head).

``MoCo`` owns the query encoder, the momentum key encoder, the queue of normalised keys with its
pointer, and the InfoNCE logits.  SkeletonCLR is MoCo on skeletons; AimCLR, MsMCLR and MICA subclass
it and add only what is theirs.  Parameter and buffer names (``encoder_q.*``, ``encoder_k.*``,
``queue``, ``queue_ptr``) are those of the reference code bases.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from net.method import PretrainingMethod
from net.utils.encoder import SkeletonEncoder
from torchlight.distributed import all_gather, broadcast, rank, world_size
from torchlight.io import import_class


def build_encoder(base_encoder, **encoder_args):
    """Instantiate an encoder given as an import string (``net.st_gcn.Model``) or a class."""
    cls = import_class(base_encoder) if isinstance(base_encoder, str) else base_encoder
    if not (isinstance(cls, type) and issubclass(cls, SkeletonEncoder)):
        raise ValueError(f'model_args.base_encoder={base_encoder!r} does not implement the encoder contract: '
                         'subclass net.utils.encoder.SkeletonEncoder (docs/EXTENDING.md)')
    return cls(**encoder_args)


def add_mlp_head(encoder, batch_norm=False):
    """Replace ``encoder.fc`` by Linear-ReLU-fc (the MoCo v2 projection head; names ``fc.0``, ``fc.2``),
    with ``batch_norm='hidden'`` by Linear-BN-ReLU-fc (SkeleMixCLR's head; ``fc.0``, ``fc.1``, ``fc.3``),
    or with ``batch_norm`` True by the MoCo v3 projector Linear-BN-ReLU-fc-BN(no affine) (names ``fc.0``,
    ``fc.1``, ``fc.3``, ``fc.4``), whose output BatchNorm keeps every embedding dimension spread over
    the batch, so the embeddings cannot shrink into a narrow cone."""
    dim_mlp = encoder.fc.weight.shape[1]
    if batch_norm == 'hidden':
        encoder.fc = nn.Sequential(nn.Linear(dim_mlp, dim_mlp), nn.BatchNorm1d(dim_mlp), nn.ReLU(), encoder.fc)
    elif batch_norm:
        out_dim = encoder.fc.weight.shape[0]
        encoder.fc = nn.Sequential(nn.Linear(dim_mlp, dim_mlp), nn.BatchNorm1d(dim_mlp), nn.ReLU(), encoder.fc,
                                   nn.BatchNorm1d(out_dim, affine=False))
    else:
        encoder.fc = nn.Sequential(nn.Linear(dim_mlp, dim_mlp), nn.ReLU(), encoder.fc)


def at_least_float32(x):
    """``x`` in float32 when it is half precision (AMP), else as it is (float64 parity runs stay float64)."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def info_nce_logits(q, k, queue, temperature):
    """InfoNCE logits [q.k+, q.queue] / T (MoCo eq. 1); the positive is column 0.

    q, k: (N, D) L2-normalised; queue: (D, K).  The queue is not copied: ``MoCo.enqueue`` replaces
    the buffer instead of writing into it, so the tensor saved for backward stays valid (also under
    torch.compile, which would drop a defensive clone)."""
    with torch.autocast(device_type=q.device.type, enabled=False):     # logits in float32 under AMP
        q, k = at_least_float32(q), at_least_float32(k)
        l_pos = torch.einsum('nc,nc->n', q, k).unsqueeze(-1)
        l_neg = torch.einsum('nc,ck->nk', q, at_least_float32(queue.detach()).to(q.dtype))
        return torch.cat([l_pos, l_neg], dim=1) / temperature


def embedding_std(z):
    """Mean over dimensions of the per-dimension std of L2-normalised embeddings.

    About 1/sqrt(D) for a healthy (uniformly spread) embedding, 0 for a collapsed one."""
    z = F.normalize(z.detach().float(), dim=1)
    return z.std(dim=0).mean()


class MoCo(PretrainingMethod):
    """Query/key encoders with momentum update and a queue of keys.

    Args:
        base_encoder: import string or class of the encoder (``net.st_gcn.Model``).
        pretrain: False builds only ``encoder_q`` with ``num_class`` outputs (evaluation).
        feature_dim: embedding size; queue_size: K; momentum: m; Temperature: tau; mlp: MoCo v2 head.
        shuffle_bn_groups: MoCo's shuffle-BN within a device: queries and keys are encoded in this
            many sub-batches (BatchNorm statistics per sub-batch), keys after a random shuffle, so the
            key and query of a sample never share BatchNorm statistics (1 = reference).  Under torchrun
            keys are always shuffled across ranks as in MoCo (``shuffle_bn``), and each rank's share
            is further split into this many groups.
        head_bn: BatchNorm inside the MLP head (``add_mlp_head``): True adds the MoCo v3 projector (not in
            the reference; against collapse on small data, see docs/METHODS.md), 'hidden' SkeleMixCLR's.
        Other keyword arguments go to the encoder.
    """

    def __init__(self, base_encoder=None, pretrain=True, feature_dim=128, queue_size=32768,
                 momentum=0.999, Temperature=0.07, mlp=True, head_bn=False, shuffle_bn_groups=1, num_class=60,
                 **encoder_args):
        super().__init__()
        if base_encoder is None:
            raise ValueError("model_args.base_encoder is required, e.g. 'net.st_gcn.Model'")
        if pretrain:
            for key, value in (('queue_size', queue_size), ('feature_dim', feature_dim)):
                if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                    raise ValueError(f'model_args.{key} must be a positive integer, got {value!r}')
            if isinstance(momentum, bool) or not isinstance(momentum, (int, float)) or not 0 <= momentum < 1:
                raise ValueError(f'model_args.momentum (key encoder EMA) must be in [0, 1), got {momentum!r}')
            if isinstance(Temperature, bool) or not isinstance(Temperature, (int, float)) or not Temperature > 0:
                raise ValueError(f'model_args.Temperature must be a number > 0, got {Temperature!r}')
        self.pretrain = pretrain
        if not pretrain:
            self.encoder_q = self.make_encoder(base_encoder, num_class, encoder_args)
            return
        self.K = queue_size
        self.m = momentum
        self.shuffle_bn_groups = shuffle_bn_groups
        self.T = Temperature
        self.encoder_q = self.make_encoder(base_encoder, feature_dim, encoder_args)
        self.encoder_k = self.make_encoder(base_encoder, feature_dim, encoder_args)
        if mlp:
            add_mlp_head(self.encoder_q, head_bn)
            add_mlp_head(self.encoder_k, head_bn)
        for param_q, param_k in zip(self.encoder_q.parameters(), self.encoder_k.parameters()):
            param_k.data.copy_(param_q.data)
            param_k.requires_grad = False
        self.register_buffer('queue', F.normalize(torch.randn(feature_dim, queue_size), dim=0))
        self.register_buffer('queue_ptr', torch.zeros(1, dtype=torch.long))
        self.pending_keys = None

    def build_neck(self, encoder):
        """Hook for a method: the module to attach as ``encoder.neck`` (on the ``encode`` map, shape kept,
        e.g. MICA's FreST), or None.  Called for every encoder before the key encoder is copied from the
        query encoder, so the neck is part of both and of the copy."""
        return None

    def make_encoder(self, base_encoder, num_class, encoder_args):
        encoder = build_encoder(base_encoder, num_class=num_class, **encoder_args)
        neck = self.build_neck(encoder)
        if neck is not None:
            encoder.neck = neck
        return encoder

    @property
    def uniform_loss(self):
        """InfoNCE loss of uniform logits, ln(K + 1): a loss that sits here means collapse."""
        return math.log(self.K + 1) if self.pretrain else None

    @property
    def recipe(self):
        return {'momentum': self.m, 'queue_size': self.K, 'shuffle_bn_groups': self.shuffle_bn_groups} \
            if self.pretrain else {}

    def check_batch_size(self, batch_size):
        if self.K % batch_size != 0:
            raise ValueError(f'model_args.queue_size={self.K} is not a multiple of batch_size={batch_size}: '
                             'choose a queue size divisible by the batch size')

    @torch.no_grad()
    def momentum_update(self):
        """theta_k <- m * theta_k + (1 - m) * theta_q (MoCo eq. 2)."""
        params_q = [p.data for p in self.encoder_q.parameters()]
        params_k = [p.data for p in self.encoder_k.parameters()]
        # same rounding as the reference: k * m + q * (1 - m), each product rounded first
        torch._foreach_mul_(params_k, self.m)
        torch._foreach_add_(params_k, torch._foreach_mul(params_q, 1.0 - self.m))

    @torch.no_grad()
    def gather_keys(self, keys):
        """Keys from every process under torchrun, in rank order (identity on a single process)."""
        return all_gather(keys)

    @torch.compiler.disable      # the queue buffer is replaced: eager under torch.compile (no graph-break warning)
    @torch.no_grad()
    def enqueue(self, keys):
        """Write ``keys`` (N, D) at the pointer and advance it: the only place the queue changes.

        The columns ptr .. ptr + N - 1 are indexed on the device (no read of the pointer by the host, the
        same shapes every step: capture-safe); K is a multiple of N, so they never wrap.  Out of place (one
        copy of the queue per step, where the reference clones it for every logits call): the previous
        queue tensor, saved by autograd for this step's backward, is left intact.  With ``defer_enqueue``
        (a CUDA graph, processor/train_step.py) the keys wait for ``flush_enqueue`` after backward."""
        keys = self.gather_keys(keys)
        self.check_batch_size(keys.shape[0])
        if self.defer_enqueue:
            self.pending_keys = keys
            return
        self.write_queue(keys, in_place=False)

    @torch.no_grad()
    def flush_enqueue(self):
        """The deferred ``enqueue`` of this step, written into the queue buffer in place (its address is
        what a captured graph reads); after backward, when autograd no longer needs the old values."""
        if self.pending_keys is not None:
            keys, self.pending_keys = self.pending_keys, None
            self.write_queue(keys, in_place=True)

    def write_queue(self, keys, in_place):
        """Write ``keys`` at the pointer (a new buffer, or ``in_place`` into the current one) and advance it."""
        columns = self.queue_ptr + torch.arange(keys.shape[0], device=keys.device)
        values = keys.T.to(self.queue.dtype)
        if in_place:
            self.queue.index_copy_(1, columns, values)
        else:
            self.queue = self.queue.index_copy(1, columns, values)
        self.queue_ptr.add_(keys.shape[0]).remainder_(self.K)

    def embed_query(self, x):
        """L2-normalised query embeddings (per-sub-batch BatchNorm when shuffle_bn_groups > 1)."""
        groups = self.shuffle_bn_groups
        if groups <= 1:
            return F.normalize(self.encoder_q(x), dim=1)
        return F.normalize(torch.cat([self.encoder_q(chunk) for chunk in x.chunk(groups)]), dim=1)

    def query_feature_map(self, x):
        """The query encoder's feature map (N*M, C, T', V) before pooling, for methods that work on it
        (AimCLR's drop, MsMCLR's attention, MICA's FreST); same sub-batch BatchNorm as ``embed_query``."""
        encode = self.encoder_q.encode              # the encoder contract (net/utils/encoder.py)
        groups = self.shuffle_bn_groups
        if groups <= 1:
            return encode(x)
        return torch.cat([encode(chunk) for chunk in x.chunk(groups)])

    def project_query(self, feature_map, num_person):
        """Pool a query feature map and apply the query head: L2-normalised embedding (N, D)."""
        return F.normalize(self.encoder_q.fc(self.encoder_q.pool(feature_map, num_person)), dim=1)

    @torch.no_grad()
    def shuffle_bn(self, encode, x):
        """Apply the key encoder's ``encode`` to ``x`` (N, C, T, V, M) with MoCo's shuffle-BN and return
        its per-sample output in sample order, shape (N, ...) (``encode`` may fold persons into the batch).

        Under torchrun the batch is gathered from every rank, permuted with rank 0's permutation, and
        each rank encodes its slice of the shuffled batch (MoCo's ``_batch_shuffle_ddp``), so the
        BatchNorm statistics of a key never come from the ranks' own queries; within a rank the slice
        is split into ``shuffle_bn_groups`` sub-batches (randomly assigned on one process).  With one
        process and one group this is a plain ``encode(x)``."""
        world, groups = world_size(), self.shuffle_bn_groups
        if world == 1 and groups <= 1:
            out = encode(x)
            return out.view(x.size(0), -1, *out.shape[1:])
        full = all_gather(x)
        perm = torch.randperm(full.size(0), device=x.device)
        broadcast(perm)                                            # every rank uses rank 0's permutation
        local = full[perm].chunk(world)[rank()]
        out = torch.cat([encode(chunk) for chunk in local.chunk(max(groups, 1))])
        out = all_gather(out.view(local.size(0), -1, *out.shape[1:]))[torch.argsort(perm)]
        return out.chunk(world)[rank()]

    @torch.no_grad()
    def embed_key(self, x):
        """L2-normalised key embeddings (N, D), with shuffle-BN (``shuffle_bn``)."""
        return F.normalize(self.shuffle_bn(self.encoder_k, x).flatten(1), dim=1)

    @torch.no_grad()
    def key_feature_map(self, x):
        """The key encoder's feature map (N*M, C, T', V), with the same shuffle-BN as ``embed_key``."""
        return self.shuffle_bn(self.encoder_k.encode, x).flatten(0, 1)

    @torch.no_grad()
    def project_key(self, feature_map, num_person):
        return F.normalize(self.encoder_k.fc(self.encoder_k.pool(feature_map, num_person)), dim=1)

    def contrastive_loss(self, logits):
        """Cross-entropy with the positive at column 0 (InfoNCE)."""
        labels = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
        return F.cross_entropy(logits, labels)

    def forward_eval(self, *inputs):
        """Logits of the query encoder for the first input that is not None: ``model(x)`` here, and the
        reference's evaluation call ``model(None, x)`` (AimCLR's processors) gives the same."""
        return self.encoder_q(next(x for x in inputs if x is not None))
