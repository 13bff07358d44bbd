"""Per-iteration dynamics of the first pretraining epochs: what decides whether a run falls into the cone.

    python tools/early_dynamics.py --config config/ucla/pretrain_aimclr.yaml --epochs 3 --seed 1 \
        --out results/early_dynamics/aimclr_seed1.jsonl [--set warm_up_epoch=0 model_args.divergence_ramp_epochs=0]

Builds the processor ``main.py`` runs for the config and trains it as ``train_epoch`` does (same loader,
views, lr schedule, optimiser step), writing one JSON line per iteration: lr, the model's loss terms,
embedding std, the mean pairwise cosine of the query embeddings (1 = all in one direction), the
positive-logit margin (cosine of the positive minus the largest queue cosine), the entropy of the
normal view's distribution over [positive, queue] / ln(K+1) (the target of AimCLR's D3M and MsMCLR's
L_Ms: 1 = uniform), and the gradient norm per block (data_bn, each ST-GCN block, the head) of the
InfoNCE term and of the divergence term separately, with their cosine.  The divergence term's gradient
is taken from its own graph (the model's ``distribution_cross_entropy`` calls, recorded here); the
InfoNCE gradient is the total's minus the divergence's at its weight.  An analysis tool: slower than
training (two extra backward passes per step).
"""
import argparse
import contextlib
import json
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from torchlight.boundary import early  # noqa: E402

early(__name__)              # a Ctrl-C during the imports below is one line

import torch  # noqa: E402

import net.losses  # noqa: E402
from net.losses import divergence_weight  # noqa: E402
from processor.build import load_config  # noqa: E402
from processor.pretrain import PretrainProcessor  # noqa: E402
from torchlight import options  # noqa: E402
from torchlight.io import StagedFiles, UserError, run_tool  # noqa: E402


@contextlib.contextmanager
def recorded(module, name, calls):
    """Record every (args, result) of ``module.name`` (and of the same function imported by the
    method modules) while the block runs."""
    original = getattr(module, name)

    def wrapper(*args, **kwargs):
        out = original(*args, **kwargs)
        calls.append((args, out))
        return out
    patched = [m for m in list(sys.modules.values()) if getattr(m, name, None) is original]
    for m in patched:
        setattr(m, name, wrapper)
    try:
        yield
    finally:
        for m in patched:
            setattr(m, name, original)


def block_of(name):
    parts = name.split('.')
    if parts[1] == 'st_gcn_networks':
        return f'block{parts[2]}'
    return parts[1]                          # data_bn, fc (the head), edge_importance, ...


def grad_norms(grads, names):
    sums = {}
    for name, g in zip(names, grads):
        if g is not None:
            sums[block_of(name)] = sums.get(block_of(name), 0.0) + float(g.float().pow(2).sum())
    return {k: math.sqrt(v) for k, v in sums.items()}


def flat(grads, params):
    return torch.cat([(g if g is not None else torch.zeros_like(p)).flatten() for g, p in zip(grads, params)])


def step_record(proc, views, epoch, it, lr):
    model = proc.model
    logits_calls, div_calls = [], []
    import net.moco
    with recorded(net.moco, 'info_nce_logits', logits_calls), \
            recorded(net.losses, 'distribution_cross_entropy', div_calls):
        out = model(*views, **{k: epoch for k in model.forward_keywords if k == 'epoch'})
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad and n.startswith('encoder_q.')]
    names, params = [n for n, _ in named], [p for _, p in named]
    total = torch.autograd.grad(out['loss'], params, retain_graph=True, allow_unused=True)
    record = {'epoch': epoch + 1, 'iter': it, 'lr': lr}
    record.update({k: float(v.detach()) for k, v in out.items() if torch.is_tensor(v) and v.dim() == 0})
    logits = logits_calls[0][1].detach()                     # the normal query's [positive, queue] / T
    T, K = model.T, logits.size(1) - 1
    cos = logits * T
    record['pos_margin'] = float((cos[:, 0] - cos[:, 1:].max(dim=1).values).mean())
    p = torch.softmax(logits, dim=1)
    record['target_entropy_over_uniform'] = float(-(p * p.clamp_min(1e-30).log()).sum(1).mean() / math.log(K + 1))
    q = torch.nn.functional.normalize(logits_calls[0][0][0].detach().float(), dim=1)
    n = q.size(0)
    record['mean_pairwise_cos'] = float(((q @ q.t()).sum() - n) / (n * (n - 1)))
    info = total
    if div_calls:
        weight = divergence_weight(epoch, getattr(model, 'infonce_warmup_epochs', 0),
                                   getattr(model, 'divergence_ramp_epochs', 0))
        div_loss = sum(out for _, out in div_calls) / len(div_calls)
        div = torch.autograd.grad(div_loss, params, retain_graph=True, allow_unused=True)
        info = [None if t is None else t - weight * (d if d is not None else 0) for t, d in zip(total, div)]
        record['divergence_weight'] = weight
        record['grad_div'] = grad_norms(div, names)
        a, b = flat(info, params), flat(div, params)
        record['cos_info_div'] = float(torch.dot(a, b) / (a.norm() * b.norm()).clamp_min(1e-30))
    record['grad_info'] = grad_norms(info, names)
    return out['loss'], record


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--config', type=options.input_file, required=True,
                        help='a pretraining config (config/ucla/pretrain_*.yaml)')
    parser.add_argument('--epochs', type=options.integer(1, 10_000), default=3)
    parser.add_argument('--seed', type=options.seed, default=1)
    parser.add_argument('--out', type=options.output_file, required=True,
                        help='the JSON-lines file to write (one line per iteration)')
    parser.add_argument('--set', type=options.key_value, nargs='*', default=[], metavar='KEY=VALUE',
                        help='command-line overrides of main.py, e.g. warm_up_epoch=0 model_args.queue_size=256')
    args = parser.parse_args(argv)
    overrides = []
    for item in args.set:
        key, _, value = item.partition('=')
        if key.startswith('model_args.'):
            overrides += ['--model_args', f"{key.split('.', 1)[1]}={value}"]
        else:
            overrides += [f'--{key}', value]
    load_config(args.config)                                 # a one-line error for a bad config
    work_dir = os.path.splitext(args.out)[0] + '_work'
    proc = PretrainProcessor(['--config', args.config, '--work_dir', work_dir, '--seed', str(args.seed),
                              '--progress_bar', 'false', '--num_epoch', str(args.epochs), *overrides])
    loader = proc.data_loader['train']
    with StagedFiles() as staged, open(staged.path(args.out), 'w', encoding='utf-8') as f:
        for epoch in range(args.epochs):                # the file appears complete at the end, or not at all
            proc.model.train()
            if hasattr(loader.sampler, 'set_epoch'):
                loader.sampler.set_epoch(epoch)
            for it, (raw, _, _) in enumerate(loader):
                lr = proc.adjust_lr(epoch, it / max(1, len(loader)))
                loss, record = step_record(proc, proc.make_views(raw), epoch, it, lr)
                if not math.isfinite(float(loss)):
                    raise UserError(f'loss is {float(loss)} at epoch {epoch + 1} iteration {it}: stopped; '
                                    f"'{args.out}' is not written (lower base_lr or check the config)")
                proc.backward_step(loss)
                f.write(json.dumps(record) + '\n')
                f.flush()
            print(f"epoch {epoch + 1}: embed_std {record['embed_std']:.4f}, mean pairwise cos "
                  f"{record['mean_pairwise_cos']:.3f}, target entropy {record['target_entropy_over_uniform']:.3f}")


if __name__ == '__main__':
    run_tool(main)
