"""Growth judged against noise: with ``significance``, a plan that must lower the held-out loss
is kept only when the paired per-sample improvement exceeds that many standard errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from engine.errors import ConfigurationError
from engine.plan import Plan
from engine.plan.actions import ExpandAction
from engine.surgery import held_out_loss, run_trial


def grow_plan():
    return Plan.create([ExpandAction(layer="0", count=2, init="zero_outgoing", reason="t")],
                       [("0", 6), ("2", 1)])  # fmt: skip


def judge(spread: float):
    """Per-sample losses: 1 ± spread before; 0.02 lower on average once layer 0 has grown."""
    g = torch.Generator().manual_seed(0)
    base = 1.0 + spread * torch.randn(200, generator=g, dtype=torch.float64)
    change = -0.02 + spread * torch.randn(200, generator=g, dtype=torch.float64)
    return lambda m: base + (change if m[0].out_features > 6 else 0.0)


@pytest.mark.parametrize(("spread", "kept"), [(0.01, True), (1.0, False)])
def test_growth_must_beat_the_noise(spread, kept):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 1))
    trial = run_trial(model, grow_plan(), None, torch.randn(8, 4), evaluate=judge(spread),
                      tolerance=-0.005, significance=2.0)  # fmt: skip
    assert trial.accepted is kept and trial.standard_error is not None
    assert model[0].out_features == (8 if kept else 6)
    if not kept:
        assert "not significant" in trial.reason


def test_significance_needs_per_sample_losses_and_a_sane_value():
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 1))
    x = torch.randn(8, 4)
    mean_only = lambda m: 1.0 - 0.1 * (m[0].out_features > 6)  # noqa: E731
    with pytest.raises(ConfigurationError, match="per-sample"):
        run_trial(model, grow_plan(), None, x, evaluate=mean_only, tolerance=-0.005,
                  significance=2.0)  # fmt: skip
    assert model[0].out_features == 6  # refused before anything stayed changed
    with pytest.raises(ConfigurationError, match="significance"):
        run_trial(model, grow_plan(), None, x, evaluate=judge(0.1), significance=-1.0)


def test_held_out_loss_per_sample_matches_the_mean():
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    x, y = torch.randn(10, 3), torch.randint(2, (10,))
    per = held_out_loss([(x[:4], y[:4]), (x[4:], y[4:])], nn.CrossEntropyLoss(), per_sample=True)
    mean = held_out_loss([(x[:4], y[:4]), (x[4:], y[4:])], nn.CrossEntropyLoss())
    assert per(model).shape == (10,) and per(model).mean().item() == pytest.approx(mean(model))


def test_an_interrupt_during_recovery_rolls_the_trial_back_and_propagates():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 1))
    before = {k: v.clone() for k, v in model.state_dict().items()}

    def interrupted(m, opt):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_trial(model, grow_plan(), None, torch.randn(8, 4), evaluate=lambda m: 1.0,
                  recover=interrupted)  # fmt: skip
    after = model.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)
