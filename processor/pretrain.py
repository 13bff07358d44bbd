"""Generic self-supervised pretraining: batched views on the device -> model losses -> SGD.

Every contrastive method (SkeletonCLR, AimCLR, MsMCLR, MICA) runs through this loop; the model's
``forward(*views, epoch=...)`` returns a dict whose ``loss`` is optimised and whose other entries are
logged.  MoCo models are watched for representation collapse (loss near ln(K+1), embedding std near 0).
"""
import math

import torch

from feeder.tools import to_stream
from processor.processor import Processor, every
from torchlight.io import UserError, str2bool


class PretrainProcessor(Processor):
    """Processor for self-supervised pretraining (``pretrain_skeletonclr``, ``pretrain_aimclr``,
    ``pretrain_msmclr``, ``pretrain_mica``): the method is the YAML's ``model``.  Nearest-neighbour
    mining (``nnm``) is on from the 0-based epoch ``mining_epoch`` (the reference's 1-based
    ``epoch > mining_epoch``)."""
    uses_labels = False

    @staticmethod
    def get_parser(add_help=False):
        parser = Processor.get_parser(add_help=add_help)
        parser.add_argument('--collapse_margin', type=float, default=0.05,
                            help='collapse when the InfoNCE loss is within this fraction of ln(K+1)')
        parser.add_argument('--collapse_patience', type=int, default=3,
                            help='epochs in a collapsed state before the warning (and the stop)')
        parser.add_argument('--collapse_stop', type=str2bool, default=False,
                            help='stop the run (error) when collapse persists for collapse_patience epochs')
        return parser


    def load_data(self):
        super().load_data()
        if 'train' not in self.data_loader:
            raise UserError('pretraining needs train_feeder_args with data_path and label_path')
        if hasattr(self.model, 'check_batch_size'):
            self.model.check_batch_size(self.arg.batch_size)
        # pretraining learns no classifier: the test split, if configured, is not used here
        self.data_loader.pop('test', None)

    def extra_state(self):
        return {'collapse_epochs': getattr(self, 'collapse_epochs', 0)}

    def load_extra_state(self, extra):
        self.collapse_epochs = extra.get('collapse_epochs', 0)

    def make_views(self, raw):
        raw = raw.to(self.dev, non_blocking=True)
        views = self.train_feeder.views(raw)
        if self.arg.stream != 'joint':
            parents = self.train_feeder.parents if self.arg.stream == 'bone' else None
            views = [to_stream(v, self.arg.stream, parents) for v in views]
        return views

    def train_epoch(self, epoch):
        self.model.train()
        loader = self.data_loader['train']
        sums, count = {}, 0
        progress = self.iterate(loader, f'epoch {epoch + 1}/{self.arg.num_epoch}')
        for it, (raw, label, index) in enumerate(progress):
            lr = self.adjust_lr(epoch, it / max(1, len(loader)))
            views = self.make_views(raw)
            with self.autocast():
                out = self.model(*views, epoch=epoch, nnm=epoch >= self.arg.mining_epoch, topk=self.arg.topk,
                                 label=label.to(self.dev))
            loss = out['loss'].float()
            self.check_finite(loss, epoch, it)
            self.backward_step(loss)

            stats = {k: float(v.detach()) for k, v in out.items() if torch.is_tensor(v) and v.dim() == 0}
            for k, v in stats.items():
                sums[k] = sums.get(k, 0.0) + v
            count += 1
            self.meta_info['iter'] = it
            self.meta_info['global_step'] += 1
            if every(self.meta_info['global_step'], self.arg.log_interval):
                self.print_log(f'\tIter {it} Done. | ' + ' | '.join(f'{k}: {v:.4f}' for k, v in stats.items())
                               + f' | lr: {lr:.6f}')
                self.log_scalars('train', dict(stats, lr=lr), self.meta_info['global_step'])
            progress.set_postfix(f"loss {stats['loss']:.4f}")
            if self.stop_requested:
                break
        if count == 0:
            return
        means = {k: v / count for k, v in sums.items()}
        self.epoch_info = means
        self.print_log('\t' + ' | '.join(f'mean_{k}: {v:.4f}' for k, v in means.items()))
        self.log_scalars('epoch', means, epoch + 1)
        self.watch_collapse(epoch, means, self.arg.collapse_margin, self.arg.collapse_patience)

    def watch_collapse(self, epoch, means, margin=0.05, patience=3, std_floor=1e-4):
        """Warn when the InfoNCE loss sits within ``margin`` of ln(K+1) (uniform logits) or the
        embedding std is ~0 for ``patience`` epochs.  (A narrow but non-zero projection std alone is
        not collapse: see docs/METHODS.md.)"""
        uniform = getattr(self.model, 'uniform_loss', None)
        if uniform is None or 'loss_info' not in means:
            return
        ratio = means['loss_info'] / uniform
        feature_dim = self.arg.model_args.get('feature_dim', 128)
        collapsed = ratio > 1.0 - margin or means.get('embed_std', 1.0) < std_floor
        self.collapse_epochs = getattr(self, 'collapse_epochs', 0) + 1 if collapsed else 0
        self.log_scalars('epoch', {'loss_over_uniform': ratio}, epoch + 1)
        self.log_scalars('epoch', {'collapse_epochs': self.collapse_epochs}, epoch + 1)
        if self.collapse_epochs >= patience:
            self.collapse_warnings = getattr(self, 'collapse_warnings', 0) + 1
            self.print_log(f'WARNING: representation collapse: for {self.collapse_epochs} epochs the InfoNCE '
                           f'loss is {ratio:.3f} x ln(K+1) and the embedding std '
                           f'{means.get("embed_std", float("nan")):.4f} (healthy ~{1 / math.sqrt(feature_dim):.3f}); '
                           'see docs/METHODS.md "Collapse on small data".')
            if self.arg.collapse_stop:
                raise UserError(f'representation collapse for {self.collapse_epochs} epochs (collapse_stop): '
                                f'run stopped after epoch {epoch + 1}; the last checkpoint is kept in '
                                f'{self.arg.work_dir}')

    def test_epoch(self, epoch, save_result=False):
        raise UserError('pretraining has no test phase: evaluate the weights with linear_evaluation')
