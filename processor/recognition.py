"""Supervised recognition: train and test any encoder of ``net/`` with cross-entropy, optionally with a
train-time head (``train_head: net.csre.CSRE``) that is absent from every saved model.

Defaults are the CTR-GCN family recipe of config/base/supervised/ (common.yaml, recipe/ctrgcn_ntu.yaml):
SGD with Nesterov, lr 0.1, weight decay 4e-4, 65 epochs with 5 warm-up epochs, x0.1 at 35 and 55, batch 64,
``feeder.ntu_feeder.Feeder_supervised`` (valid-frame crop resized to 64 frames).  The warm-up ramps per epoch as CTR-GCN's ``adjust_learning_rate``: epoch e
(0-based) < ``warm_up_epoch`` runs at ``base_lr * (e + 1) / warm_up_epoch`` (``warm_up: iteration``:
the earlier per-iteration ramp from 0).  ``lr_schedule: exponential`` is HCN's release schedule,
``base_lr * lr_decay_rate ** epoch`` (ExponentialLR stepped once per epoch); ``clip_grad_norm`` clips the
gradient norm (HCN-pytorch: ``clip * batch_size`` = 0.5 x 64).  The encoder checkpoints
(``epoch{N}_model.pt``, ``best_model.pt``) hold the encoder alone, so they evaluate with or without the
head's code; ``latest.pt`` also keeps the head (memory banks included) so a run resumes exactly.

The loss of a step is ``L_CE + head['loss']`` (the head applies its own weight: CSRE's
``loss_weight * (L_s + L_t) / 2``).  Streams: joint, bone, motion and bone_motion (motion of the bone
stream), computed on the batch after the feeder's sampling.
"""
import numpy as np
import torch
import torch.nn.functional as F

from processor.evaluation import ScoreReport, topk_accuracy
from processor.processor import Processor, every
from processor.recipes import SUPERVISED, recipe_defaults
from torchlight.io import DictAction, UserError, import_class


def logits_from_feature_map(encoder, feature_map, num_person):
    """The encoder's logits from its own feature map: ``head(pool(.))``, so ``forward(x) ==
    this(encode(x))`` in training mode too (the encoder's dropout before ``fc`` included)."""
    return encoder.head(encoder.pool(feature_map, num_person))


