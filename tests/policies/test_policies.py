"""Policies on planted statistics: dead, duplicates, saturation, budget folds, guards."""

from __future__ import annotations

import pytest
import torch
from mlp_fixtures import apply_masked, linear_chain_layout
from torch import nn

from engine import NeuronEngine
from policies import (
    BudgetPolicy,
    DeadUnitPolicy,
    GuardSettings,
    LowActivityPolicy,
    PolicyConfig,
    RedundancyPolicy,
    SaturationPolicy,
    propose_actions,
)


def _planted(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, 3)
    )
    with torch.no_grad():
        model[0].bias[[3, 7]] = -1e4  # dead units 3 and 7
        model[2].weight[5] = model[2].weight[1]  # exact duplicate of unit 1
        model[2].bias[5] = model[2].bias[1]
        model[2].weight[9] = 2.5 * model[2].weight[2]  # positively scaled copy of unit 2
        model[2].bias[9] = 2.5 * model[2].bias[2]
    return model


def _track(model: nn.Module, n: int = 512, correlation=True) -> NeuronEngine:
    engine = NeuronEngine(model, correlation=correlation)
    with engine.tracking(), torch.no_grad():
        for x in torch.randn(n, 8).split(64):
            model(x)
    return engine


def test_planted_dead_units_are_pruned_exactly_and_the_fold_is_exact():
    model = _planted()
    engine = _track(model)
    layout = linear_chain_layout(engine)
    actions = DeadUnitPolicy().propose(engine.snapshot(), layout)
    assert [(a.layer, a.local_indices, a.reason) for a in actions] == [("0", [3, 7], "dead")]
    assert actions[0].neuron_ids == [3, 7] and actions[0].constant_values == [0.0, 0.0]
    x = torch.randn(64, 8)
    torch.testing.assert_close(apply_masked(model, actions)(x), model(x), rtol=0, atol=1e-6)


def test_planted_duplicates_are_merged_with_alpha_beta_recovered():
    model = _planted()
    engine = _track(model)
    actions = RedundancyPolicy(threshold=0.999).propose(
        engine.snapshot(), linear_chain_layout(engine)
    )
    merges = {frozenset((a.keep, a.remove)): a for a in actions if a.layer == "2"}
    exact, scaled = merges[frozenset((1, 5))], merges[frozenset((2, 9))]
    assert exact.correlation > 0.999999 and scaled.correlation > 0.999999
    assert exact.alpha == pytest.approx(1.0, abs=1e-6) and exact.beta == pytest.approx(0, abs=1e-6)
    if scaled.keep == 2:  # a_9 = 2.5·a_2
        assert scaled.alpha == pytest.approx(2.5, abs=1e-6)
    else:
        assert scaled.alpha == pytest.approx(0.4, abs=1e-6)
    assert scaled.beta == pytest.approx(0.0, abs=1e-6)
    x = torch.randn(64, 8)
    merged = apply_masked(model, [exact, scaled])
    torch.testing.assert_close(merged(x), model(x), rtol=0, atol=1e-5)


def test_merges_never_overlap_and_use_each_unit_once():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(8, 12), nn.ReLU(), nn.Linear(12, 2))
    with torch.no_grad():  # three copies of unit 0: pairs (0,1), (0,2), (1,2) all ρ = 1
        model[0].weight[1:3] = model[0].weight[0]
        model[0].bias[1:3] = model[0].bias[0]
    engine = _track(model, n=256)
    snap = engine.snapshot()
    layout = linear_chain_layout(engine)
    actions = RedundancyPolicy(threshold=0.999).propose(snap, layout)
    units = [u for a in actions for u in (a.keep, a.remove)]
    assert len(units) == len(set(units))
    assert len(actions) == 1


def test_saturated_layer_is_expanded_within_its_cap():
    torch.manual_seed(2)
    model = nn.Sequential(nn.Linear(8, 10), nn.ReLU(), nn.Linear(10, 3))
    with torch.no_grad():
        model[0].bias.fill_(50.0)  # every unit always fires
    engine = _track(model)
    layout = linear_chain_layout(engine)
    (action,) = SaturationPolicy(growth_fraction=0.5, max_width=13).propose(
        engine.snapshot(), layout
    )
    assert (action.layer, action.count, action.init) == ("0", 3, "net2net")
    assert len(action.source_indices) == 3 and action.reason == "high_firing"
    assert SaturationPolicy(max_width=10).propose(engine.snapshot(), layout) == []


def test_bounded_saturation_triggers_expand():
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(8, 6), nn.Sigmoid(), nn.Linear(6, 2))
    with torch.no_grad():
        model[0].weight.mul_(100)  # sigmoid pinned at 0 or 1
    engine = _track(model)
    (action,) = SaturationPolicy(init="zero_outgoing").propose(
        engine.snapshot(), linear_chain_layout(engine)
    )
    assert action.reason == "saturated" and action.source_indices is None


