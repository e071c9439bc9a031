"""The planner the engine is handed: a protocol, a registry, the default found through the
``policies`` package's entry point, never through an import of it from ``engine/``."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn

from engine import NeuronEngine
from engine.errors import ConfigurationError
from engine.plan import PruneAction
from engine.planning import Decision, Planner, get_planner, make_plan, register_planner


class DropFirstUnit:
    """A planner of the user's own: always prunes unit 0 of the first layer."""

    def __init__(self) -> None:
        self.calls = []

    def decide(self, snapshot, layout, config=None, *, ages=None):
        self.calls.append((sorted(snapshot.layers), sorted(layout.layers), config, ages))
        first = next(iter(layout.layers.values()))
        action = PruneAction(layer=first.name, local_indices=[0],
                             neuron_ids=[first.neuron_ids[0]], reason="user rule",
                             policy="drop_first")  # fmt: skip
        return Decision([action], [{"name": "drop_first", "settings": {}}], ["a user note"])


def tracked_mlp():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    engine = NeuronEngine(model)
    with engine.tracking():
        model(torch.randn(64, 4))
    return model, engine


def test_a_user_planner_makes_the_plan_and_surgery_applies_it():
    model, engine = tracked_mlp()
    planner = DropFirstUnit()
    assert isinstance(planner, Planner)
    plan = engine.propose({"anything": 1}, planner=planner, epoch=2)
    assert planner.calls == [(["0", "2"], ["0", "2"], {"anything": 1}, {})]
    assert [a.policy for a in plan.actions()] == ["drop_first"]
    assert plan.metadata.policies[0]["name"] == "drop_first"
    assert plan.metadata.notes == ["a user note"]
    engine.apply(plan)
    assert model[0].out_features == 7
    assert engine.neurons.ids("0") == list(range(1, 8))


def test_registered_by_name_and_refused_when_not_a_planner():
    register_planner(DropFirstUnit(), "drop_first_test")
    assert isinstance(get_planner("drop_first_test"), DropFirstUnit)
    with pytest.raises(ConfigurationError, match="is not a planner"):
        register_planner(object(), "broken")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match=r"no planner named 'nope'"):
        get_planner("nope")


def test_make_plan_keeps_the_callers_notes_first():
    _, engine = tracked_mlp()
    plan = make_plan(engine.snapshot(), engine.model_layout(), planner=DropFirstUnit(),
                     notes=["caller"])  # fmt: skip
    assert plan.metadata.notes == ["caller", "a user note"]


def test_the_default_planner_is_found_without_importing_policies_first():
    """In a fresh process that never imports ``policies``, ``engine.propose()`` finds the
    default planner through the installed entry point (package metadata)."""
    code = textwrap.dedent(
        """
        import sys, torch, torch.nn as nn
        from engine import NeuronEngine
        assert "policies" not in sys.modules
        model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
        with torch.no_grad():
            model[0].bias[:2] = -100.0
        engine = NeuronEngine(model)
        with engine.tracking():
            model(torch.randn(256, 4))
        plan = engine.propose({"policies": [{"name": "dead"}]})
        from engine.planning import get_planner
        print(plan.prune[0].local_indices, type(get_planner()).__name__)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["[0,", "1]", "PolicyPlanner"], out.stdout
