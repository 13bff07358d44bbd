"""Settings of a queue-based contrastive pretraining derived from the size of the training set alone: the
one place the small-data advice comes from (docs/METHODS.md, "Collapse on small data").

With ``n`` training clips: at least ``MIN_STEPS`` iterations per epoch (the batch a power of two, no
smaller than two shuffle-BN groups of ``MIN_SUB_BATCH``), the learning rate per sample kept
(``base_lr / batch_size``), shuffle-BN groups of at least ``MIN_SUB_BATCH`` clips (at least two groups),
and a queue no larger than the set (half an epoch, a multiple of the batch, when it must change).
Following the advice gives a run for which the advice is empty.
"""
SMALL_DATA = 3000        # training clips below which the advice is given
MIN_STEPS = 4            # iterations per epoch
MIN_SUB_BATCH = 32       # clips per shuffle-BN group


def power_of_two_at_most(value):
    return 1 << (max(1, int(value)).bit_length() - 1)


def small_data_advice(num_samples, batch_size, base_lr, queue_size=None, groups=None):
    """{key: (value, why)} of the settings that differ from the ones derived from ``num_samples``;
    ``queue_size`` / ``groups`` None: the method has no queue / no shuffle-BN."""
    if num_samples >= SMALL_DATA:
        return {}
    advice = {}
    smallest = 2 * MIN_SUB_BATCH if groups is not None else 1
    batch = batch_size
    if num_samples // batch < MIN_STEPS:
        batch = max(power_of_two_at_most(num_samples // MIN_STEPS), smallest)
    elif groups is not None and batch < smallest:
        batch = smallest
    batch = min(batch, power_of_two_at_most(num_samples))
    if batch != batch_size:
        advice['batch_size'] = (batch, f'{num_samples // batch} iterations per epoch (at least {MIN_STEPS}) with '
                                       f'shuffle-BN groups of {MIN_SUB_BATCH} or more')
        advice['base_lr'] = (base_lr * batch / batch_size, f'the same lr per sample ({base_lr / batch_size:.3g})')
    if groups is not None and batch >= smallest and not 2 <= groups <= batch // MIN_SUB_BATCH:
        advice['model_args.shuffle_bn_groups'] = (batch // MIN_SUB_BATCH, f'shuffle-BN groups of '
                                                  f'{MIN_SUB_BATCH} or more clips (at least two groups)')
    if queue_size is not None and (queue_size > num_samples or queue_size % batch):
        queue = batch * max(1, num_samples // 2 // batch)
        advice['model_args.queue_size'] = (queue, f'no larger than the {num_samples} clips (half an epoch), a '
                                                  f'multiple of batch_size {batch}')
    return advice
