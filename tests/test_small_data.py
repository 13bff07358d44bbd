"""The small-data advice (processor/small_data.py): derived from the set's size alone, consistent with
itself (following it leaves nothing to advise) and silent for the shipped NW-UCLA recipe."""
import pytest

from processor.small_data import MIN_STEPS, MIN_SUB_BATCH, SMALL_DATA, small_data_advice


def follow(n, batch, lr, queue, groups):
    advice = small_data_advice(n, batch, lr, queue, groups)
    value = {k: v for k, (v, _) in advice.items()}
    return (value.get('batch_size', batch), value.get('base_lr', lr), value.get('model_args.queue_size', queue),
            value.get('model_args.shuffle_bn_groups', groups)), advice


@pytest.mark.parametrize('n', [40, 100, 160, 291, 320, 1020, 2999])
@pytest.mark.parametrize('batch, queue, groups', [(128, 512, 4), (32, 256, 4), (256, 32768, 1), (16, 4096, 8)])
def test_following_the_advice_leaves_nothing_to_advise(n, batch, queue, groups):
    (b, lr, q, g), _ = follow(n, batch, 0.1, queue, groups)
    assert small_data_advice(n, b, lr, q, g) == {}
    assert lr / b == pytest.approx(0.1 / batch)                       # the same lr per sample
    assert q <= n and q % b == 0                                        # queue within the set, whole batches
    assert b == batch or b & (b - 1) == 0                               # a changed batch is a power of two
    if n >= 2 * MIN_SUB_BATCH * MIN_STEPS:
        assert n // b >= MIN_STEPS and b // g >= MIN_SUB_BATCH and g >= 2
    if n >= 2 * MIN_SUB_BATCH:
        assert b >= 2 * MIN_SUB_BATCH and 2 <= g <= b // MIN_SUB_BATCH


def test_shipped_ucla_recipe_and_large_sets_get_no_advice():
    assert small_data_advice(1020, 128, 0.1, 512, 4) == {}               # config/ucla/ (1,020 clips)
    assert small_data_advice(SMALL_DATA, 8, 0.1, 10 ** 6, 1) == {}
    assert small_data_advice(100, 16, 0.1) == {}                         # no queue, no shuffle-BN: 6 steps


def test_a_291_clip_set():
    (b, lr, q, g), advice = follow(291, 128, 0.1, 512, 4)
    assert (b, lr, q, g) == (64, 0.05, 128, 2)
    assert set(advice) == {'batch_size', 'base_lr', 'model_args.queue_size', 'model_args.shuffle_bn_groups'}
