"""Which layers are tracked: include/exclude selectors, correlation selectors, errors."""

from __future__ import annotations

import re

import pytest
import torch
from engine_models import make_cnn_bn, seeded
from torch import nn

from engine import (
    ConfigurationError,
    CorrelationLimitError,
    LayerKind,
    NeuronEngine,
    SnapshotError,
    register_layer_kind,
)
from engine.selection import discover_layers, matches


class Net(nn.Module):
    """encoder.{fc1, fc2} (Linear), conv (Conv1d), attn (MultiheadAttention), head (Linear)."""

    def __init__(self) -> None:
        super().__init__()
        with seeded(300):
            self.encoder = nn.ModuleDict({"fc1": nn.Linear(4, 6), "fc2": nn.Linear(6, 8)})
            self.conv = nn.Conv1d(8, 8, 1)
            self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
            self.head = nn.Linear(8, 3)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, T, 4)
        h = self.act(self.encoder["fc1"](x))
        h = self.act(self.encoder["fc2"](h))
        h = self.conv(h.transpose(1, 2)).transpose(1, 2)
        h, _ = self.attn(h, h, h)
        return self.head(h)


ALL = ["encoder.fc1", "encoder.fc2", "conv", "attn", "head"]


def _x() -> torch.Tensor:
    with seeded(301):
        return torch.randn(2, 3, 4)


def names(**kw) -> list[str]:
    return list(NeuronEngine(Net(), **kw).layers)


def test_default_tracks_every_trackable_layer_in_module_order() -> None:
    assert names() == ALL
    assert list(discover_layers(Net())) == ALL


@pytest.mark.parametrize(
    ("kw", "expected"),
    [
        ({"include": "head"}, ["head"]),
        ({"include": ["head", "encoder.fc1"]}, ["encoder.fc1", "head"]),  # module order
        ({"include": "encoder.*"}, ["encoder.fc1", "encoder.fc2"]),
        ({"include": "*fc?"}, ["encoder.fc1", "encoder.fc2"]),
        ({"include": nn.Linear}, ["encoder.fc1", "encoder.fc2", "head"]),
        ({"include": (nn.Conv1d, nn.MultiheadAttention)}, ["conv", "attn"]),
        ({"include": [nn.Conv1d, "head"]}, ["conv", "head"]),
        ({"exclude": "head"}, ["encoder.fc1", "encoder.fc2", "conv", "attn"]),
        ({"exclude": "encoder.*"}, ["conv", "attn", "head"]),
        ({"exclude": nn.Linear}, ["conv", "attn"]),
        ({"exclude": [nn.MultiheadAttention, "conv"]}, ["encoder.fc1", "encoder.fc2", "head"]),
        ({"include": nn.Linear, "exclude": "encoder.fc2"}, ["encoder.fc1", "head"]),
        ({"include": "encoder.*", "exclude": "*2"}, ["encoder.fc1"]),
    ],
)
def test_include_exclude(kw: dict, expected: list[str]) -> None:
    assert names(**kw) == expected


def test_selected_layers_get_consecutive_ids() -> None:
    engine = NeuronEngine(Net(), include=["encoder.fc2", "head"])
    assert engine.neurons.ids("encoder.fc2") == list(range(8))
    assert engine.neurons.ids("head") == list(range(8, 11))
    with engine.tracking():
        Net.forward(engine.model, _x())
    assert engine.snapshot().samples_seen == {"encoder.fc2": 6, "head": 6}


def test_fnmatch_is_case_sensitive() -> None:
    assert matches("encoder.fc1", nn.Linear(1, 1), "encoder.*")
    assert not matches("encoder.fc1", nn.Linear(1, 1), "ENCODER.*")
    assert matches("encoder.fc1", nn.Linear(1, 1), nn.Module)
    assert not matches("encoder.fc1", nn.Linear(1, 1), None)


@pytest.mark.parametrize("include", ["encoder.fc3", ["head", "decoder.*"], "Head"])
def test_include_matching_nothing_names_it(include) -> None:
    bad = include if isinstance(include, str) else include[1]
    with pytest.raises(ConfigurationError, match=re.escape(repr(bad))) as info:
        NeuronEngine(Net(), include=include)
    assert "matches no trackable layer" in str(info.value)
    assert "'encoder.fc1'" in str(info.value)  # the message lists what could be tracked


def test_include_of_multihead_attention_descendant_raises() -> None:
    with pytest.raises(ConfigurationError, match=re.escape("'attn.out_proj'")):
        NeuronEngine(Net(), include="attn.out_proj")


def test_include_error_lists_only_really_trackable_layers() -> None:
    with pytest.raises(ConfigurationError) as info:
        NeuronEngine(Net(), include="attn.out_proj")
    listed = str(info.value).split("trackable layers are:")[1]
    assert "out_proj" not in listed


@pytest.mark.parametrize("kw", [{"include": 3}, {"exclude": 3.5}, {"correlation": 7}])
def test_scalar_selector_of_wrong_type_raises_configuration_error(kw: dict) -> None:
    with pytest.raises(ConfigurationError):
        NeuronEngine(Net(), **kw)


@pytest.mark.parametrize("kw", [{"include": [3]}, {"exclude": ["head", 2.0]}])
def test_selector_item_of_wrong_type_raises(kw: dict) -> None:
    with pytest.raises(ConfigurationError, match="must be a name, a pattern or a module type"):
        NeuronEngine(Net(), **kw)


def test_multihead_attention_descendants_not_tracked() -> None:
    for kw in ({}, {"include": nn.Linear}, {"exclude": "attn"}, {"exclude": nn.MultiheadAttention}):
        tracked = names(**kw)
        assert not any(n.startswith("attn.") for n in tracked), (kw, tracked)
    engine = NeuronEngine(Net())
    assert engine.neurons.size("attn") == 8
    with engine.tracking():
        engine.model(_x())
    assert engine.layer_stats("attn").count == 6


