"""SurgerySchedule(underfit_margin=…): growth need not pay min_growth_gain while the model fits
its training data no better than held-out data (short of capacity); it must otherwise."""

from __future__ import annotations

import pytest
from test_schedule_backoff import _GrowTwo, epoch, setup

from engine.errors import ConfigurationError


def unchanged(model):  # new zero-outgoing units change nothing: the held-out loss stays 1.0
    return 1.0


@pytest.mark.parametrize(
    ("train_loss", "margin", "kept"),
    [
        (0.95, 0.2, True),  # train ≥ 0.8 × held-out: underfitting, growth that does no harm
        (0.30, 0.2, False),  # train well below held-out: growth must lower the loss by 1 %
        (0.95, None, False),  # without the margin, growth always has to pay
    ],
)
def test_the_growth_bar_follows_the_generalisation_gap(train_loss, margin, kept):
    model, engine, schedule = setup([_GrowTwo()], unchanged, min_growth_gain=0.01,
                                    underfit_margin=margin)  # fmt: skip
    engine.log_epoch(0, loss=train_loss)
    epoch(model, engine, schedule, 0)
    assert [t.accepted for t in schedule.trials] == [kept]
    assert model[2].out_features == (18 if kept else 16)
    bar = schedule.trials[0].record.metadata["growth_bar"]
    assert bar["underfitting"] is kept and bar["tolerance"] == (0.0 if kept else -0.01)
    if margin is not None:
        assert (bar["train_loss"], bar["held_out_loss"]) == (train_loss, 1.0)


def test_growth_that_raises_the_held_out_loss_is_refused_even_when_underfitting():
    model, engine, schedule = setup(
        [_GrowTwo()], lambda m: 1.0 + 0.01 * (m[2].out_features - 16), min_growth_gain=0.01,
        underfit_margin=0.2,
    )  # fmt: skip
    engine.log_epoch(0, loss=5.0)
    epoch(model, engine, schedule, 0)
    assert [t.accepted for t in schedule.trials] == [False] and model[2].out_features == 16


def test_without_a_logged_training_loss_the_strict_bar_holds_and_bad_margins_are_refused():
    model, engine, schedule = setup([_GrowTwo()], unchanged, min_growth_gain=0.01,
                                    underfit_margin=0.2)  # fmt: skip
    epoch(model, engine, schedule, 0)
    assert [t.accepted for t in schedule.trials] == [False]
    assert schedule.trials[0].record.metadata["growth_bar"]["underfitting"] is False
    with pytest.raises(ConfigurationError, match="underfit_margin"):
        setup([], unchanged, underfit_margin=1.0)
