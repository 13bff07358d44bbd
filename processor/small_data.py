"""Settings derived from the size of the training set: the one place the size advice comes from
(docs/METHODS.md, "Size advice").  Below ``SMALL_DATA`` clips, for ``n`` training clips:

* pretraining ``batch_size``: the largest power of two with at least ``MIN_STEPS`` iterations an epoch
  (``n // batch >= 4``), at most the config's batch;
* ``model_args.shuffle_bn_groups``: groups of ``MIN_SUB_BATCH`` (32) clips, at least two, where the batch
  holds them (from 256 clips); below 256 clips two groups of half the batch (the fewest that still shuffle);
* ``base_lr``: the config's lr per sample (its ``base_lr / batch_size``, the config file's values, not the
  command line's) times the batch;
* ``model_args.queue_size``: half the set rounded to the nearest multiple of the batch, at least one batch
  (NW-UCLA's measured 512 keys for 1,020 clips);
* ``num_epoch``: ``EPOCHS`` (100) at every size below ``SMALL_DATA``: on NW-UCLA's subsets of 100 and 300
  clips 100 epochs were ahead of 30 in 6 of 6 seeds (docs/METHODS.md, "Size advice");
* a classifier's batch (linear probe, finetune, supervised recognition): the largest power of two with at
  least ``MIN_STEPS`` iterations an epoch, at most the config's batch; its lr is left as it is.

Every value is satisfiable for any n >= 2 * MIN_STEPS (down to 8 clips), and following the advice gives a
run for which it asks nothing more.
"""
import math
import re
import statistics

SMALL_DATA = 3000        # training clips below which the advice is given
MIN_STEPS = 4            # iterations per epoch
MIN_SUB_BATCH = 32       # clips per shuffle-BN group, where the batch holds two such groups
EPOCHS = 100             # pretraining epochs below SMALL_DATA clips


def power_of_two_at_most(value):
    return 1 << (max(1, int(value)).bit_length() - 1)