def test_transformer_attention_projections_not_tracked() -> None:
    model = nn.TransformerEncoderLayer(8, 2, 16, batch_first=True)
    assert list(NeuronEngine(model).layers) == ["self_attn", "linear1", "linear2"]
    assert list(NeuronEngine(model, include=nn.Linear).layers) == ["linear1", "linear2"]


@pytest.mark.parametrize(
    "model",
    [
        nn.Sequential(nn.ReLU(), nn.Dropout()),
        nn.Sequential(nn.BatchNorm1d(3), nn.LayerNorm(3)),
        nn.Module(),
    ],
    ids=["activations", "norms", "empty"],
)
def test_no_trackable_layer_raises(model: nn.Module) -> None:
    with pytest.raises(ConfigurationError, match="no trackable layer") as info:
        NeuronEngine(model)
    assert "register_layer_kind" in str(info.value)


def test_everything_excluded_raises() -> None:
    with pytest.raises(ConfigurationError, match="no trackable layer"):
        NeuronEngine(Net(), exclude="*")
    with pytest.raises(ConfigurationError, match="no trackable layer"):
        NeuronEngine(Net(), include=nn.Conv3d)  # a type that matches nothing


def test_non_module_and_bad_arguments_raise() -> None:
    with pytest.raises(ConfigurationError, match=r"expects an nn\.Module"):
        NeuronEngine(lambda x: x)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="saturation_tolerance"):
        NeuronEngine(Net(), saturation_tolerance=0.5)
    with pytest.raises(ConfigurationError, match="saturation_tolerance"):
        NeuronEngine(Net(), saturation_tolerance=-0.1)


class _Gate(nn.Module):
    """A custom layer type holding ``n`` units (registered below, used only in this file)."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.n = n
        self.scale = nn.Parameter(torch.ones(n))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale


def test_registered_custom_type_is_tracked_and_selectable() -> None:
    register_layer_kind(_Gate, LayerKind("gate", units=lambda m: m.n))
    model = nn.Sequential(nn.Linear(4, 5), _Gate(5), nn.ReLU())
    engine = NeuronEngine(model)
    assert engine.layout == [("0", 5), ("1", 5)]
    assert engine.observation_points()["1"]["hook"] == "2"
    assert list(NeuronEngine(model, include=_Gate).layers) == ["1"]
    with pytest.raises(ConfigurationError, match=r"expects an nn\.Module subclass"):
        register_layer_kind(int, LayerKind("bad", units=lambda m: 0))


# --- correlation as a selector -------------------------------------------------------------
@pytest.mark.parametrize(
    ("correlation", "with_corr"),
    [
        (True, set(ALL)),
        (False, set()),
        ("head", {"head"}),
        (["encoder.fc1", "conv"], {"encoder.fc1", "conv"}),
        ("encoder.*", {"encoder.fc1", "encoder.fc2"}),
        (nn.Linear, {"encoder.fc1", "encoder.fc2", "head"}),
        ([nn.MultiheadAttention, "head"], {"attn", "head"}),
    ],
)
def test_correlation_selector(correlation, with_corr: set[str]) -> None:
    engine = NeuronEngine(Net(), correlation=correlation)
    with engine.tracking():
        engine.model(_x())
    snap = engine.snapshot()
    for name, layer in snap.layers.items():
        if name in with_corr:
            assert layer.comoments is not None, name
            assert layer.comoments.n == 6
            assert layer.pearson().shape == (layer.num_units, layer.num_units)
        else:
            assert layer.comoments is None, name
            with pytest.raises(SnapshotError, match=re.escape(repr(name))):
                layer.pearson()


def test_correlation_selector_works_with_include() -> None:
    engine = NeuronEngine(Net(), include=nn.Linear, correlation=["head", "conv"])
    assert [n for n, layer in engine.layers.items() if layer.accumulator.correlation] == ["head"]


def test_correlation_selector_matching_nothing_raises() -> None:
    with pytest.raises(ConfigurationError, match="hed"):
        NeuronEngine(Net(), correlation=["hed"])


def test_correlation_limit_names_the_layer() -> None:
    model = make_cnn_bn(c1=8, c2=6, n_out=4)  # layers '0' (8), '3' (6), '8' (4)
    with pytest.raises(CorrelationLimitError, match=r"layer '0' has 8 units") as info:
        NeuronEngine(model, correlation=True, max_correlation_units=7)
    assert "max_correlation_units=7" in str(info.value)
    assert isinstance(info.value, ValueError)
    with pytest.raises(CorrelationLimitError, match=r"layer '3' has 6 units"):
        NeuronEngine(model, correlation=["3", "8"], max_correlation_units=5)


def test_correlation_limit_not_applied_to_unselected_layers() -> None:
    model = make_cnn_bn(c1=8, c2=6, n_out=4)
    engine = NeuronEngine(model, correlation=["3", "8"], max_correlation_units=6)
    assert {n: layer.accumulator.correlation for n, layer in engine.layers.items()} == {
        "0": False,
        "3": True,
        "8": True,
    }
    engine = NeuronEngine(model, correlation=True, max_correlation_units=8)  # bound inclusive
    assert all(layer.accumulator.correlation for layer in engine.layers.values())


def test_exclude_matching_nothing_is_refused_as_a_typo() -> None:
    with pytest.raises(ConfigurationError, match=r"exclude='no\.such\.layer' matches no trackable"):
        NeuronEngine(Net(), exclude="no.such.layer")