class Recognition(Processor):
    """``recognition``: every encoder weight trained (no freezing), cross-entropy with optional label
    smoothing, plus ``lambda``-weighted losses of the optional train head."""

    protocol = 'recognition'

    @staticmethod
    def get_parser(add_help=False):
        parser = Processor.get_parser(add_help=add_help)
        parser.description = 'Supervised training / testing of an encoder (optionally with a train-time head)'
        parser.add_argument('--label_smoothing', type=float, default=0.0, help='cross-entropy label smoothing')
        parser.add_argument('--train_head', default=None,
                            help='train-time head built next to the encoder, e.g. net.csre.CSRE (not saved in models)')
        parser.add_argument('--train_head_args', action=DictAction, default=dict(), help='arguments of the train head')
        parser.add_argument('--warm_up', default='epoch', choices=['epoch', 'iteration'],
                            help="epoch: lr (e + 1) / warm_up_epoch x base_lr per epoch (CTR-GCN); iteration: "
                                 "linear per-iteration ramp from 0")
        parser.add_argument('--clip_grad_norm', type=float, default=0.0,
                            help='clip the total gradient norm to this value (0: no clipping; HCN: 32)')
        return recipe_defaults(parser, SUPERVISED)

    def check_values(self, parser, source):
        super().check_values(parser, source)
        where = f' (from {source} or the command line)' if source else ''
        if not (self.arg.clip_grad_norm >= 0 and np.isfinite(self.arg.clip_grad_norm)):
            raise UserError(f"key 'clip_grad_norm'{where} must be a finite number >= 0 (0: off), got "
                            f"{self.arg.clip_grad_norm!r}")

    def learning_rate(self, epoch, fraction=0.0):
        """Warm-up (per epoch as CTR-GCN, or per iteration), then the base schedule (``lr_schedule``)."""
        warm = self.arg.warm_up_epoch
        if warm > 0 and epoch < warm:
            ramp = epoch + 1 if self.arg.warm_up == 'epoch' else epoch + fraction + 1e-8
            return self.arg.base_lr * ramp / warm
        return super().learning_rate(epoch, fraction)

    def load_data(self):
        super().load_data()
        if self.arg.phase == 'train' and 'train' not in self.data_loader:
            raise UserError('recognition needs train_feeder_args with data_path and label_path')
        if self.arg.phase == 'test' and 'test' not in self.data_loader:
            raise UserError('recognition --phase test needs test_feeder_args with data_path and label_path')
        self.report = ScoreReport(self)
        self.head = None
        if self.arg.train_head and self.arg.phase == 'train':
            self.head = self.build_head()

    def build_head(self):
        """The train head sized from the encoder's feature map on one training batch's shape."""
        feeder = self.train_feeder
        sample = feeder.views(torch.from_numpy(np.array(feeder.data[:1], dtype=np.float32)))[0]
        C, T, V = self.model.feature_map_shape(sample.size(2))
        args = dict(self.arg.train_head_args)
        args.setdefault('num_samples', len(feeder.data))
        if args.get('bank_capacity') is None:
            args.setdefault('bank_copies', getattr(feeder, 'repeat', 1))   # one bank row per repeated copy
        args.setdefault('num_class', self.arg.model_args.get('num_class'))
        args.setdefault('num_frames', T)
        try:
            head = import_class(self.arg.train_head)(channels=C, num_node=V, **args)
        except (TypeError, ValueError) as e:
            raise UserError(f'train_head_args do not fit {self.arg.train_head}: {e}') from e
        self.print_log(f'Train head {self.arg.train_head}: feature map C={C}, T={T}, V={V}; '
                       f'{sum(p.numel() for p in head.parameters())} parameters (not saved in models).')
        self.check_head_sample(head, feeder.label)
        return head.to(self.dev)

    def check_head_sample(self, head, labels):
        """CSRE with ``min_candidates: full`` (the authors) skips every anchor of a class that has fewer
        positive or negative candidates in the banks than it samples; on a small dataset that can be every
        class, and the head would then add nothing without a word: an error when no class can contribute,
        a notice naming the classes when some cannot."""
        if not hasattr(head, 'classes_without_full_sample'):
            return
        short = head.classes_without_full_sample(labels)
        wanted = f'{head.num_positives} positives and {head.negatives_needed()} negatives'
        if head.fifo:
            bank = f'a FIFO bank of {head.bank_size} rows'
        else:
            _, counts = np.unique(np.asarray(labels).ravel(), return_counts=True)
            bank = (f'a bank of {head.bank_size} rows ({head.num_samples} clips x {head.bank_copies} copies; the '
                    f'smallest class has {int(counts.min()) * head.bank_copies} rows, the largest '
                    f'{int(counts.max()) * head.bank_copies})')
        if head.fifo or head.min_candidates != 'full':
            self.print_log(f'CSRE sample check: min_candidates={head.min_candidates}, {bank}: anchors use what the '
                           'banks hold (not checked against the full sample)')
            return
        if not short:
            self.print_log(f'CSRE sample check (min_candidates: full): every class has the {wanted} CSRE samples '
                           f'per anchor; {bank}')
            return
        shown = ', '.join(f'class {c} ({p} positive / {n} negative candidates)' for c, p, n in short[:5])
        more = f' and {len(short) - 5} more' if len(short) > 5 else ''
        fix = ('give --train_head_args min_candidates=any (use what the banks hold) or smaller '
               'num_positives / num_hard_negatives / num_random_negatives')
        if len(short) == len(np.unique(labels)):
            raise UserError(f'train_head_args.min_candidates=full: no class of the training set has the {wanted} '
                            f'CSRE samples per anchor ({shown}{more}; {bank}), so the head would contribute '
                            f'nothing; {fix}')
        self.print_log(f'Notice: CSRE (min_candidates: full) skips the anchors of {len(short)} classes that '
                       f'lack the {wanted} it samples: {shown}{more}; {bank}; to use them, {fix}.')

    def load_optimizer(self):
        super().load_optimizer()
        self.grad_clip = self.arg.clip_grad_norm
        if self.head is not None:
            self.optimizer.add_param_group({'params': list(self.head.parameters())})

    def extra_state(self):
        return {'train_head': self.head.state_dict()} if self.head is not None else {}

    def load_extra_state(self, extra):
        if self.head is not None and 'train_head' in extra:
            self.head.load_state_dict(extra['train_head'])

    # ---------------------------------------------------------------- train / test
    def train_epoch(self, epoch):
        self.model.train()
        if self.head is not None:
            self.head.train()
        loader = self.data_loader['train']
        sums, count, correct, seen = {}, 0, 0, 0
        for it, (raw, label, index) in enumerate(self.iterate(loader, f'epoch {epoch + 1}/{self.arg.num_epoch}')):
            lr = self.adjust_lr(epoch, it / max(1, len(loader)))
            x = self.inputs(raw, loader.dataset)
            label = label.to(self.dev)
            stats = {}
            with self.autocast():
                if self.head is None:
                    logits = self.model(x)
                    loss = F.cross_entropy(logits.float(), label, label_smoothing=self.arg.label_smoothing)
                else:
                    fmap = self.model.encode(x)
                    logits = logits_from_feature_map(self.model, fmap, x.size(4))
                    loss_ce = F.cross_entropy(logits.float(), label, label_smoothing=self.arg.label_smoothing)
                    out = self.head(fmap, x.size(4), label, index.to(self.dev))
                    loss = loss_ce + out['loss'].float()
                    stats = {k: float(v.detach()) for k, v in out.items()
                             if torch.is_tensor(v) and v.dim() == 0 and k.startswith('loss')}
                    stats['loss_ce'] = float(loss_ce.detach())
            self.check_finite(loss, epoch, it)
            self.backward_step(loss)
            stats['loss'] = float(loss.detach())
            for k, v in stats.items():
                sums[k] = sums.get(k, 0.0) + v
            count += 1
            correct += int((logits.argmax(1) == label).sum())
            seen += label.numel()
            self.meta_info['global_step'] += 1
            if every(self.meta_info['global_step'], self.arg.log_interval):
                self.print_log(f'\tIter {it} Done. | ' + ' | '.join(f'{k}: {v:.4f}' for k, v in stats.items())
                               + f' | lr: {lr:.6f}')
            if self.stop_requested:
                break
        if count:
            means = {k: v / count for k, v in sums.items()}
            means['train_top1'] = correct / max(1, seen)
            self.epoch_info = means
            self.print_log('\t' + ' | '.join(f'mean_{k}: {v:.4f}' for k, v in means.items()) + f' | lr: {self.lr:.6f}')
            self.log_scalars('train', means, epoch + 1)

    @torch.no_grad()
    def test_scores(self):
        self.model.eval()
        loader = self.data_loader['test']
        scores, labels, indices = [], [], []
        for raw, label, index in self.iterate(loader, 'test'):
            scores.append(self.model(self.inputs(raw, loader.dataset)))
            labels.append(label)
            indices.append(index)
        return torch.cat(scores), torch.cat(labels).to(self.dev), torch.cat(indices)

    @torch.no_grad()
    def test_epoch(self, epoch, save_result=False):
        scores, labels, indices = self.test_scores()
        self.report(epoch, scores, labels, indices, save_result)


__all__ = ['Recognition', 'logits_from_feature_map', 'topk_accuracy']
