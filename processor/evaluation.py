"""The parts the protocols share, held by each processor (composition, not inheritance):

* ``SplitFeatures``: the frozen features of whole splits, extracted once in dataset order (linear
  evaluation, kNN evaluation and the kNN monitor of pretraining);
* ``ScoreReport``: the test epoch of every protocol that outputs class scores (linear evaluation,
  recognition, finetune and semi-supervised evaluation): finite check, loss, top-k, best model and
  ``test_result.pkl``;
* ``check_classifier_config``: a protocol that classifies needs the encoder built for classification.
"""
import contextlib

import torch

from processor.build import extract_features
from processor.data import seed_worker
from processor.metrics import score_metrics, topk_accuracy
from torchlight.io import UserError


def check_classifier_config(arg, protocol):
    """``model_args.pretrain: true`` builds the pretraining wrapper, which has no classifier to evaluate."""
    if arg.model_args.get('pretrain', False):
        raise UserError(f'{protocol} builds the encoder for classification: set model_args.pretrain: false')


class SplitFeatures:
    """``(features, labels, indices)`` of a processor's split (a key of its ``data_loader``) from the
    inference encoder in ``eval()`` mode on the feeder's first view and stream, in dataset order; each
    split is extracted once and kept until ``forget``.

    The loader has its own seeded generator, so extraction draws nothing from the global RNG (resume and
    ``num_worker`` leave the augmentation streams untouched)."""

    def __init__(self, processor):
        self.processor = processor
        self.cache = {}

    @torch.no_grad()
    def __call__(self, split):
        if split not in self.cache:
            p = self.processor
            feeder = p.data_loader[split].dataset
            generator = torch.Generator()
            generator.manual_seed(p.arg.seed)
            loader = torch.utils.data.DataLoader(feeder, batch_size=p.arg.test_batch_size, shuffle=False,
                                                 num_workers=p.arg.num_worker, generator=generator,
                                                 worker_init_fn=seed_worker)
            features = extract_features(p.model, loader, p.dev,
                                        iterate=lambda batches: p.iterate(batches, f'features {split}'))
            if not bool(torch.isfinite(features[0]).all()):
                bad = int((~torch.isfinite(features[0])).flatten(1).any(1).nonzero()[0, 0])
                weights = f"weights '{p.arg.weights}'" if p.arg.weights else 'the untrained encoder'
                raise UserError(f'the {split} features of {weights} hold NaN/Inf (first in sample {bad}): the '
                                'encoder gives no finite features (a negative BatchNorm variance, an overflow?); '
                                'nothing is evaluated from them')
            self.cache[split] = features
        return self.cache[split]

    def forget(self, split=None):
        """Drop one split's features (``None``: all), so the next call extracts them again."""
        if split is None:
            self.cache.clear()
        else:
            self.cache.pop(split, None)


class ScoreReport:
    """One test epoch of class scores: logs loss and top-k (``show_topk``), keeps the best top-1 in the
    processor's ``best``, saves ``best_model.pt`` when it improves (training), writes
    ``test_result.pkl`` ({sample name: scores}) when asked or improved, appends the epoch's
    ``score_metrics`` to ``metrics.jsonl`` (epoch 0 for ``phase: test``) and sets ``last_accuracy``.
    Non-finite scores stop the run before anything is saved from them."""

    def __init__(self, processor):
        self.processor = processor
        self.last = None             # (epoch, top-1) of the last test epoch

    def __call__(self, epoch, scores, labels, indices, save_result=False, saving=contextlib.nullcontext):
        """``saving``: a context manager around the model's save (linear evaluation folds its feature
        standardisation into ``fc`` there)."""
        p = self.processor
        if not torch.isfinite(scores).all():
            weights = f" of weights '{p.arg.weights}'" if p.arg.weights else ''
            message = (f'the test scores{weights} hold NaN/Inf at epoch {epoch + 1}: the weights are not finite '
                       f'(check --weights and base_lr); no best_model.pt or test_result.pkl written from them')
            p.print_log(f'ERROR: {message}')
            raise UserError(message)
        record = score_metrics(scores, labels)
        loss = record['loss']
        accs = {f'top{k}': topk_accuracy(scores, labels, k) for k in p.arg.show_topk}
        p.print_log(f'\tmean_loss: {loss:.4f} | ' + ' | '.join(f'{k}: {100 * v:.2f}%' for k, v in accs.items()))
        p.log_scalars('test', dict(accs, loss=loss), epoch + 1)
        p.metrics.write(dict(epoch=epoch + 1 if p.arg.phase == 'train' else 0, **record))
        top1 = record['top1']
        improved = top1 > p.best['top1'] or p.best['epoch'] < 0
        if p.arg.phase == 'train' and improved:
            p.best.update(top1=top1, epoch=epoch + 1)
            with saving():
                p.io.save_model(p.model, 'best_model.pt')
        if (save_result or improved) and p.arg.save_result:
            feeder = p.data_loader['test'].dataset
            names = [feeder.sample_name[i] for i in indices.tolist()]
            p.io.save_pkl(dict(zip(names, scores.cpu().numpy())), 'test_result.pkl')
        if p.arg.phase == 'train':
            p.print_log(f"\tBest top1: {100 * p.best['top1']:.2f}% (epoch {p.best['epoch']})")
        p.last_accuracy = accs
        self.last = (epoch + 1, top1)
        return accs

    def result(self):
        """A training run's outcome as data (``result.json``): top-1 (percent) at the last evaluated epoch and
        at the best one, which is chosen on the test split (the family's habit, so optimistic), the number
        of classes and the weights evaluated; None before any test."""
        p, last = self.processor, self.last
        if last is None or p.arg.phase != 'train':
            return None
        return {'protocol': p.protocol, 'top1_last': round(100 * last[1], 4), 'last_epoch': last[0],
                'top1_best': round(100 * p.best['top1'], 4), 'best_epoch': p.best['epoch'],
                'best_chosen_on': 'test split', 'num_class': p.arg.model_args.get('num_class'),
                'weights': p.arg.weights}

    @staticmethod
    def summary(result):
        """The closing line of a training run from its ``result()``."""
        return (f"Result: top-1 {result['top1_last']:.2f}% at the last evaluated epoch ({result['last_epoch']}); "
                f"best {result['top1_best']:.2f}% (epoch {result['best_epoch']}), chosen on the test split (the "
                "family's habit: optimistic; the last epoch is the unbiased number)")