def test_output_layer_is_never_pruned_and_no_layer_is_emptied():
    torch.manual_seed(4)
    model = nn.Sequential(nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 3))
    with torch.no_grad():
        model[0].bias.fill_(-1e4)  # the whole hidden layer is dead
        model[2].weight[1].zero_()  # a constant logit
    engine = _track(model)
    layout = linear_chain_layout(engine)
    cfg = PolicyConfig([DeadUnitPolicy(), LowActivityPolicy()], GuardSettings(min_width=2))
    actions = propose_actions(engine.snapshot(), layout, cfg)
    assert all(a.layer != "2" for a in actions)
    removed = sum(len(a.local_indices) for a in actions if a.layer == "0")
    assert removed == 4  # 6 units, min_width 2


def test_protected_layers_are_left_alone():
    model = _planted()
    engine = _track(model)
    cfg = PolicyConfig([DeadUnitPolicy()], GuardSettings(protected=["0"]))
    assert propose_actions(engine.snapshot(), linear_chain_layout(engine), cfg) == []


def test_low_activity_uses_the_dormancy_score():
    torch.manual_seed(5)
    model = nn.Sequential(nn.Linear(8, 10), nn.ReLU(), nn.Linear(10, 2))
    with torch.no_grad():
        model[0].weight[4].mul_(1e-3)  # dormant but alive unit
        model[0].bias[4] = 0.0
    engine = _track(model)
    actions = LowActivityPolicy(dormancy_threshold=0.05).propose(
        engine.snapshot(), linear_chain_layout(engine)
    )
    assert [(a.layer, a.local_indices) for a in actions] == [("0", [4])]
    assert actions[0].evidence["dormancy_score"][0] < 0.05


def test_budget_fold_is_exact_when_removed_units_are_linear_in_kept_ones():
    torch.manual_seed(6)
    model = nn.Sequential(nn.Linear(8, 12), nn.ReLU(), nn.Linear(12, 12), nn.Linear(12, 3))
    # layer "2" has no nonlinearity after it: units 6..11 are exact linear combinations of 0..5
    with torch.no_grad():
        mix = torch.randn(6, 6)
        model[2].weight[6:] = mix @ model[2].weight[:6]
        model[2].bias[6:] = mix @ model[2].bias[:6]
    engine = _track(model, n=1024)
    layout = linear_chain_layout(engine)
    (fold,) = BudgetPolicy(remove_fraction=0.5, layers=["2"], ridge=1e-9).propose(
        engine.snapshot(), layout
    )
    assert len(fold.remove) == 6 and len(fold.keep) == 6
    assert fold.evidence["relative_cost"] < 1e-6
    x = torch.randn(64, 8)
    torch.testing.assert_close(apply_masked(model, [fold])(x), model(x), rtol=1e-4, atol=1e-4)


def test_budget_target_params_is_reached():
    model = _planted()
    engine = _track(model)
    layout = linear_chain_layout(engine)
    target = int(layout.total_params * 0.6)
    actions = BudgetPolicy(target_params=target).propose(engine.snapshot(), layout)
    removed = {a.layer: len(a.remove) for a in actions}
    assert set(removed) == {"0", "2"}
    assert layout.params_after(removed) <= target
    # the hand count agrees with params_after
    w0, w2 = 16 - removed["0"], 12 - removed["2"]
    assert layout.params_after(removed) == (8 + 1) * w0 + (w0 + 1) * w2 + (w2 + 1) * 3


def test_budget_needs_correlation():
    from engine import ConfigurationError

    engine = _track(_planted(), correlation=False)
    with pytest.raises(
        ConfigurationError, match=r"needs correlation state for layers \['0', '2'\]"
    ):
        BudgetPolicy(remove_fraction=0.3).propose(engine.snapshot(), linear_chain_layout(engine))


def _saturated_with_dead(seed: int = 7) -> nn.Sequential:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(8, 10), nn.ReLU(), nn.Linear(10, 3))
    with torch.no_grad():
        model[0].bias.fill_(50.0)  # every unit fires…
        model[0].bias[[0, 1]] = -1e4  # …but units 0 and 1 are dead
    return model


def _check_no_unit_in_two_actions(actions, layout):
    from engine.plan import Plan, validation_problems

    assert validation_problems(Plan.create(actions, layout), layout) == []


