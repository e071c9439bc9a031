"""What the schedule's back-off asks of the planner: scaled cuts, no growth, and plans that
grow without cutting (``guards.shrink_while_growing: false``)."""

from __future__ import annotations

import pytest
import torch
from mlp_fixtures import linear_chain_layout
from torch import nn

from engine import NeuronEngine
from engine.errors import ConfigurationError
from engine.stats.growth import GradientCross
from policies import PolicyPlanner
from policies.config import parse_config
from policies.planner import scale_shrinking, without_growth

CONFIG = {
    "guards": {"min_width": 2, "min_keep_fraction": 0.0, "shrink_while_growing": False},
    "policies": [
        {"name": "loss_growth", "settings": {"min_gain_share": 0.0, "min_unit_gain": 0.0}},
        {"name": "dead"},
        {"name": "budget", "settings": {"target_fraction": 0.6}},
    ],
}


def snapshot_and_layout(growth: bool):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 12), nn.ReLU(), nn.Linear(12, 6), nn.ReLU(), nn.Linear(6, 3))
    with torch.no_grad():
        model[0].bias[:2] = -100.0  # two dead units in layer 0
    engine = NeuronEngine(model, correlation=True)
    with engine.tracking():
        model(torch.randn(256, 5))
    snap = engine.snapshot(loss=0.5)
    if growth:
        m = torch.randn(6, 5, dtype=torch.float64)
        snap.layers["0"].growth = GradientCross("2", 20, m * 20)
    return snap, linear_chain_layout(engine)


def kinds(decision):
    return sorted((a.kind, a.layer) for a in decision.actions)


def test_a_plan_that_grows_cuts_nothing_but_dead_units():
    snap, layout = snapshot_and_layout(growth=True)
    decision = PolicyPlanner().decide(snap, layout, CONFIG)
    assert ("expand", "0") in kinds(decision) and ("prune", "0") in kinds(decision)
    assert {a.policy for a in decision.actions if a.kind != "expand"} == {"dead"}
    assert any("budget: stood down" in n for n in decision.notes)


def test_without_growth_the_budget_cuts_and_growth_is_left_out():
    snap, layout = snapshot_and_layout(growth=True)
    snap.metadata["grow"] = False
    decision = PolicyPlanner().decide(snap, layout, CONFIG)
    assert "expand" not in {k for k, _ in kinds(decision)}
    assert {"fold"} <= {k for k, _ in kinds(decision)}
    assert "growing policies left out (trial back-off)" in decision.notes
    assert [p.name for p in without_growth(parse_config(CONFIG)).policies] == ["dead", "budget"]


def test_by_default_cuts_still_run_after_growth():
    snap, layout = snapshot_and_layout(growth=True)
    config = {**CONFIG, "guards": {"min_width": 2, "min_keep_fraction": 0.0}}
    decision = PolicyPlanner().decide(snap, layout, config)
    assert ("expand", "0") in kinds(decision)
    assert "fold" in {k for k, _ in kinds(decision)}
    assert not any("stood down" in n for n in decision.notes)


def test_scaling_reaches_the_budget_and_zero_drops_every_cut():
    cfg = parse_config(CONFIG)
    half = scale_shrinking(cfg, 0.5)
    assert [p.name for p in half.policies] == ["loss_growth", "dead", "budget"]
    assert half.policies[2].settings.step_scale == 0.5
    assert [p.name for p in scale_shrinking(cfg, 0.0).policies] == ["loss_growth"]
    with pytest.raises(ConfigurationError, match="shrink_scale"):
        scale_shrinking(cfg, 2.0)
