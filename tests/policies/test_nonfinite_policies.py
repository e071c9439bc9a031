"""Policies do not judge units whose statistics saw NaN or ±inf, and say so in the notes.

Before: one NaN batch made every statistic NaN and the plan empty without a word; one inf
batch made ``propose`` raise a raw pydantic ``ValidationError`` (a prune action's constant
was ``None``).
"""

from __future__ import annotations

import warnings
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from engine import NeuronEngine
from engine.errors import NonFiniteStatisticsError
from engine.layout import LayerLayout, ModelLayout
from engine.stats import Moments, merge_moments
from engine.stats.accumulator import NonFiniteStatisticsWarning
from engine.stats.snapshot import LayerSnapshot, StatsSnapshot
from policies import DeadUnitPolicy, PolicyConfig, SaturationPolicy, propose_actions
from policies.common import prune_units
from policies.guards import GuardSettings

NAN, INF = float("nan"), float("inf")


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc1, self.fc2, self.fc3 = nn.Linear(8, 16), nn.Linear(16, 16), nn.Linear(16, 4)
        with torch.no_grad():  # two dead units (0·NaN is NaN: a poisoned input reaches both)
            for unit in (3, 5):
                self.fc1.weight[unit] = 0.0
                self.fc1.bias[unit] = -1.0

    def forward(self, x):
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))


def _engine(bad: float | None) -> NeuronEngine:
    model = MLP()
    engine = NeuronEngine(model)
    gen = torch.Generator().manual_seed(0)
    with engine.tracking(), torch.no_grad():
        for i in range(8):
            x = torch.randn(32, 8, generator=gen)
            if bad is not None and i == 3:
                x[7, 2] = bad
            model(x)
    return engine


def _propose(engine: NeuronEngine):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NonFiniteStatisticsWarning)
        return engine.propose({"policies": [{"name": "dead"}, {"name": "low_activity"}]})


@pytest.mark.parametrize("bad", [NAN, INF, -INF])
def test_a_poisoned_batch_gives_a_plan_with_notes_not_an_error(bad):
    engine = _engine(bad)
    plan = _propose(engine)  # no pydantic ValidationError
    snap = engine.snapshot()
    tainted = {n: set(torch.nonzero(layer.nonfinite_units).flatten().tolist())
               for n, layer in snap.layers.items()}  # fmt: skip
    assert {3, 5} <= tainted["fc1"]  # 0·NaN, 0·inf: the dead units saw it too
    if bad != bad:  # NaN reaches every unit (relu(−inf) = 0 leaves some finite for ±inf)
        assert tainted["fc1"] == set(range(16))
    for action in plan.actions():
        assert not set(action.local_indices) & tainted[action.layer], action
    notes = [n for n in plan.metadata.notes if n.startswith("non-finite statistics")]
    assert notes and all("engine.reset()" in n for n in notes)
    fc1 = next(n for n in notes if "'fc1'" in n)
    count = len(tainted["fc1"])
    values = int(snap.layers["fc1"].nonfinite.sum())
    assert f"{count} of 16 unit(s) produced {values} non-finite value(s)" in fc1
    # without the poisoned batch the dead units are pruned (the test can fail)
    clean = _propose(_engine(None))
    assert any(a.layer == "fc1" and {3, 5} <= set(a.local_indices) for a in clean.actions())


def test_after_reset_and_clean_tracking_the_units_are_judged_again():
    engine = _engine(NAN)
    engine.reset()
    with engine.tracking(), torch.no_grad():
        engine.model(torch.randn(256, 8, generator=torch.Generator().manual_seed(3)))
    plan = _propose(engine)
    assert not [n for n in plan.metadata.notes if n.startswith("non-finite")]
    pruned = {i for a in plan.actions() if a.layer == "fc1" for i in a.local_indices}
    assert {3, 5} <= pruned


def _layout(width: int) -> ModelLayout:
    return ModelLayout({
        "fc": LayerLayout("fc", "Linear", width, list(range(width))),
        "out": LayerLayout("out", "Linear", 2, [100, 101], is_output=True),
    })  # fmt: skip


