"""The pretraining monitor: reads the per-epoch records of ``metrics.jsonl`` and names what went wrong.

A pure function of the records, so a finished run's curve can be replayed through it
(``tests/test_monitor.py`` replays the H200 NW-UCLA curves) and a resumed run rebuilds it from its own
``metrics.jsonl``.  The rules (docs/METHODS.md, "Every seed learns"):

* ``narrow_cone``: embedding std below ``cone_std`` in any of the first ``cone_epochs`` epochs;
* ``creeping``: embedding std below ``creep_std`` while ``loss_over_uniform`` (InfoNCE / ln(K+1)) rose in
  each of the last ``creep_epochs`` epochs;
* ``collapsed``: InfoNCE within ``margin`` of ln(K+1) with the embedding std below ``cone_std``, or the std
  below ``std_floor``, for ``patience`` epochs in a row (the loss alone is no sign: at temperature 0.2 a
  run with a healthy std starts within 5% of ln(K+1));
* ``no_gain``: the kNN monitor not above its epoch-0 value (the untrained encoder) after
  ``knn_evaluations`` evaluations;
* ``probe_below_init``: the ridge probe on the frozen features (``probe_top1``, the closed-form stand-in
  of the standardised linear probe) below its epoch-0 value (the untrained encoder the run started from),
  its message naming the lr phase and what was measured there (a warning only; ``best_probe`` keeps the
  best epoch by the same probe's cross-validated top-1 on the training clips, ``probe_cv_top1``, so that
  no test label chooses the epoch to evaluate; curves without it: ``probe_top1``);
* ``probe_below_init_annealed``: the probe more than ``probe_margin`` below its epoch-0 value once the lr
  is annealed to half its peak or less: the reading closest to the end on the committed curves;
* ``knn_fall``: the kNN monitor more than ``knn_fall`` (top-1, a fraction) below its best so far (a warning
  only: such runs also recover);
* ``uniform_<term>``: a loss term the model names in ``uniform_terms`` (e.g. MICA's FM term) within
  ``margin`` of its uniform value for ``patience`` epochs (a warning only).

``knn_fall``, ``probe_below_init`` and ``uniform_<term>`` name the cause that was measured for the lr phase the
record's ``lr`` shows (``lr_phase``:
the warm-up, full lr, or annealed to half its peak or less), or say that it is not known.
"""
from dataclasses import dataclass, field

ADVICE = {
    'narrow_cone': 'the run is in the narrow cone: on NW-UCLA such runs stayed at 28-51% for 100 epochs; use the '
                   'small-data recipe (config/base/method/small_data_pretrain*.yaml: warm_up_epoch, '
                   'divergence_ramp_epochs), a lower base_lr or another seed',
    'creeping': 'the loss creeps toward the uniform value while the embeddings stay in a narrow cone: the run is '
                'not learning; see the small-data recipe, or stop it',
    'collapsed': 'representation collapse: the logits are nearly uniform or the embeddings constant; stop the '
                 'run and use the small-data recipe',
    'no_gain': 'the kNN monitor is not above the untrained encoder (epoch 0): the encoder has not learned; check '
               'the recipe and the data before training longer',
    'probe_below_init_annealed': 'the lr has annealed and the probe is still below its epoch-0 value: on the committed '
                                 'NW-UCLA curves most runs it marked ended below their untrained encoder or with the '
                                 'smallest gain of their row under the evaluation\'s probe, not all (that probe reads '
                                 'an untrained encoder about 10 points lower than this ridge probe; '
                                 'docs/METHODS.md, "Does pretraining help?"): read the verdict of the evaluation; '
                                 'evaluate best_probe_model.pt (the best epoch by the probe on the training clips; '
                                 'epoch 0 is the untrained encoder) beside the last epoch, or use a supervised recipe '
                                 '(CSRE; an encoder from another set did not transfer where measured: '
                                 'docs/METHODS.md, "Transfer to another skeleton")',
}
KNN_FALL = {
    'warm-up': 'during the lr warm-up (lr {lr:.3g}, still rising): on NW-UCLA such a fall recovered (results/ucla_stability, '
               'SkeletonCLR seed 1: 18 points down at epoch 10, the last warm-up epoch, 52.4% at epoch 20); nothing to '
               'change on its account',
    'full': '{at_lr} on small data the encoder swings between evaluations (NW-UCLA, 20 epochs at lr '
            '0.1: SkeletonCLR seed 1 fell 18 points and recovered, MsMCLR seed 3 fell 16 at its last epoch){cure}',
    'annealed': 'the lr is already down to {lr:.2g} ({share:.1%} of its peak{schedule}): not a swing at full lr, so a '
                'cosine schedule or a lower base_lr is not the cure, and the cause is not known; on small sets longer '
                'pretraining has ended lower than shorter (docs/METHODS.md, "Size advice"): keep the checkpoint of the '
                'best kNN epoch (a save_interval that writes it) and compare it with the untrained encoder',
}
PROBE_BELOW = {
    'warm-up': 'during the lr warm-up (lr {lr:.3g}, still rising): on the NW-UCLA ladder and screen most runs fall '
               'below their untrained encoder here and end above it (docs/METHODS.md, "Does pretraining help?"): not a '
               'verdict yet; probe_below_init_annealed says if it is still below once the lr has annealed',
    'full': 'at full lr (lr {lr:.3g}): on the NW-UCLA ladder and screen most runs below their untrained encoder at the '
            'first evaluations after the warm-up recovered as a cosine lr annealed{constant}; '
            'probe_below_init_annealed says if it is still below once the lr has annealed',
    'annealed': 'the lr is annealed to {share:.1%} of its peak: a fall this late marked most of the weakest seeds on '
                'the committed NW-UCLA curves (probe_below_init_annealed, docs/METHODS.md, "Does pretraining help?")',
}
UNIFORM = ('in 24 of the 25 committed NW-UCLA MICA curves (paper mode) this term stayed within 5% of its uniform value '
           'in the first epochs, healthy runs included, and the 100-epoch runs left it only at epochs 35-67 '
           '(67-77% linear): at lambda_kl 0.01 it moves slowly, and on its own it does not say that the run fails (the '
           'kNN monitor does); the text features were checked against the classes at start-up; why it stays there, '
           'and whether it leaves on this data, is not known')