def test_saturation_sources_avoid_units_claimed_earlier_and_cycle_over_free_ones():
    engine = _track(_saturated_with_dead())
    layout = linear_chain_layout(engine)
    snap = engine.snapshot()
    # Dead claims 0 and 1 (and is allowed to go down to 1 unit); budget then folds most of the
    # rest; saturation may only copy units nobody claimed.
    cfg = PolicyConfig(
        [
            DeadUnitPolicy(min_samples=1),
            BudgetPolicy(fractions={"0": 0.5}, min_samples=1),
            SaturationPolicy(layer_fraction=0.5, growth_fraction=1.0, min_samples=1),
        ],
        GuardSettings(min_width=1),
    )
    actions = propose_actions(snap, layout, cfg)
    claimed = {u for a in actions if a.kind != "expand" for u in _units(a)}
    assert [a.kind for a in actions] == ["prune", "fold"]  # every unit of '0' claimed: no expand
    assert claimed == set(range(10))
    # By default a layer this plan shrinks is not also grown.
    grow = dict(layer_fraction=0.5, min_samples=1, growth_fraction=1.0)
    cfg = PolicyConfig([DeadUnitPolicy(min_samples=1), SaturationPolicy(**grow)],
                       GuardSettings(min_width=1))  # fmt: skip
    assert [a.kind for a in propose_actions(snap, layout, cfg)] == ["prune"]
    # Allowed to: the sources are the 8 free units (busiest first), cycled.
    cfg = PolicyConfig(
        [DeadUnitPolicy(min_samples=1), SaturationPolicy(**grow, skip_shrinking_layers=False)],
        GuardSettings(min_width=1),
    )
    prune, expand = propose_actions(snap, layout, cfg)
    assert prune.local_indices == [0, 1] and expand.count == 10
    assert not set(expand.source_indices) & {0, 1}
    assert sorted(expand.source_indices[:8]) == list(range(2, 10))  # each free unit once…
    assert expand.source_indices[:2] == expand.source_indices[8:]  # …then cycled
    assert expand.source_ids == [layout.layers["0"].neuron_ids[i] for i in expand.source_indices]
    _check_no_unit_in_two_actions([prune, expand], layout)


def test_saturation_sources_are_kept_by_later_policies_but_not_blocked_as_keep():
    engine = _track(_saturated_with_dead())
    layout = linear_chain_layout(engine)
    snap = engine.snapshot()
    sat = SaturationPolicy(layer_fraction=0.5, growth_fraction=0.3, min_samples=1)
    # Saturation first: its sources must survive dead, low_activity, redundancy and budget.
    for later in (
        DeadUnitPolicy(min_samples=1, firing_threshold=0.999),
        LowActivityPolicy(dormancy_threshold=10.0, max_fraction=1.0, min_samples=1),
        RedundancyPolicy(threshold=0.01, max_fraction=1.0, allow_negative=True, min_samples=1),
        BudgetPolicy(remove_fraction=0.8, min_samples=1),
    ):
        cfg = PolicyConfig([sat, later], GuardSettings(min_width=1))
        expand, *rest = propose_actions(snap, layout, cfg)
        assert expand.kind == "expand" and rest, later.name
        removed = {u for a in rest for u in _removed(a)}
        assert not removed & set(expand.source_indices), later.name
        _check_no_unit_in_two_actions([expand, *rest], layout)
    # The budget fold keeps the sources (reading them is fine): it still removes 8 of 10 at most
    (fold,) = rest
    assert set(expand.source_indices) <= set(fold.keep)


def _units(action):
    if action.kind == "prune":
        return list(action.local_indices)
    if action.kind == "merge":
        return [action.keep, action.remove]
    if action.kind == "fold":
        return [*action.keep, *action.remove]
    return list(action.source_indices or [])


def _removed(action):
    if action.kind == "prune":
        return list(action.local_indices)
    if action.kind == "merge":
        return [action.remove]
    if action.kind == "fold":
        return list(action.remove)
    return []


def test_budget_target_params_reports_whether_it_was_reached_and_needs_a_layout():
    from engine import ConfigurationError

    model = _planted()
    engine = _track(model)
    layout = linear_chain_layout(engine)
    actions = BudgetPolicy(target_params=1).propose(engine.snapshot(), layout)
    assert actions
    assert all(a.evidence["reached"] is False and a.evidence["target_params"] == 1 for a in actions)
    reachable = BudgetPolicy(target_params=int(layout.total_params * 0.7))
    assert all(a.evidence["reached"] for a in reachable.propose(engine.snapshot(), layout))
    snap = engine.snapshot()
    with pytest.raises(ConfigurationError, match="target_params needs a model layout"):
        BudgetPolicy(target_params=100).propose(snap, snap.planning_layout())


def test_budget_remove_fraction_zero_is_a_valid_no_op():
    engine = _track(_planted())
    policy = BudgetPolicy(remove_fraction=0.0)
    assert policy.propose(engine.snapshot(), linear_chain_layout(engine)) == []