def _snapshot(*batches: torch.Tensor) -> StatsSnapshot:
    """Layer "fc" tracked over ``batches`` (one left out where it holds NaN/inf)."""
    moments = Moments.from_samples(batches[0])
    for batch in batches[1:]:
        moments = merge_moments(moments, Moments.from_samples(batch))
    width = batches[0].shape[1]
    fc = LayerSnapshot("fc", "Linear", list(range(width)), moments,
                       observation={"rectified": True})  # fmt: skip
    out = LayerSnapshot("out", "Linear", [100, 101], Moments.from_samples(torch.randn(8, 2)))
    return StatsSnapshot({"fc": fc, "out": out})


def test_a_tainted_dead_unit_is_kept_and_a_clean_one_pruned():
    x = torch.rand(200, 8) + 0.1
    x[:, [1, 4]] = 0.0  # both dead
    poisoned = x[:10].clone()
    poisoned[3, 4] = NAN  # unit 4 also produced a NaN, in a batch of its own
    notes: list[str] = []
    config = PolicyConfig([DeadUnitPolicy()], GuardSettings())
    actions = propose_actions(_snapshot(x, poisoned), _layout(8), config, notes=notes)
    assert [a.local_indices for a in actions] == [[1]]
    assert any("'fc': 1 of 8 unit(s) produced 1 non-finite value(s)" in n and "[4]" in n
               for n in notes)  # fmt: skip
    assert not any(n.startswith("dead:") for n in notes)  # no misleading "claimed" note
    # a policy called on its own (no planner guard) excludes the same units
    alone = DeadUnitPolicy().propose(_snapshot(x, poisoned), _layout(8))
    assert [a.local_indices for a in alone] == [[1]]


def test_a_layer_that_saw_only_nonfinite_rows_gets_a_note_and_no_action():
    x = torch.rand(150, 8)
    x[:, 0] = NAN
    snap = _snapshot(x[:100], x[100:])
    assert snap.layers["fc"].count == 0
    notes: list[str] = []
    grow = SaturationPolicy(unit_firing_rate=0.0, layer_fraction=0.0, min_samples=1)
    config = PolicyConfig([DeadUnitPolicy(min_samples=1), grow], GuardSettings())
    actions = propose_actions(snap, _layout(8), config, notes=notes)
    assert [a for a in actions if a.layer == "fc"] == []
    assert any("'fc': every batch held NaN or ±inf (150 non-finite value(s))" in n
               for n in notes)  # fmt: skip


def test_a_partly_tainted_layer_is_not_grown():
    x = torch.rand(200, 8) + 0.5  # every unit fires: saturation would grow the layer
    grow = SaturationPolicy(min_samples=1)
    config = PolicyConfig([grow], GuardSettings())
    assert [a.kind for a in propose_actions(_snapshot(x), _layout(8), config)] == ["expand"]
    poisoned = x[:5].clone()
    poisoned[3, 2] = INF
    notes: list[str] = []
    assert propose_actions(_snapshot(x, poisoned), _layout(8), config, notes=notes) == []
    assert any("the layer is not grown" in n for n in notes)


def test_an_overflowed_mean_is_not_judged_and_prune_units_refuses_it_typed():
    x = torch.rand(200, 4)
    x[:, 1] = 0.0
    snap = _snapshot(x)
    m = snap.layers["fc"].moments
    broken = replace(m, mean=torch.tensor([0.5, INF, 0.5, 0.5], dtype=torch.float64))
    snap.layers["fc"] = replace(snap.layers["fc"], moments=broken)  # nonfinite counts: zero
    notes: list[str] = []
    layout = _layout(4)
    config = PolicyConfig([DeadUnitPolicy()], GuardSettings(min_width=1))
    assert propose_actions(snap, layout, config, notes=notes) == []
    assert any("'fc': 1 of 4 unit(s)" in n for n in notes)
    with pytest.raises(NonFiniteStatisticsError, match=r"layer 'fc': units \[1\]"):
        prune_units("fc", snap.layers["fc"], [1], "dead", "custom")


def test_grown_units_with_unknown_statistics_are_not_reported():
    from engine.stats.remap import remap_moments

    x = torch.rand(200, 4) + 0.1
    snap = _snapshot(x)
    fc = snap.layers["fc"]
    grown = replace(fc, neuron_ids=[0, 1, 2, 3, 4], moments=remap_moments(fc.moments,
                    [0, 1, 2, 3], added=1))  # fmt: skip
    snap.layers["fc"] = grown
    notes: list[str] = []
    propose_actions(snap, _layout(5), PolicyConfig([DeadUnitPolicy()], GuardSettings()),
                    notes=notes)  # fmt: skip
    assert not any(n.startswith("non-finite") for n in notes)
