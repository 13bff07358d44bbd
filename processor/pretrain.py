"""Generic self-supervised pretraining: batched views on the device -> model losses -> SGD.

Every contrastive method (SkeletonCLR, AimCLR, MsMCLR, MICA) runs through this loop; the model's
``forward(*views, epoch=...)`` returns a dict whose ``loss`` is optimised and whose other entries are
logged.  Every epoch's record goes through the monitor (``processor/monitor.py``): narrow cone, creeping
loss, collapse, no kNN gain over the untrained encoder.

Every epoch appends one JSON line to ``work_dir/metrics.jsonl``: ``epoch`` (1-based), the epoch means of
the model's scalars (``loss``, ``loss_info``, ``embed_std``, ...), ``loss_over_uniform`` (``loss_info``
/ ln(K+1)) for MoCo models, ``lr``, ``wall_s``, ``collapse_epochs`` and ``warnings`` (the monitor's active kinds), and with ``knn_interval: N`` every
N epochs (and at the last) ``knn_top1`` (first k of ``knn_k``) and ``knn_top1_k<k>``: weighted kNN
(``processor.knn_evaluation.knn_top1``) on the features that linear evaluation uses (query encoder in
``eval()`` mode), the training split (with the test feeder's preprocessing) as memory bank and
``test_feeder_args`` as test split; an ``epoch: 0`` line holds the kNN of the initial encoder.  The
monitor leaves the training random stream alone: a run gives the same weights with and without it.  A
resumed run drops the lines after its resume epoch and appends from there.
"""
import contextlib
import os
import random
import time

import numpy as np
import torch

from processor.build import stream_views
from processor.checkpoint import announce_label_use
from processor.evaluation import SplitFeatures
from processor.knn_evaluation import knn_top1
from processor.monitor import BEST_PROBE_MODEL, LearningMonitor, warn_only
from processor.processor import Processor, every
from processor.recipes import KNN, PRETRAIN, recipe_defaults
from processor.small_data import classifier_advice, measured_line, pretrain_advice
from processor.step_scalars import StepScalars
from processor.train_step import TrainStep
from torchlight.io import UserError, import_class, str2bool


def ridge_probe(train, test):
    """(test top-1, cross-validated top-1 on ``train``), fractions, of the ridge probe on frozen features:
    ``tools/floor.py``'s ridge (standardised with the training split's statistics, one-hot targets, alpha by
    3-fold cross-validation) fitted on ``train`` = (features, labels) and scored on ``test``; a closed-form
    stand-in for the standardised linear probe of evaluation.  The second reads the training labels only."""
    from tools.floor import ridge_scores
    (xt, yt), (xv, yv) = ((f.double().cpu().numpy(), y.cpu().numpy()) for f, y in (train, test))
    found = ridge_scores(xt, yt, xv, yv)
    return (float('nan'), float('nan')) if found is None else (found[0] / 100, found[2] / 100)


@contextlib.contextmanager
def preserved_rng():
    """Run a block without moving the Python, NumPy, torch and CUDA random streams."""
    cuda = torch.cuda.is_available()
    state = (random.getstate(), np.random.get_state(), torch.get_rng_state(),
             torch.cuda.get_rng_state_all() if cuda else None)
    try:
        yield
    finally:
        random.setstate(state[0])
        np.random.set_state(state[1])
        torch.set_rng_state(state[2])
        if cuda:
            torch.cuda.set_rng_state_all(state[3])