CONE_KINDS = ('narrow_cone', 'creeping', 'collapsed')
BEST_PROBE_MODEL = 'best_probe_model.pt'     # the pretraining work_dir's encoder of the best epoch by the ridge probe
# warned and recorded; collapse_stop does not stop on these (nor on uniform_*)
WARN_ONLY = ('knn_fall', 'probe_below_init', 'probe_below_init_annealed')


def warn_only(kind):
    return kind in WARN_ONLY or kind.startswith('uniform_')


@dataclass
class LearningMonitor:
    """Feed ``update(record)`` one ``metrics.jsonl`` record at a time; it returns the warnings (kind,
    one-line message) raised by that record for the first time; ``active`` has every kind raised."""
    cone_std: float = 0.002
    cone_epochs: int = 10
    creep_std: float = 1e-3
    creep_epochs: int = 3
    margin: float = 0.05
    std_floor: float = 1e-4
    patience: int = 3
    knn_evaluations: int = 3
    knn_fall: float = 0.12
    probe_margin: float = 0.01                          # top-1 (a fraction) below epoch 0 that counts once annealed
    uniform_terms: dict = field(default_factory=dict)
    warm_up_epoch: int = 0                              # the run's, for the wording (else read from the lr)
    lr_schedule: str = None
    active: dict = field(default_factory=dict)          # kind -> first epoch
    collapse_epochs: int = 0
    _ratios: list = field(default_factory=list)
    _knn0: float = None
    _knn: list = field(default_factory=list)           # (knn_top1, epoch) after epoch 0
    _stuck: dict = field(default_factory=dict)
    _probe0: float = None
    best_probe: tuple = None                            # (probe_cv_top1, epoch) of the best evaluation
    _lrs: list = field(default_factory=list)

    def lr_phase(self, epoch, lr):
        """'warm-up' (within warm_up_epoch, or the lr above the last record's), 'annealed' (half its peak so far
        or less), 'full', or None when the record has no lr."""
        if lr is None:
            return None
        if epoch <= self.warm_up_epoch or (self._lrs and lr > self._lrs[-1] * (1 + 1e-6)):
            return 'warm-up'
        return 'annealed' if lr <= 0.5 * max(self._lrs + [lr]) else 'full'

    def cause(self, kind, epoch, lr):
        """The measured cause of a kNN fall, a probe below its init or a uniform term in this lr phase, or that it
        is not known."""
        phase = self.lr_phase(epoch, lr)
        if kind == 'knn_fall':
            cure = ('' if self.lr_schedule == 'cosine' else
                    '; an annealed lr (lr_schedule: cosine) or a lower base_lr ends on a settled encoder')
            schedule = f', lr_schedule {self.lr_schedule}' if self.lr_schedule else ''
            at_lr = 'at full lr' + (f' (lr {lr:.3g})' if lr is not None else '')
            return KNN_FALL[phase or 'full'].format(lr=lr or 0.0, cure=cure, schedule=schedule, at_lr=at_lr,
                                                    share=(lr or 0.0) / max(self._lrs + [lr or 1e-12]))
        if kind == 'probe_below_init':
            constant = ('' if self.lr_schedule in (None, 'cosine') else
                        f'; this run\'s lr_schedule {self.lr_schedule} may not anneal before it ends: then the '
                        'verdict of its evaluation decides')
            return PROBE_BELOW[phase or 'full'].format(lr=lr or 0.0, constant=constant,
                                                        share=(lr or 0.0) / max(self._lrs + [lr or 1e-12]))
        return (f'during the lr warm-up (lr {lr:.3g}, still rising): ' if phase == 'warm-up' else '') + UNIFORM

    def update(self, record):
        epoch, found = record['epoch'], []
        lr = record.get('lr')
        if 'knn_top1' in record:
            if epoch == 0:
                self._knn0 = record['knn_top1']
            else:
                if self._knn and max(self._knn)[0] - record['knn_top1'] > self.knn_fall:
                    best, at = max(self._knn)
                    found.append(('knn_fall', f'kNN top-1 {100 * record["knn_top1"]:.1f}%, '
                                              f'{100 * (best - record["knn_top1"]):.1f} points below its best, '
                                              f'{100 * best:.1f}% at epoch {at}: '
                                              + self.cause('knn_fall', epoch, lr)))
                self._knn.append((record['knn_top1'], epoch))
                if (self._knn0 is not None and len(self._knn) >= self.knn_evaluations
                        and max(self._knn)[0] <= self._knn0):
                    found.append(('no_gain', f'kNN top-1 {100 * max(self._knn)[0]:.1f}% at best over '
                                             f'{len(self._knn)} evaluations, epoch 0: {100 * self._knn0:.1f}%'))
        if record.get('probe_top1') is not None:
            probe = record['probe_top1']
            if epoch == 0:
                self._probe0 = probe
            elif self._probe0 is not None and probe < self._probe0:
                below = (f'ridge probe top-1 {100 * probe:.1f}%, below the untrained encoder\'s '
                         f'{100 * self._probe0:.1f}% (epoch 0)')
                found.append(('probe_below_init', f'{below}: ' + self.cause('probe_below_init', epoch, lr)))
                if self.lr_phase(epoch, lr) == 'annealed' and probe < self._probe0 - self.probe_margin:
                    found.append(('probe_below_init_annealed', below))
            chosen_by = record.get('probe_cv_top1', probe)
            if self.best_probe is None or chosen_by > self.best_probe[0]:
                self.best_probe = (chosen_by, epoch)
        std = record.get('embed_std')
        ratio = record.get('loss_over_uniform')
        if std is not None and epoch >= 1:
            if epoch <= self.cone_epochs and std < self.cone_std:
                found.append(('narrow_cone', f'embedding std {std:.4f} < {self.cone_std} at epoch {epoch} '
                                             f'(first {self.cone_epochs} epochs)'))
            if ratio is not None:
                self._ratios.append(ratio)
                rising = self._ratios[-self.creep_epochs - 1:]
                if (std < self.creep_std and len(rising) == self.creep_epochs + 1
                        and all(b > a for a, b in zip(rising, rising[1:]))):
                    found.append(('creeping', f'InfoNCE {ratio:.3f} x ln(K+1), rising for {self.creep_epochs} '
                                              f'epochs, embedding std {std:.4f}'))
                collapsed = (ratio > 1.0 - self.margin and std < self.cone_std) or std < self.std_floor
                self.collapse_epochs = self.collapse_epochs + 1 if collapsed else 0
                if self.collapse_epochs >= self.patience:
                    found.append(('collapsed', f'for {self.collapse_epochs} epochs InfoNCE {ratio:.3f} x ln(K+1), '
                                               f'embedding std {std:.4f}'))
        for term, uniform in self.uniform_terms.items():
            if term in record and epoch >= 1:
                stuck = abs(record[term] - uniform) <= self.margin * abs(uniform)
                self._stuck[term] = self._stuck.get(term, 0) + 1 if stuck else 0
                if self._stuck[term] >= self.patience:
                    found.append((f'uniform_{term}', f'{term} {record[term]:.4f} within {self.margin:.0%} of its '
                                                     f'uniform value {uniform:.4f} for {self._stuck[term]} epochs: '
                                                     + self.cause('uniform', epoch, lr)))
        if lr is not None:
            self._lrs.append(lr)
        new = [(kind, text) for kind, text in found if kind not in self.active]
        for kind, _ in found:
            self.active.setdefault(kind, epoch)
        return [(kind, text if kind in KINDS_WITH_CAUSE or kind.startswith('uniform_') else f'{text}: {ADVICE[kind]}')
                for kind, text in new], [kind for kind, _ in found]


KINDS_WITH_CAUSE = ('knn_fall', 'probe_below_init')   # and uniform_*: their message names the cause for the lr phase


def replay(records, **settings):
    """{kind: first epoch} a monitor raises over ``records`` (e.g. a finished run's metrics.jsonl)."""
    monitor = LearningMonitor(**settings)
    for record in records:
        monitor.update(record)
    return monitor.active
