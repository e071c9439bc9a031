"""SurgerySchedule in trial mode backs off: a refused plan that grows is retried without
growth, a refused cut with a smaller removal step; the step reached is kept for the next
surgery and lengthened again after a kept cut; growth can be required to pay for itself."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from engine import NeuronEngine, SurgerySchedule
from engine.errors import ConfigurationError
from engine.plan.actions import ExpandAction, PruneAction
from policies import Policy, PolicySettings
from policies.config import PolicyConfig
from policies.guards import GuardSettings


class _FirstSettings(PolicySettings):
    fraction: float = 0.5


class _PruneFirst(Policy):
    """Test policy: remove the first ``fraction`` of layer "0"'s units."""

    name = "test_prune_first"
    Settings = _FirstSettings
    shrinks = True

    def scaled(self, factor):
        return self.with_settings(fraction=self.settings.fraction * factor)

    def propose(self, snapshot, layout, guard=None):
        layer = snapshot.layers["0"]
        count = math.floor(self.settings.fraction * layer.num_units)
        idx = list(range(count))
        if not idx:
            return []
        return [PruneAction(layer="0", local_indices=idx, reason="test",
                            neuron_ids=[layer.neuron_ids[i] for i in idx])]  # fmt: skip


class _GrowTwo(Policy):
    name = "test_grow_two"
    grows = True

    def propose(self, snapshot, layout, guard=None):
        return [ExpandAction(layer="2", count=2, init="zero_outgoing", reason="test")]


def setup(policies, evaluate, **options):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 32), nn.ReLU(), nn.Linear(32, 16), nn.ReLU(),
                          nn.Linear(16, 2))  # fmt: skip
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    engine = NeuronEngine(model)
    config = PolicyConfig(policies, GuardSettings(min_width=1, min_keep_fraction=0.0))
    options.setdefault("trial_options", {"abs_tolerance": 0.0})
    schedule = SurgerySchedule(engine, opt, config, every=1, evaluate=evaluate, **options)
    return model, engine, schedule


def epoch(model, engine, schedule, n):
    with engine.tracking():
        model(torch.randn(64, 4))
    return schedule.epoch_end(n)


def missing_units(model):  # the judge: each removed unit of layer 0 beyond 4 costs 1
    return float(max(0, 32 - model[0].out_features - 4))


def test_a_refused_step_is_halved_until_it_is_accepted_and_the_scale_is_kept():
    model, engine, schedule = setup([_PruneFirst(fraction=0.5)], missing_units)
    record = epoch(model, engine, schedule, 0)
    # 16 units refused, 8 refused, 4 accepted (the judge allows 4)
    assert [t.accepted for t in schedule.trials] == [False, False, True]
    assert [len(next(p.actions()).neuron_ids) for _, p in schedule.plans] == [16, 8, 4]
    assert record is schedule.records[0] and model[0].out_features == 28
    assert schedule.shrink_scale == 0.5  # kept at 0.25, so the next one may try twice that
    assert [[n for n in p.metadata.notes if "back-off" in n] for _, p in schedule.plans] == [
        [],
        ["shrinking policies' steps scaled by 0.5 (trial back-off)"],
        ["shrinking policies' steps scaled by 0.25 (trial back-off)"],
    ]
    epoch(model, engine, schedule, 1)  # the next surgery starts at the scale reached
    assert len(next(schedule.plans[3][1].actions()).neuron_ids) == 7  # ⌊0.5·0.5·28⌋


def test_a_refused_growing_plan_is_retried_without_growth_then_with_smaller_cuts():
    refuse_any_removal = lambda m: float(32 - m[0].out_features)  # noqa: E731
    model, engine, schedule = setup(
        [_PruneFirst(fraction=0.5), _GrowTwo()], refuse_any_removal, min_shrink_scale=0.25
    )
    assert epoch(model, engine, schedule, 0) is None
    kinds = [sorted({a.kind for a in p.actions()}) for _, p in schedule.plans]
    assert kinds == [["expand", "prune"], ["prune"], ["prune"], ["prune"]]
    assert [len(p.prune) for _, p in schedule.plans] == [1, 1, 1, 1]
    assert not any(t.accepted for t in schedule.trials)
    assert model[0].out_features == 32 and model[2].out_features == 16
    assert schedule.shrink_scale == 0.25


