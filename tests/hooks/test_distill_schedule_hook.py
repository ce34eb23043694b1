"""FactorSchedule values at chosen epochs and DistillScheduleHook's input checks."""

import pytest

from kd_plugin.hooks import DistillScheduleHook, FactorSchedule


@pytest.mark.parametrize(
    'schedule, step, expected',
    [
        (dict(policy='constant', start=1.5), 0, 1.5),
        (dict(policy='constant', start=1.5), 19, 1.5),
        # linear from 2 at epoch 0 to 1 at epoch 20 (the end of training)
        (dict(policy='linear', start=2.0, end=1.0), 0, 2.0),
        (dict(policy='linear', start=2.0, end=1.0), 5, 1.75),
        (dict(policy='linear', start=2.0, end=1.0), 20, 1.0),
        # linear from 4 at epoch 10 to 1 at epoch 16, constant outside that span
        (dict(policy='linear', start=4.0, end=1.0, begin=10, stop=16), 3, 4.0),
        (dict(policy='linear', start=4.0, end=1.0, begin=10, stop=16), 12, 3.0),
        (dict(policy='linear', start=4.0, end=1.0, begin=10, stop=16), 18, 1.0),
        # cosine from 1 to 0 over 20 epochs: halfway is 0.5, a quarter is (1 + cos(pi/4)) / 2
        (dict(policy='cosine', start=1.0, end=0.0), 10, 0.5),
        (dict(policy='cosine', start=1.0, end=0.0), 5, 0.8535533905932737),
        (dict(policy='cosine', start=1.0, end=0.0), 20, 0.0),
        # step: x0.5 at epochs 8 and 15
        (dict(policy='step', start=1.0, gamma=0.5, milestones=[8, 15]), 7, 1.0),
        (dict(policy='step', start=1.0, gamma=0.5, milestones=[8, 15]), 8, 0.5),
        (dict(policy='step', start=1.0, gamma=0.5, milestones=[8, 15]), 19, 0.25),
    ],
)
def test_schedule_value_at_epoch(schedule, step, expected):
    assert FactorSchedule(**schedule).value(step, total=20) == pytest.approx(expected)


def test_unknown_policy_is_rejected():
    with pytest.raises(ValueError, match="policy must be one of .* got 'exp'"):
        FactorSchedule(policy='exp')


def test_temperature_schedule_reaching_zero_is_rejected():
    with pytest.raises(ValueError, match='temperature factors must stay > 0'):
        DistillScheduleHook(temperature=dict(policy='linear', start=1.0, end=0.0))


def test_negative_weight_schedule_is_rejected():
    with pytest.raises(ValueError, match='loss-weight factors must stay >= 0'):
        DistillScheduleHook(weight=dict(policy='constant', start=-1.0))


def test_negative_stop_epoch_is_rejected():
    with pytest.raises(ValueError, match='stop_epoch must be >= 0 or None, got -1'):
        DistillScheduleHook(stop_epoch=-1)


def test_schedule_span_must_be_ordered():
    with pytest.raises(ValueError, match='begin=5, stop=5'):
        FactorSchedule(policy='linear', begin=5, stop=5)
