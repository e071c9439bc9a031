"""Neuron IDs: stable, never reused, lineage recorded across removal, merge and growth."""

from __future__ import annotations

import pytest
from torch import nn

from engine import ConfigurationError, NeuronEngine, NeuronNotFoundError, NeuronRegistry
from engine.errors import LayerNotFoundError


def test_ids_are_consecutive_in_module_order_like_selfmodifying_slm():
    model = nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(),
                          nn.Linear(128, 10))  # fmt: skip
    engine = NeuronEngine(model)
    ids = engine.neurons.as_dict()
    assert list(ids) == ["0", "2", "4"]
    assert ids["0"] == list(range(256)) and ids["4"] == list(range(384, 394))
    assert engine.neurons.total == 394
    # The SelfModifyingSLM fixture names neuron 385 as layer "4", local index 1.
    assert engine.neurons.locate(385) == ("4", 1)
    assert engine.neurons.id_of("2", 18) == 274


def test_removal_merge_and_growth_keep_ids_stable():
    reg = NeuronRegistry()
    reg.add_layer("a", 4)
    reg.add_layer("b", 2)
    assert reg.remove("a", [3, 1], merged_into=[0, -1]) == [3, 1]
    assert reg.ids("a") == [0, 2]
    assert reg.locate(2) == ("a", 1)
    assert reg.lineage[3] == {"event": "merged", "layer": "a", "into": 0}
    assert reg.lineage[1] == {"event": "removed", "layer": "a"}
    new = reg.grow("a", parents=[2, 2])
    assert new == [6, 7]  # never reuses 1 or 3
    assert reg.ids("a") == [0, 2, 6, 7] and reg.locate(7) == ("a", 3)
    assert reg.lineage[6] == {"event": "grown", "layer": "a", "parent": 2}
    with pytest.raises(NeuronNotFoundError, match=r"neuron 3 is not a live neuron.*merged"):
        reg.locate(3)


def test_state_dict_round_trip():
    reg = NeuronRegistry()
    reg.add_layer("a", 3)
    reg.remove("a", [0])
    reg.grow("a", 1)
    back = NeuronRegistry.from_state_dict(reg.state_dict())
    assert back.as_dict() == reg.as_dict() and back.next_id == reg.next_id
    assert back.lineage == reg.lineage


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda r: r.ids("nope"), LayerNotFoundError, "layer 'nope' is not tracked"),
        (lambda r: r.id_of("a", 5), NeuronNotFoundError, "local index 5 is out of range"),
        (lambda r: r.remove("a", [0, 0]), ConfigurationError, "duplicate local indices"),
        (lambda r: r.remove("a", [9]), NeuronNotFoundError, r"indices \[9\] are out of range"),
        (lambda r: r.add_layer("a", 1), ConfigurationError, "already registered"),
        (lambda r: r.grow("a", parents=[0], count=2), ConfigurationError, "one parent ID"),
    ],
)
def test_misuse_is_refused_with_a_clear_message(call, error, message):
    reg = NeuronRegistry()
    reg.add_layer("a", 3)
    before = reg.state_dict()
    with pytest.raises(error, match=message):
        call(reg)
    assert reg.state_dict() == before


def test_locate_names_the_neuron_a_merged_unit_was_folded_into():
    reg = NeuronRegistry()
    reg.add_layer("a", 4)
    reg.remove("a", [3, 1], merged_into=[2, -1])
    with pytest.raises(NeuronNotFoundError, match=r"neuron 3 .* merged into neuron 2 in layer 'a'"):
        reg.locate(3)
    with pytest.raises(NeuronNotFoundError, match=r"neuron 1 .* removed from layer 'a'"):
        reg.locate(1)
