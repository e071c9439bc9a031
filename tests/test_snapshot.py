"""Snapshots: save/load round trip (bitwise), validation of files, merge rules."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from engine import LayoutMismatchError, NeuronEngine, SnapshotError, StatsSnapshot


def _tracked_snapshot(seed: int = 0, correlation=True) -> StatsSnapshot:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(5, 6), nn.Tanh(), nn.Linear(6, 3))
    engine = NeuronEngine(model, correlation=correlation)
    with engine.tracking(), torch.no_grad():
        for _ in range(3):
            model(torch.randn(17, 5))
    return engine.snapshot(run="unit-test")


def test_round_trip_is_bitwise(tmp_path):
    snap = _tracked_snapshot()
    snap.save(tmp_path / "s")
    back = StatsSnapshot.load(tmp_path / "s")
    assert back.layout == snap.layout and back.metadata == {"run": "unit-test"}
    assert back.fingerprint() == snap.fingerprint()
    for name, layer in snap.layers.items():
        other = back.layers[name]
        assert other.count == layer.count and other.neuron_ids == layer.neuron_ids
        assert other.observation == layer.observation and other.bounds == layer.bounds
        for key, value in layer.moments.tensors().items():
            assert torch.equal(value, other.moments.tensors()[key]), key
        assert torch.equal(layer.comoments.c, other.comoments.c)


def test_summary_json_is_strict_json_with_layer_summaries(tmp_path):
    _tracked_snapshot().save(tmp_path)
    text = (tmp_path / "summary.json").read_text()
    data = json.loads(text)  # strict: no NaN literals
    assert "NaN" not in text
    assert data["format"] == "neuron-engine.stats" and data["version"] == 1
    assert [layer["name"] for layer in data["layers"]] == ["0", "2"]
    assert data["layers"][0]["observation"]["hook"] == "1"  # the Tanh module
    assert data["layers"][0]["bounds"] == [-1.0, 1.0]
    assert data["layers"][0]["summary"]["units"] == 6


def test_saturation_is_nan_for_unbounded_and_a_fraction_for_bounded():
    snap = _tracked_snapshot()
    assert torch.all((snap.layers["0"].saturation >= 0) & (snap.layers["0"].saturation <= 1))
    assert torch.isnan(snap.layers["2"].saturation).all()


def test_merge_rejects_different_layouts_and_thresholds():
    a = _tracked_snapshot()
    other_model = nn.Sequential(nn.Linear(5, 7))
    engine = NeuronEngine(other_model)
    with pytest.raises(LayoutMismatchError, match="different layers"):
        a.merge(engine.snapshot())
    b = _tracked_snapshot(1)
    b.firing_threshold = 0.5
    with pytest.raises(LayoutMismatchError, match="firing thresholds"):
        a.merge(b)
    with pytest.raises(LayoutMismatchError, match="correlation state"):
        a.merge(_tracked_snapshot(2, correlation=False))


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.pop("layers"), r"field 'layers': Field required"),
        (lambda d: d.update(format="other"), r"field 'format'"),
        (lambda d: d.update(surprise=1), r"field 'surprise': Extra inputs are not permitted"),
        (lambda d: d["layers"][0].update(neuron_ids=[1, 2]), r"array '0/mean' has shape \(6,\)"),
    ],
)
def test_malformed_summary_is_refused_with_the_field_named(tmp_path, mutate, message):
    _tracked_snapshot().save(tmp_path)
    data = json.loads((tmp_path / "summary.json").read_text())
    mutate(data)
    (tmp_path / "summary.json").write_text(json.dumps(data))
    with pytest.raises(SnapshotError, match=message):
        StatsSnapshot.load(tmp_path)


def test_missing_or_corrupt_files(tmp_path):
    with pytest.raises(SnapshotError, match=r"summary\.json: missing"):
        StatsSnapshot.load(tmp_path)
    _tracked_snapshot().save(tmp_path)
    (tmp_path / "stats.safetensors").write_bytes(b"\x00garbage")
    with pytest.raises(SnapshotError, match="not a readable safetensors file"):
        StatsSnapshot.load(tmp_path)
    (tmp_path / "summary.json").write_text("{not json")
    with pytest.raises(SnapshotError, match="not valid JSON"):
        StatsSnapshot.load(tmp_path)


def test_save_leaves_no_temporary_files(tmp_path):
    _tracked_snapshot().save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stats.safetensors", "summary.json"]


def test_engine_load_snapshot_continues_exactly():
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU())
    x = torch.randn(60, 4)
    full = NeuronEngine(model)
    with full.tracking(), torch.no_grad():
        model(x)
    first = NeuronEngine(model)
    with first.tracking(), torch.no_grad():
        model(x[:25])
    resumed = NeuronEngine(model)
    resumed.load_snapshot(first.snapshot())
    with resumed.tracking(), torch.no_grad():
        model(x[25:])
    a, b = resumed.snapshot().layers["0"], full.snapshot().layers["0"]
    assert a.count == b.count == 60
    torch.testing.assert_close(a.variance, b.variance, rtol=1e-6, atol=1e-9)
    with pytest.raises(LayoutMismatchError):
        NeuronEngine(nn.Sequential(nn.Linear(4, 5))).load_snapshot(first.snapshot())


def test_neuron_lookup_by_id():
    snap = _tracked_snapshot()
    info = snap.neuron(7)
    assert (info["layer"], info["local_index"], info["count"]) == ("2", 1, 51)
    with pytest.raises(KeyError, match="neuron 99"):
        snap.neuron(99)
