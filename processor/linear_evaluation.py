"""Linear evaluation: a frozen pretrained encoder (in ``eval()`` mode) and a trained ``fc``.

With ``cache_features: true`` (default) the encoder runs once over each split and the linear layer
trains on the cached features; batches, order, optimiser and schedule are those of the reference
protocol (``cache_features: false`` re-runs the frozen encoder every epoch, as the reference does).
"""
import contextlib

import numpy as np
import torch
import torch.nn.functional as F

from processor.build import batch_features
from processor.evaluation import ScoreReport, SplitFeatures, topk_accuracy
from processor.processor import Processor
from processor.recipes import LINEAR, recipe_defaults
from torchlight.io import UserError, str2bool


class LinearEvaluation(Processor):
    """``linear_evaluation``: everything except the final ``fc`` frozen."""

    protocol = 'linear_evaluation'

    @staticmethod
    def get_parser(add_help=False):
        parser = Processor.get_parser(add_help=add_help)
        parser.description = 'Linear evaluation of a pretrained encoder'
        parser.add_argument('--cache_features', type=str2bool, default=True,
                            help='extract frozen features once (false: re-run the encoder every epoch)')
        parser.add_argument('--feature_norm', default='none', choices=['none', 'standardize'],
                            help='none: the family protocol (fc on the raw pooled features); standardize: '
                                 'fc on features standardised with the training split\'s mean and std '
                                 '(a non-affine BatchNorm with frozen statistics), folded into fc when saved')
        return recipe_defaults(parser, LINEAR)

    # ---------------------------------------------------------------- model
    def load_weights(self):
        super().load_weights()
        self.trainable = []
        for name, param in self.encoder.named_parameters():
            param.requires_grad = name.startswith('fc.')
            if param.requires_grad:
                self.trainable.append(name)
        if not self.trainable:
            raise UserError(f'{self.arg.model} has no `fc` layer to train')

    def load_data(self):
        super().load_data()
        if self.arg.phase == 'train' and 'train' not in self.data_loader:
            raise UserError('linear_evaluation needs train_feeder_args with data_path and label_path')
        if 'test' not in self.data_loader:
            raise UserError('linear_evaluation needs test_feeder_args with data_path and label_path')
        train = self.train_feeder
        self.use_cache = self.arg.cache_features
        if self.use_cache and train is not None and (train.shear_amplitude > 0 or train.temperal_padding_ratio > 0):
            self.print_log('Notice: the training feeder augments its data, so features are not cached.')
            self.use_cache = False
        self.split_features = SplitFeatures(self)
        self.report = ScoreReport(self)
        self.feature_shift = self.feature_scale = None

    # ---------------------------------------------------------------- features
    @torch.no_grad()
    def features(self, raw, feeder):
        return batch_features(self.model, feeder, raw, self.dev)

    def normalized(self, feats):
        """``feature_norm: standardize``: (f - mean) / std with the training split's statistics (the
        un-augmented frozen features), else ``feats`` unchanged.  ``--phase test`` loads a saved model,
        whose ``fc`` is already folded (``folded_fc``), so it always takes raw features."""
        if self.arg.feature_norm == 'none' or self.arg.phase != 'train':
            return feats
        if self.feature_shift is None:
            train = self.split_features('train')[0].float()
            self.feature_shift = train.mean(dim=0)
            self.feature_scale = train.std(dim=0).clamp_min(1e-6)
        return (feats - self.feature_shift) / self.feature_scale

    def extra_state(self):
        """The standardisation statistics, so that a resumed run uses the ones it trained with (an
        augmenting feeder draws other features each time they are computed)."""
        if self.feature_shift is None:
            return {}
        return {'feature_norm': [self.feature_shift.cpu(), self.feature_scale.cpu()]}

    def load_extra_state(self, extra):
        if 'feature_norm' in extra:
            self.feature_shift, self.feature_scale = (t.to(self.dev) for t in extra['feature_norm'])

    @contextlib.contextmanager
    def folded_fc(self):
        """With ``feature_norm: standardize``, ``fc`` holds W / std and b - W mean / std inside the block,
        so a saved model classifies raw features exactly as the standardised path does."""
        if self.arg.feature_norm == 'none' or self.arg.phase != 'train':
            yield
            return
        fc = self.encoder.fc
        weight, bias = fc.weight.data.clone(), fc.bias.data.clone()
        with torch.no_grad():
            fc.weight.div_(self.feature_scale)
            fc.bias.sub_(fc.weight @ self.feature_shift)
        try:
            yield
        finally:
            fc.weight.data.copy_(weight)
            fc.bias.data.copy_(bias)

    # ---------------------------------------------------------------- train / test
    def train_step(self, feats, label, epoch=0, iteration=0):
        output = self.encoder.fc(self.normalized(feats))
        loss = F.cross_entropy(output, label)
        self.check_finite(loss, epoch, iteration)          # stops before the step; latest.pt is kept
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return loss.item()

    def train_batches(self):
        """(features, labels) per training batch, in the loader's (per-epoch shuffled) order."""
        loader = self.data_loader['train']
        if not self.use_cache:
            for raw, label, _ in loader:
                yield self.features(raw, loader.dataset), label.to(self.dev)
            return
        feats, labels, _ = self.split_features('train')
        order = torch.tensor(list(iter(loader.sampler)), dtype=torch.long)
        batch = self.arg.batch_size
        for start in range(0, len(order) - batch + 1, batch):      # drop_last, as the loader
            idx = order[start:start + batch].to(self.dev)
            yield feats[idx], labels[idx]

    def train_epoch(self, epoch):
        self.encoder.eval()          # frozen BatchNorm statistics (reference protocol)
        lr = self.adjust_lr(epoch)
        losses = [self.train_step(f, l, epoch, it) for it, (f, l) in enumerate(self.train_batches())]
        mean_loss = float(np.mean(losses)) if losses else float('nan')
        self.print_log(f'\tmean_loss: {mean_loss:.4f} | lr: {lr:.6f}')
        self.log_scalars('train', {'loss': mean_loss, 'lr': lr}, epoch + 1)

    @torch.no_grad()
    def test_scores(self):
        feats, labels, indices = self.split_features('test')
        if not self.use_cache:
            self.split_features.forget('test')      # the reference protocol runs the encoder at every test
        return self.encoder.fc(self.normalized(feats)), labels, indices

    @torch.no_grad()
    def test_epoch(self, epoch, save_result=False):
        self.encoder.eval()
        scores, labels, indices = self.test_scores()
        self.report(epoch, scores, labels, indices, save_result, saving=self.folded_fc)


__all__ = ['LinearEvaluation', 'topk_accuracy']
