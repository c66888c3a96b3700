"""TrainTrain's schedules in lorakit: 'step' (its piecewise_constant step rules) and the polynomial decay its
'polynomial' builds with a power, each checked step by step against the formula of the code TrainTrain calls."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from lorakit.config.schema import TrainSection
from lorakit.engine.schedule import build_scheduler, scheduler_for
from lorakit.errors import ConfigError
from test_schedule import rates, sgd  # the same optimizer and stepping as the other schedule tests




def piecewise(rules: list[tuple[float, int]], last: float, step: int) -> float:
    """TrainTrain's trainer/trainer.py load_lr_scheduler passes train_lr_step_rules to diffusers' get_scheduler;
    diffusers/optimization.py get_piecewise_constant_schedule: rules 'value:steps' kept in a dict by steps, and
    rule_func returns the value of the first sorted boundary with step < boundary, else the last value."""
    table = dict((steps, value) for value, steps in rules)
    for boundary in sorted(table):
        if step < boundary:
            return table[boundary]
    return last


def test_step_rules_without_warm_up_are_diffusers_piecewise_constant() -> None:
    lr0 = 0.01
    train = TrainSection(learning_rate=lr0, lr_scheduler="step", lr_step_rules="1:10,0.1:20,0.01:30,0.005")
    want = [lr0 * piecewise([(1, 10), (0.1, 20), (0.01, 30)], 0.005, s) for s in range(40)]
    got = rates(scheduler_for(train, sgd(lr0), 0, 40), 40)
    assert got == pytest.approx(want, rel=1e-12)
    assert got[9] == pytest.approx(lr0) and got[10] == pytest.approx(lr0 * 0.1)
    assert got[35] == pytest.approx(lr0 * 0.005)


def test_step_rules_unsorted_repeated_and_spaced_as_diffusers_reads_them() -> None:
    # the dict keeps a repeated step's last value; boundaries are sorted; int()/float() accept spaces
    text = " 0.5 : 6 , 0.25:3,0.75:6, 0.1"
    want = [piecewise([(0.5, 6), (0.25, 3), (0.75, 6)], 0.1, s) for s in range(9)]
    assert want[:3] == [0.25] * 3 and want[3:6] == [0.75] * 3 and want[6:] == [0.1] * 3
    assert rates(build_scheduler("step", sgd(), 0, 9, 1, step_rules=text), 9) == pytest.approx(want)
    # one value alone: a constant multiplier
    assert rates(build_scheduler("step", sgd(2.0), 0, 4, 1, step_rules="0.5"), 4) == pytest.approx([1.0] * 4)


def test_step_rules_warm_up_ramps_the_multiplier_from_zero() -> None:
    # lorakit's warm-up, as diffusers' warm-up schedules: factor s / w for s < w, here times the rules' multiplier
    w, text = 4, "1:6,0.5:8,0.2"
    want = [(s / w if s < w else 1.0) * piecewise([(1, 6), (0.5, 8)], 0.2, s) for s in range(10)]
    assert want[:4] == [0, 0.25, 0.5, 0.75] and want[4:] == [1, 1, 0.5, 0.5, 0.2, 0.2]
    train = TrainSection(lr_scheduler="step", lr_step_rules=text)
    assert rates(scheduler_for(train, sgd(), w, 10), 10) == pytest.approx(want)


def test_step_rules_resume_at_the_same_multiplier() -> None:
    first = build_scheduler("step", sgd(), 2, 10, 1, step_rules="1:5,0.5")
    rates(first, 6)
    again = build_scheduler("step", sgd(), 2, 10, 1, step_rules="1:5,0.5")
    again.load_state_dict(first.state_dict())
    assert first.get_last_lr() == pytest.approx([0.5])  # step 6: past the rule's step 5
    assert again.get_last_lr() == pytest.approx([0.5])


def test_polynomial_power_as_traintrains_polynomial() -> None:
    # load_lr_scheduler → get_scheduler('polynomial', power=train_lr_scheduler_power) →
    # get_polynomial_decay_schedule_with_warmup (lr_end 1e-7): s/w, then
    # (lr0 − lr_end)·(1 − (s − w)/(T − w))^p + lr_end
    lr0, lr_end, w, total, p = 1e-3, 1e-7, 3, 12, 0.5
    want = [lr0 * s / w if s < w else (lr0 - lr_end) * (1 - (s - w) / (total - w)) ** p + lr_end
            for s in range(total)]
    train = TrainSection(learning_rate=lr0, lr_scheduler="polynomial", lr_scheduler_power=p)
    assert rates(scheduler_for(train, sgd(lr0), w, total), total) == pytest.approx(want, rel=1e-9)


@pytest.mark.parametrize("text, says", [
    ("1:10,0.1:20,", "final multiplier"),
    ("1:10,0.1", None),
    ("1-10,0.1", "not multiplier:step"),
    ("1:ten,0.1", "whole number"),
    ("1:10.5,0.1", "whole number"),
    ("1:10,x", "multiplier alone"),
    ("-1:10,0.1", "negative"),
])
def test_step_rules_syntax_is_checked_by_the_schema(text: str, says: str | None) -> None:
    if says is None:
        TrainSection(lr_scheduler="step", lr_step_rules=text)
        return
    with pytest.raises(ValidationError, match=says):
        TrainSection(lr_scheduler="step", lr_step_rules=text)


def test_step_needs_rules_and_rules_need_step() -> None:
    with pytest.raises(ValidationError, match="needs lr_step_rules"):
        TrainSection(lr_scheduler="step")
    with pytest.raises(ValidationError, match="only by lr_scheduler = 'step'"):
        TrainSection(lr_scheduler="cosine", lr_step_rules="1:10,0.5")
    with pytest.raises(ConfigError, match="needs train.lr_step_rules"):
        build_scheduler("step", sgd(), 0, 10, 1)
    with pytest.raises(ConfigError, match="takes no arguments"):
        build_scheduler("step", sgd(), 0, 10, 1, ["gamma=0.5"], step_rules="1:5,0.5")
