"""The size advice (processor/small_data.py): derived from the set's size and the config's batch and lr
alone, satisfiable for any size (down to 8 clips), consistent with itself (following it leaves nothing to
advise), silent for the shipped NW-UCLA recipe, and printed before any check of the settings against the
set (a batch larger than the set is an error that names the advised batch)."""
import pytest

from processor.small_data import (EPOCHS, MIN_STEPS, MIN_SUB_BATCH, SMALL_DATA, advised_epochs,
                                  classifier_advice, command_line, differences, pretrain_advice)


def values(advice):
    return {k: v for k, (v, _) in advice.items()}


@pytest.mark.parametrize('n', [8, 20, 50, 60, 100, 160, 199, 255, 256, 291, 320, 700, 1020, 2999])
@pytest.mark.parametrize('batch, lr', [(128, 0.1), (32, 0.1), (256, 0.3), (16, 0.05)])
def test_the_advice_is_satisfiable_at_every_size(n, batch, lr):
    advice = values(pretrain_advice(n, batch, lr))
    b, g, q = advice['batch_size'], advice['model_args.shuffle_bn_groups'], advice['model_args.queue_size']
    assert 2 <= b <= n and n // b >= MIN_STEPS and b & (b - 1) == 0 and b <= batch    # 4 iterations or more
    assert advice['base_lr'] == pytest.approx(lr * b / batch)                        # the config's lr per sample
    assert g >= 2 and b % g == 0                                                      # groups that shuffle
    if n >= 2 * MIN_SUB_BATCH * MIN_STEPS and b >= 2 * MIN_SUB_BATCH:
        assert b // g == MIN_SUB_BATCH                                                # groups of 32 where they fit
    assert q % b == 0 and b <= q and (q <= n or q == b)                              # whole batches, within the set
    assert advice['num_epoch'] == EPOCHS
    assert values(classifier_advice(n, batch))['batch_size'] <= n // MIN_STEPS or n < 2 * MIN_STEPS
    # following it: the same advice, no difference left
    current = dict(advice)
    assert differences(pretrain_advice(n, batch, lr), current) == {}


def test_the_rule_below_256_clips_and_the_two_sizes_of_the_walkthrough():
    """100 and 60 clips (the newcomer's 100, and a smaller set): a batch with at least 4 iterations, two
    shuffle-BN groups of half the batch, the queue half the set, the config's lr per sample."""
    assert values(pretrain_advice(100, 128, 0.1)) == {
        'batch_size': 16, 'base_lr': 0.0125, 'model_args.shuffle_bn_groups': 2, 'model_args.queue_size': 48,
        'num_epoch': 100}
    assert values(pretrain_advice(60, 128, 0.1)) == {
        'batch_size': 8, 'base_lr': 0.00625, 'model_args.shuffle_bn_groups': 2, 'model_args.queue_size': 32,
        'num_epoch': 100}
    assert values(classifier_advice(100, 128)) == {'batch_size': 16}
    assert values(classifier_advice(60, 128)) == {'batch_size': 8}
    assert command_line(pretrain_advice(60, 128, 0.1)) == ('--batch_size 8 --base_lr 0.00625 --num_epoch 100 '
                                                            '--model_args shuffle_bn_groups=2,queue_size=32')


def test_shipped_ucla_recipe_is_the_advice_for_its_size_and_large_sets_get_none():
    advice = values(pretrain_advice(1020, 128, 0.1))             # config/ucla/ (1,020 clips)
    assert advice == {'batch_size': 128, 'base_lr': 0.1, 'model_args.shuffle_bn_groups': 4,
                      'model_args.queue_size': 512, 'num_epoch': 100}
    assert pretrain_advice(SMALL_DATA, 8, 0.1) == {} and classifier_advice(SMALL_DATA, 8) == {}
    assert values(pretrain_advice(291, 128, 0.1, queue=False, groups=False)) == {
        'batch_size': 64, 'base_lr': 0.05, 'num_epoch': 100}


def test_the_measured_length_at_every_small_size():
    assert {advised_epochs(n) for n in (50, 300, 400, 550, 700, 1000, 2999)} == {100}


def test_the_lr_comes_from_the_config_not_the_command_line(tmp_path):
    """The reference lr and batch are the config file's (its bases merged): a --batch_size on the command
    line does not move the advised lr."""
    from processor.pretrain import PretrainProcessor
    from conftest import ROOT
    import os
    args = ['--config', os.path.join(ROOT, 'config/ucla/pretrain_skeletonclr.yaml'), '--work_dir', str(tmp_path / 'w'),
            '--phase', 'test']
    p = PretrainProcessor.__new__(PretrainProcessor)
    p.load_arg(args + ['--batch_size', '16', '--base_lr', '0.3'])
    assert p.config_values == {'batch_size': 128, 'base_lr': 0.1}
    assert (p.arg.batch_size, p.arg.base_lr) == (16, 0.3)