class PretrainProcessor(Processor):
    """Processor for self-supervised pretraining (``pretrain_skeletonclr``, ``pretrain_aimclr``,
    ``pretrain_msmclr``, ``pretrain_mica``): the method is the YAML's ``model``.  Nearest-neighbour
    mining is the method's own (``model_args.mining_epoch`` / ``topk`` of AimCLR and MsMCLR; the
    reference's top-level keys are mapped there); the loop gives a method the keyword inputs it declares
    (``forward_keywords``: 'epoch', 'label')."""
    uses_labels = False

    @staticmethod
    def get_parser(add_help=False):
        parser = Processor.get_parser(add_help=add_help)
        parser.add_argument('--collapse_margin', type=float, default=0.05,
                            help='collapse when the InfoNCE loss is within this fraction of ln(K+1) and the '
                                 'embedding std below cone_std')
        parser.add_argument('--collapse_patience', type=int, default=3,
                            help='epochs in a collapsed state before the warning (and the stop)')
        parser.add_argument('--collapse_stop', type=str2bool, default=False,
                            help="stop the run (one-line error, exit 2, the epoch's encoder saved) at the monitor's "
                                 'first warning: narrow cone, creeping loss, collapse, no kNN gain over epoch 0 '
                                 '(a kNN fall and a loss term at its uniform value only warn)')
        parser.add_argument('--cone_std', type=float, default=0.002,
                            help='monitor: warn when the embedding std is below this in the first cone_epochs epochs')
        parser.add_argument('--cone_epochs', type=int, default=10, help='monitor: see cone_std')
        parser.add_argument('--knn_interval', type=int, default=0,
                            help='epochs between kNN top-1 evaluations of the frozen query encoder (train split '
                                 'as memory bank, test_feeder_args as test split; metrics.jsonl); 0: off')
        parser.add_argument('--knn_k', type=int, default=None, nargs='+',
                            help='kNN monitor: numbers of neighbours (knn_top1 is the first)')
        parser.add_argument('--knn_temperature', type=float, default=None, help='kNN monitor: vote temperature')
        parser.add_argument('--dataset', default=None,
                            help="this run's dataset name, checked by the method against its side inputs (default: "
                                 'dataset.yaml next to the training label file, when there is one)')
        parser.add_argument('--cuda_graph', type=str2bool, default=False,
                            help='capture the training step as a CUDA graph and replay it (CUDA, one process, amp '
                                 'none or bf16; processor/train_step.py, docs/PERFORMANCE.md)')
        parser.add_argument('--text_class_subset', type=str2bool, default=False,
                            help="allow a method's class-level side input (a text feature file) with more classes "
                                 'than num_class (its first num_class classes are used); false: that is an error')
        recipe_defaults(parser, KNN, keys=('knn_k', 'knn_temperature'))       # the kNN protocol's
        return recipe_defaults(parser, PRETRAIN)

    REFERENCE_KEYS = ('mining_epoch', 'topk')

    def __init__(self, argv=None, name=None):
        self.halt = None                   # the monitor's stop message under collapse_stop
        super().__init__(argv, name)
        self.monitor = self.new_monitor()
        self.train_step = self.make_train_step()

    def make_train_step(self):
        """The step of ``train_epoch`` (processor/train_step.py), eager or as a CUDA graph (``cuda_graph``)."""
        if self.arg.cuda_graph and self.trains():
            why = ('a capture-safe method (capture_safe: SkeletonCLR, AimCLR, MsMCLR, SkeleMixCLR, MICA)'
                   if not self.model.capture_safe else 'a CUDA device' if self.dev.type != 'cuda'
                   else 'one process (not torchrun)' if self.world > 1
                   else "amp none or bf16 (fp16's loss scaler reads its scale on the host)" if self.arg.amp == 'fp16'
                   else "compile: none (reduce-overhead is torch.compile's own CUDA graphs)"
                   if self.arg.compile != 'none' else None)
            if why:
                raise UserError(f'cuda_graph: true needs {why}; this run has device {self.dev.type}, '
                                f'{self.world} process(es), amp {self.arg.amp}, compile {self.arg.compile}')
        return TrainStep(self, cuda_graph=self.arg.cuda_graph and self.trains())

    def load_model(self):
        self.map_reference_keys()
        self.check_processor_name()
        super().load_model()
        announce_label_use(self)            # a pretraining that reads the labels says so first

    def check_processor_name(self):
        """``pretrain_<method>`` names are one generic loop: say so when the name and ``model:`` differ."""
        method = (self.name or '').partition('pretrain_')[2]
        model = str(self.arg.model or '')
        if method and model.rsplit('.', 1)[-1].lower() != method:
            self.print_log(f"Notice: processor '{self.name}' runs model {model}: every pretrain_* processor is the "
                           'same generic loop, and the model: key decides the method.')

    def map_reference_keys(self):
        """The AimCLR reference's top-level ``mining_epoch`` / ``topk`` (a reference YAML, or ``--mining_epoch``
        on the command line) -> ``model_args`` of a method that declares them (``reference_keys``), over
        the config's ``model_args`` value; ignored for other methods; a notice either way."""
        given = {k: getattr(self.arg, k) for k in self.REFERENCE_KEYS if getattr(self.arg, k) is not None}
        if not given or not self.arg.model:
            return
        try:
            declared = import_class(self.arg.model).reference_keys
        except (ImportError, AttributeError):
            declared = ()
        for key, value in given.items():
            if key not in declared:
                self.print_log(f"Notice: top-level key '{key}' is ignored: {self.arg.model} does not declare it "
                               '(reference_keys; it is a model_args key of the methods that do).')
            else:
                before = self.arg.model_args.get(key)
                self.arg.model_args[key] = value
                self.print_log(f"Notice: top-level key '{key}' (the reference's) is model_args.{key}: {value}"
                               + (f' (replacing {before})' if before is not None and before != value else '') + '.')

    def load_data(self):
        super().load_data()
        if 'train' not in self.data_loader:
            raise UserError('pretraining needs train_feeder_args with data_path and label_path')
        self.model.check_batch_size(self.arg.batch_size)
        self.train_feeder.check_layout()        # an augmentation the layout cannot serve: one line
        try:
            self.model.check_data(self.train_feeder.label, self.arg.train_feeder_args['label_path'],
                                  dataset=self.arg.dataset, class_subset=self.arg.text_class_subset)
        except ValueError as e:
            raise UserError(str(e)) from e
        # pretraining learns no classifier: the test split serves only the kNN monitor
        test = self.data_loader.pop('test', None)
        if self.arg.knn_interval > 0 and self.arg.phase == 'train':
            if test is None:
                raise UserError(f'knn_interval={self.arg.knn_interval} needs test_feeder_args with data_path and '
                                'label_path (the kNN test split)')
            # the bank is the pretraining's own clips (a sample_list subset too), as the probes read them
            bank_args = dict(self.arg.test_feeder_args, data_path=self.arg.train_feeder_args['data_path'],
                             label_path=self.arg.train_feeder_args['label_path'],
                             sample_list=self.arg.train_feeder_args.get('sample_list'))
            with preserved_rng():
                bank = self.build_feeder(self.arg.test_feeder, bank_args, 'test')
                self.data_loader['knn_train'] = self.make_loader(bank, self.arg.test_batch_size, False)
            self.data_loader['knn_test'] = test
        # the kNN monitor reads the features as linear evaluation does (SplitFeatures): the query encoder
        # in eval() mode, the test feeder's preprocessing, the stream
        self.split_features = SplitFeatures(self)

    # ------------------------------------------------------------------ start-up notices
    def advise_size(self, num_samples):
        """The size advice of a contrastive pretraining (processor/small_data.py: batch, lr, shuffle-BN groups,
        queue, epochs, and the probes' batch), printed before the settings are checked against the set."""
        recipe = self.model.recipe
        advice = pretrain_advice(num_samples, self.config_values['batch_size'], self.config_values['base_lr'],
                                 queue='queue_size' in recipe, groups='shuffle_bn_groups' in recipe)
        probe = classifier_advice(num_samples, self.config_values['batch_size'])
        current = dict(batch_size=self.arg.batch_size, base_lr=self.arg.base_lr, num_epoch=self.arg.num_epoch,
                       **{f'model_args.{k}': v for k, v in recipe.items()})
        said = self.say_size_advice('pretraining', num_samples, advice, current,
                                    extra=f"the probes' (linear_evaluation, finetune_evaluation) batch_size "
                                          f"{probe['batch_size'][0]}" if probe else '')
        line = measured_line(num_samples, self.name, label_free=self.arg.model_args.get('fm_target') == 'teacher',
                             num_epoch=self.arg.num_epoch)
        if line:
            self.print_log(f'Notice: {line}')
        return said

    def make_views(self, raw):
        return stream_views(self.train_feeder, raw.to(self.dev, non_blocking=True))     # in the run's stream

    # ------------------------------------------------------------------ metrics and the kNN monitor
    def knn_due(self, done):
        return (self.arg.knn_interval > 0 and self.is_main
                and (every(done, self.arg.knn_interval) or done in (0, self.arg.num_epoch)))

    def knn_monitor(self, done):
        """{'knn_top1': .., 'knn_top1_k<k>': ..} of the frozen query encoder; the random streams, the
        BatchNorm statistics and the train/eval mode are left as they were."""
        was_training = self.model.training
        with preserved_rng():
            self.split_features.forget()
            train, test = self.split_features('knn_train')[:2], self.split_features('knn_test')[:2]
            accuracy = knn_top1(train, test, self.arg.knn_k, self.arg.knn_temperature)
            probe, probe_cv = ridge_probe(train, test)
            self.split_features.forget()
        self.model.train(was_training)
        self.print_log(f'\tkNN monitor, epoch {done}: ' + ' | '.join(
            f'k={k} top1 {100 * v:.2f}%' for k, v in accuracy.items()) + f' | ridge probe top1 {100 * probe:.2f}%')
        self.log_scalars('knn', dict({f'top1_k{k}': v for k, v in accuracy.items()}, probe_top1=probe,
                                     probe_cv_top1=probe_cv), done)
        return dict({'knn_top1': accuracy[self.arg.knn_k[0]], 'probe_top1': probe, 'probe_cv_top1': probe_cv},
                    **{f'knn_top1_k{k}': v for k, v in accuracy.items()})

    def new_monitor(self):
        """A fresh ``LearningMonitor`` of this run's settings (the constructor makes one; so does a tool that
        runs ``train_epoch`` by itself, tools/benchmark.py)."""
        self.halt = None
        return LearningMonitor(
            cone_std=self.arg.cone_std, cone_epochs=self.arg.cone_epochs, margin=self.arg.collapse_margin,
            patience=self.arg.collapse_patience, uniform_terms=self.model.uniform_terms,
            warm_up_epoch=self.arg.warm_up_epoch, lr_schedule=self.arg.lr_schedule)

    def metrics_started(self, records):
        """The monitor replays a resumed run's records (it is a function of them); a new run's ``epoch: 0``
        line is the kNN monitor of the initial encoder."""
        for record in records:
            self.monitor.update(record)
        if not self.resumed and self.knn_due(0):
            started = time.time()
            record = dict(epoch=0, **self.knn_monitor(0))
            self.monitor.update(record)
            self.keep_best_probe(record)
            self.metrics.write(dict(record, wall_s=time.time() - started))

    def keep_best_probe(self, record):
        """``best_probe_model.pt``: the encoder of the best epoch so far by the ridge probe's cross-validated
        top-1 on the training clips (epoch 0: the untrained encoder; no test label chooses it), written when
        ``record`` is that epoch; evaluated with ``--weights`` or a plan's ``checkpoint: best_probe``."""
        best = self.monitor.best_probe
        if self.is_main and record.get('probe_top1') is not None and best is not None and best[1] == record['epoch']:
            self.io.save_model(self.model, BEST_PROBE_MODEL)

    def epoch_metrics(self, epoch, means, started):
        """The metrics.jsonl record of a finished epoch (runs the kNN monitor when it is due)."""
        record = dict(epoch=epoch + 1, **means)
        uniform = self.model.uniform_loss
        if uniform is not None and 'loss_info' in means:
            record['loss_over_uniform'] = means['loss_info'] / uniform
        record['lr'] = self.lr
        if self.knn_due(epoch + 1):
            record.update(self.knn_monitor(epoch + 1))
        record['wall_s'] = time.time() - started
        return record

    # ------------------------------------------------------------------ loop
    def train_epoch(self, epoch):
        started = time.time()
        self.model.train()
        loader = self.data_loader['train']
        scalars = StepScalars()          # summed on the device: no host synchronisation inside a step
        progress = self.iterate(loader, f'epoch {epoch + 1}/{self.arg.num_epoch}')
        for it, (raw, label, index) in enumerate(progress):
            lr = self.adjust_lr(epoch, it / max(1, len(loader)))
            out, loss = self.train_step(raw, label, epoch)
            scalars.add(out, loss, it)
            self.meta_info['iter'] = it
            self.meta_info['global_step'] += 1
            if every(self.meta_info['global_step'], self.arg.log_interval):
                self.check_step_scalars(scalars, epoch)
                stats = scalars.last()
                self.print_log(f'\tIter {it} Done. | ' + ' | '.join(f'{k}: {v:.4f}' for k, v in stats.items())
                               + f' | lr: {lr:.6f}')
                self.log_scalars('train', dict(stats, lr=lr), self.meta_info['global_step'])
                progress.set_postfix(f"loss {stats['loss']:.4f}")
            if self.stop_requested:
                break
        self.check_step_scalars(scalars, epoch)
        if scalars.count == 0:
            return
        means = scalars.means()
        self.epoch_info = means
        self.print_log('\t' + ' | '.join(f'mean_{k}: {v:.4f}' for k, v in means.items()))
        self.log_scalars('epoch', means, epoch + 1)
        if self.stop_requested:                  # a stopped epoch is repeated on resume
            return
        record = self.epoch_metrics(epoch, means, started)
        self.watch(record)
        self.keep_best_probe(record)
        self.metrics.write(record)
        if self.halt:
            if self.is_main:
                self.io.save_model(self.model, f'epoch{epoch + 1}_model.pt')
                self.save_latest(epoch + 1)
            raise UserError(self.halt)

    def watch(self, record):
        """Feed the epoch's record to the monitor (processor/monitor.py): one line per new warning, the
        active warnings into the record; with ``collapse_stop`` a warning other than a kNN fall or a uniform term ends the run."""
        new, active = self.monitor.update(record)
        record['collapse_epochs'] = self.monitor.collapse_epochs
        if self.monitor.best_probe is not None:
            record['best_probe'] = self.monitor.best_probe[1]          # the best epoch by the ridge probe (train CV)
        if active:
            record['warnings'] = active
        for kind, text in new:
            self.print_log(f'WARNING: {kind} at epoch {record["epoch"]}: {text} (docs/METHODS.md, "Every seed learns")')
        stops = [kind for kind, _ in new if not warn_only(kind)]
        if stops and self.arg.collapse_stop:
            model_file = os.path.join(self.arg.work_dir, f'epoch{record["epoch"]}_model.pt')
            self.halt = (f'{stops[0]} at epoch {record["epoch"]} (collapse_stop: true): run stopped early; its '
                         f'encoder is {model_file}')

    def test_epoch(self, epoch, save_result=False):
        raise UserError('pretraining has no test phase: evaluate the weights with linear_evaluation')