def test_growth_must_lower_the_loss_by_min_growth_gain():
    def judge(model):  # each unit of layer 2 beyond 16 lowers the loss by 0.4 %
        return 1.0 - 0.004 * (model[2].out_features - 16)

    model, engine, schedule = setup([_GrowTwo()], judge, min_growth_gain=0.01)
    epoch(model, engine, schedule, 0)  # −0.8 %: not enough
    assert [t.accepted for t in schedule.trials] == [False] and model[2].out_features == 16
    assert "above the allowed -0.01" in schedule.trials[0].reason
    model, engine, schedule = setup([_GrowTwo()], judge, min_growth_gain=0.005)
    epoch(model, engine, schedule, 0)
    assert [t.accepted for t in schedule.trials] == [True] and model[2].out_features == 18
    with pytest.raises(ConfigurationError, match="min_growth_gain"):
        setup([], judge, min_growth_gain=1.5)


def test_a_refused_growth_only_plan_ends_the_retries():
    model, engine, schedule = setup([_GrowTwo()], lambda m: float(m[2].out_features))
    assert epoch(model, engine, schedule, 0) is None
    assert len(schedule.trials) == 1 and model[2].out_features == 16


def test_retries_reuse_the_recovered_baseline():
    calls = []

    def recover(model, opt):
        calls.append(model[0].out_features)

    model, engine, schedule = setup(
        [_PruneFirst(fraction=0.5)], missing_units, recover=recover,
        trial_options={"abs_tolerance": 0.0, "baseline": "recovered"},
    )  # fmt: skip
    epoch(model, engine, schedule, 0)
    # baseline once (32 units), then each of the three trials once: 16, 24, 28 units
    assert calls == [32, 16, 24, 28]
    assert len({t.loss_before for t in schedule.trials}) == 1


def test_back_off_settings_are_checked():
    with pytest.raises(ConfigurationError, match="backoff"):
        setup([], missing_units, backoff=1.0)
    with pytest.raises(ConfigurationError, match="min_shrink_scale"):
        setup([], missing_units, min_shrink_scale=0.0)


def test_propose_checks_the_scale_and_zero_leaves_only_growth():
    model, engine, _ = setup([], missing_units)
    with engine.tracking():
        model(torch.randn(64, 4))
    config = PolicyConfig([_PruneFirst(), _GrowTwo()], GuardSettings(min_width=1))
    with pytest.raises(ConfigurationError, match="shrink_scale"):
        engine.propose(config, shrink_scale=1.5)
    kinds = [a.kind for a in engine.propose(config, shrink_scale=0.0).actions()]
    assert kinds == ["expand"]


def test_before_shrink_start_only_growth_is_proposed():
    model, engine, schedule = setup([_PruneFirst(fraction=0.5), _GrowTwo()],
                                    lambda m: 0.0, shrink_start=1)  # fmt: skip
    epoch(model, engine, schedule, 0)
    assert [sorted({a.kind for a in p.actions()}) for _, p in schedule.plans] == [["expand"]]
    epoch(model, engine, schedule, 1)
    assert sorted({a.kind for a in schedule.plans[-1][1].actions()}) == ["expand", "prune"]
    assert schedule.shrink_scale == 1.0


def test_the_cut_budget_adds_up_the_rises_of_kept_cuts():
    def judge(model):  # every removed unit of layer 0 raises the loss by 0.2 %
        return 1.0 + 0.002 * (32 - model[0].out_features)

    model, engine, schedule = setup(
        [_PruneFirst(fraction=0.125)], judge, cut_budget=0.01, min_shrink_scale=1.0,
        trial_options={"tolerance": 0.05},
    )  # fmt: skip
    epoch(model, engine, schedule, 0)  # 4 units: +0.8 %, within the budget of 1 %
    epoch(model, engine, schedule, 1)  # 3 more: +0.6 %, only 0.2 % left
    assert [t.accepted for t in schedule.trials] == [True, False]
    assert model[0].out_features == 28 and round(schedule.cut_budget_used, 6) == 0.008
    with pytest.raises(ConfigurationError, match="cut_budget"):
        setup([], judge, cut_budget=-0.1)


def test_a_cut_that_lowers_the_loss_gives_budget_back():
    def judge(model):  # removing units of layer 0 helps (say, they overfit)
        return 1.0 - 0.001 * (32 - model[0].out_features)

    model, engine, schedule = setup([_PruneFirst(fraction=0.125)], judge, cut_budget=0.01)
    epoch(model, engine, schedule, 0)
    assert schedule.trials[0].accepted and schedule.cut_budget_used == pytest.approx(-0.004)
