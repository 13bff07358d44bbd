"""Who outranks the positive: a pretrained MoCo checkpoint's query of every training clip (view 1) against
its own key (view 2) and the keys of ``--negatives`` other clips, all from the current key encoder.

    python tools/negatives_probe.py --config config/ucla/pretrain_msmclr.yaml --weights <epoch20_model.pt>

Prints one JSON line: the positive's top-1 rate (``acc_pos`` with fresh keys, where training's is
against a queue of older keys), the negatives above the positive per clip, and the fraction of them of
the query's class against that fraction among all negatives (false negatives: a ratio near 1 says the
negatives that beat the positive are not mostly of its class).  An analysis tool, docs/METHODS.md
"Every seed learns".
"""
import argparse
import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from torchlight.boundary import early  # noqa: E402

early(__name__)              # a Ctrl-C during the imports below is one line

import torch  # noqa: E402

from processor.pretrain import PretrainProcessor  # noqa: E402
from torchlight import options  # noqa: E402
from torchlight.io import check_finite, run_tool  # noqa: E402


def embeddings(proc):
    """(queries, keys, labels) of the training loader's clips (one epoch, drop_last as in training)."""
    model, out = proc.model, ([], [], [])
    model.train()                        # BatchNorm over the batch (and its shuffle groups), as in training
    with torch.no_grad():
        for raw, label, _ in proc.data_loader['train']:
            views = proc.make_views(raw)
            for store, value in zip(out, (model.embed_query(views[0]), model.embed_key(views[1]), label)):
                store.append(value)
    return [torch.cat(x) for x in out]


def probe(queries, keys, labels, negatives=512, seed=0):
    n = len(labels)
    similarity, g = queries @ keys.t(), torch.Generator().manual_seed(seed)
    others = torch.stack([torch.randperm(n - 1, generator=g)[:negatives] for _ in range(n)])
    others = others + (others >= torch.arange(n)[:, None]).long()             # every clip but itself
    above = similarity.gather(1, others) > similarity.diag()[:, None]
    same = labels[others] == labels[:, None]
    return {'clips': n, 'acc_pos': round(float((~above.any(1)).float().mean()), 4),
            'negatives_above_positive': round(float(above.sum(1).float().mean()), 1),
            'own_class_among_them': round(float((above & same).sum() / above.sum().clamp(min=1)), 4),
            'own_class_among_negatives': round(float(same.float().mean()), 4)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--config', type=options.input_file, required=True,
                        help='the pretraining config of the checkpoint')
    parser.add_argument('--weights', type=options.input_file, required=True,
                        help='a pretraining checkpoint (epoch<k>_model.pt)')
    parser.add_argument('--negatives', type=options.positive_int, default=512,
                        help='negatives per clip (default: the queue size)')
    parser.add_argument('--seed', type=options.seed, default=0)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as work_dir:            # the processor's work_dir, removed after
        proc = PretrainProcessor(['--config', args.config, '--weights', args.weights, '--seed', str(args.seed),
                                  '--work_dir', work_dir, '--progress_bar', 'false', '--print_log', 'false',
                                  '--save_log', 'false'])
        queries, keys, labels = embeddings(proc)
    for name, values in (('queries', queries), ('keys', keys)):
        check_finite(values, f"the {name} of weights '{args.weights}'", 'the weights give NaN/Inf embeddings: check them')
    print(json.dumps(dict(weights=args.weights, **probe(queries, keys, labels, args.negatives, args.seed))))


if __name__ == '__main__':
    run_tool(main)
