"""Every layer a policy wanted to change but left alone gets a note saying why."""

from __future__ import annotations

from test_budget_residual import GROUP_A, _model, _tracked

from policies import DeadUnitPolicy, PolicyConfig, RedundancyPolicy, propose_actions
from policies.guards import GuardSettings


def test_pruning_and_merging_policies_say_why_they_left_coupled_layers_alone():
    model, x = _model()
    engine = _tracked(model, x)
    snap, layout = engine.snapshot(), engine.model_layout()
    everything_dead = DeadUnitPolicy(constant_tolerance=1e9, min_samples=1)  # all "constant"
    merge_all = RedundancyPolicy(threshold=1e-6, allow_negative=True, min_samples=1)
    notes = []
    propose_actions(snap, layout, PolicyConfig([everything_dead, merge_all], GuardSettings()),
                    notes=notes)  # fmt: skip
    for name in GROUP_A:
        assert any(n.startswith(f"dead: layer {name!r}") and "coupled" in n for n in notes), name
        assert any(n.startswith(f"redundancy: layer {name!r}") for n in notes), name
    assert not any("'fc'" in n for n in notes)  # the output layer: nothing to explain