def advised_batch(num_samples, batch_size):
    """The largest power of two with at least MIN_STEPS iterations an epoch, at most ``batch_size`` (2 at least)."""
    return max(2, min(power_of_two_at_most(num_samples // MIN_STEPS), power_of_two_at_most(batch_size)))


def advised_epochs(num_samples):
    """Pretraining epochs for ``num_samples`` clips (below SMALL_DATA): EPOCHS, the measured length."""
    return EPOCHS


def pretrain_advice(num_samples, reference_batch, reference_lr, queue=True, groups=True):
    """{key: (value, why)} of a contrastive pretraining on ``num_samples`` clips (empty from SMALL_DATA on);
    ``reference_batch`` / ``reference_lr``: the config's; ``queue`` / ``groups``: the method has a queue /
    shuffle-BN."""
    if num_samples >= SMALL_DATA:
        return {}
    batch = advised_batch(num_samples, reference_batch)
    steps, left = divmod(num_samples, batch)
    advice = {'batch_size': (batch, f'{steps} iterations an epoch, {left} clips left out in turn')}
    advice['base_lr'] = (reference_lr * batch / reference_batch,
                         f"the config's {reference_lr:g} at batch {reference_batch}: the same lr per sample")
    if groups:
        count = batch // MIN_SUB_BATCH if batch >= 2 * MIN_SUB_BATCH else 2
        why = (f'{count} groups of {batch // count} clips' + ('' if batch >= 2 * MIN_SUB_BATCH else
               f'; below {2 * MIN_SUB_BATCH * MIN_STEPS} clips groups of {MIN_SUB_BATCH} do not fit'))
        advice['model_args.shuffle_bn_groups'] = (count, why)
    if queue:
        size = batch * max(1, int(num_samples / 2 / batch + 0.5))
        advice['model_args.queue_size'] = (size, f'{100 * size / num_samples:.0f}% of the set: half, a multiple of '
                                                 f'the batch')
    epochs = advised_epochs(num_samples)
    advice['num_epoch'] = (epochs, 'ahead of 30 on NW-UCLA subsets of 100 and 300 clips, 6 of 6 '
                                   'seeds; where pretraining loses to its init, longer loses more: the verdict tells')
    return advice


def classifier_advice(num_samples, reference_batch):
    """{'batch_size': (value, why)} of a run that trains a classifier on ``num_samples`` items (empty from
    SMALL_DATA on)."""
    if num_samples >= SMALL_DATA:
        return {}
    batch = advised_batch(num_samples, reference_batch)
    steps, left = divmod(num_samples, batch)
    return {'batch_size': (batch, f'{steps} iterations an epoch, {left} left out in turn; lr unchanged')}


def differences(advice, current):
    """The advised keys whose value this run does not use: {key: (advised, this run's)}."""
    out = {}
    for key, (value, _) in advice.items():
        mine = current.get(key)
        same = mine is not None and (math.isclose(float(mine), float(value), rel_tol=1e-6)
                                     if isinstance(value, float) else mine == value)
        if not same:
            out[key] = (value, mine)
    return out


def command_line(advice):
    """The advice as command-line options (``--batch_size 16 --model_args queue_size=48,...``)."""
    plain = [f'--{k} {v:g}' for k, (v, _) in advice.items() if not k.startswith('model_args.')]
    nested = [f"{k.split('.', 1)[1]}={v}" for k, (v, _) in advice.items() if k.startswith('model_args.')]
    return ' '.join(plain + ([f"--model_args {','.join(nested)}"] if nested else []))


def advice_line(kind, num_samples, advice):
    """One start-up line: the advice for this set, each value with its reason."""
    return (f'size advice for {num_samples} training samples ({kind}; under {SMALL_DATA}, processor/small_data.py): '
            + '; '.join(f'{k} {v:g} ({why})' for k, (v, why) in advice.items()))


# ------------------------------------------------------------------------ what was measured at this size
# the plans whose rows say how a shipped NW-UCLA recipe (config/ucla/pretrain_<method>.yaml) did against its
# untrained init (docs/METHODS.md, "Does pretraining help?"), each with the training clips of its rows that have
# no sample_list (None: read from the row's name); runs of one method, size and length in several plans are pooled
MEASURED_PLANS = {'config/reproduce/ucla_ladder.yaml': None, 'config/reproduce/ucla_schedule.yaml': None,
                  'config/reproduce/ucla.yaml': 1020}
LADDER_PLAN = 'config/reproduce/ucla_ladder.yaml'
RECIPES = tuple(f'config/ucla/pretrain_{m}.yaml' for m in ('skeletonclr', 'aimclr', 'mica', 'mica_label_free'))
LADDER_METHODS = {'pretrain_skeletonclr': 'SkeletonCLR', 'pretrain_aimclr': 'AimCLR', 'pretrain_mica': 'MICA'}


def _row_clips(row, root, clips=None):
    """Training clips of a plan row: the names in its ``sample_list``, else ``clips``, else the N of a name
    ending ', N clips'."""
    import os
    from feeder.ntu_feeder import listed_names
    options = row['overrides']
    for flag, value in zip(options, options[1:]):
        if flag == '--train_feeder_args' and 'sample_list=' in value:
            return len(set(listed_names(os.path.join(root, value.split('sample_list=', 1)[1].split(',')[0]))))
    found = re.search(r', (\d+) clips$', row['name'])
    return clips or (int(found.group(1)) if found else None)


def measurements(processor, label_free=False, root=None):
    """{(clips, epochs): ([gain of each run], [plan paths])} of the rows of MEASURED_PLANS that pretrain with
    ``processor`` in this label mode (the config file's ``fm_target``): each run's points over the untrained init
    of its seed, runs of several plans pooled."""
    import os
    from tools.reproduction.plan import load_plan
    from tools.reproduction.table import column_keys, grouped, load_results, paired_gain, untrained_rows
    from torchlight.io import load_config_file
    root = root or os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = {}
    for path, plan_clips in MEASURED_PLANS.items():
        if not os.path.isfile(os.path.join(root, path)):
            continue
        plan = load_plan(os.path.join(root, path))
        rows = [r for r in plan.rows if r['processor'] == processor and r['config'] in RECIPES and label_free ==
                ((load_config_file(r['config_path']).get('model_args') or {}).get('fm_target') == 'teacher')]
        if not rows:
            continue
        folder = os.path.join(root, plan.results)
        results = load_results(folder) if os.path.isdir(folder) else []
        groups, baselines = grouped(results, plan), untrained_rows(plan)
        for row in rows:
            clips = _row_clips(row, root, plan_clips)
            if clips is None:
                continue
            name, base = row['name'], baselines.get(row['name'])
            values, plans = out.setdefault((clips, row['epochs']), ([], []))
            if name in groups and base in groups:
                gains = paired_gain(groups[name], groups[base], column_keys(groups[name] + groups[base]))
                values.extend(gains.values())
                plans.extend([path] if gains and path not in plans else [])
    return out


def _gain_text(values, plans, first):
    spread = f' ± {statistics.stdev(values):.1f}' if len(values) > 1 else ''
    return (f'{statistics.mean(values):+.1f}{spread}' + (' points against its untrained init (' if first else ' (')
            + f'{sum(v > 0 for v in values)} of {len(values)}' + (' runs above' if first else '')
            + f'; {", ".join(plans)})')


def measured_line(num_samples, processor, label_free=False, num_epoch=None, root=None):
    """One start-up line: how the shipped recipe of this method did against its untrained init on the NW-UCLA
    subset nearest ``num_samples`` clips (``measurements``, paired by seed), first at the measured length nearest
    ``num_epoch`` (default EPOCHS), then at the other lengths measured there; or that it was not measured
    there; None from SMALL_DATA clips on or for a method no plan runs."""
    method = LADDER_METHODS.get(processor)
    if num_samples >= SMALL_DATA or method is None:
        return None
    method += ' label-free' if method == 'MICA' and label_free else ''
    measured = measurements(processor, label_free, root)
    if not measured:
        return None
    rung = min({clips for clips, _ in measured}, key=lambda n: abs(math.log(n / num_samples)))
    epochs = num_epoch or EPOCHS
    lengths = sorted((e for clips, e in measured if clips == rung and measured[(clips, e)][0]),
                     key=lambda e: (abs(e - epochs), -e))
    if not lengths:
        return (f'measured: {method} was not measured yet on the NW-UCLA subset nearest {num_samples} clips '
                f'({rung} clips, {LADDER_PLAN}); '
                "the evaluation's verdict says whether pretraining beat its untrained init")
    first = measured[(rung, lengths[0])][0]
    text = (f'measured (NW-UCLA subset of {rung} clips, each run against the untrained init of its seed, same '
            f"probe): {method} with the size advice's batch, lr and queue, "
            + '; '.join(f'{e} epochs {_gain_text(*measured[(rung, e)], i == 0)}' for i, e in enumerate(lengths)))
    if lengths[0] != epochs:
        text += f' (not measured at this run\'s {epochs} epochs)'
    if statistics.mean(first) <= 0:
        text += ('; at this size pretraining with it did NOT beat the encoder it starts from: compare with the '
                 'verdict of your evaluation, and consider supervised training with CSRE (recognition_*_csre '
                 'configs; docs/DATA.md, step 7) or an encoder pretrained on a larger set, whose transfer was '
                 'measured only from NW-UCLA to the synthetic set, where it ended below its untrained encoder too '
                 '(docs/METHODS.md, "Transfer to another skeleton")')
    else:
        text += ('; on NW-UCLA only: on two other small sets (docs/METHODS.md, "Does pretraining help?") every '
                 'self-supervised encoder ended below its untrained init, so the verdict of your evaluation decides')
    return text
