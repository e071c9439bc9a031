"""Snapshots: save/load round trip (bitwise), validation of files, merge rules."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from torch import nn

from engine import LayoutMismatchError, NeuronEngine, SnapshotError, StatsSnapshot
from engine.stats import CoMoments, Moments
from engine.stats.snapshot import LayerSnapshot


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
        (lambda d: d["layers"][0].update(neuron_ids=[1, 2]), r"do not belong together"),
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


# --- the two files of a snapshot belong together ---------------------------------------------
def _resave_arrays(folder, metadata):
    """Rewrite stats.safetensors with other metadata (what an older writer left, or none)."""
    from safetensors.torch import load_file, save_file

    tensors = load_file(folder / "stats.safetensors")
    save_file(tensors, folder / "stats.safetensors", metadata=metadata)


def test_arrays_of_another_save_are_refused_naming_both_files(tmp_path):
    _tracked_snapshot(0).save(tmp_path / "a")
    _tracked_snapshot(1).save(tmp_path / "b")
    shutil.copy(tmp_path / "b" / "stats.safetensors", tmp_path / "a" / "stats.safetensors")
    with pytest.raises(SnapshotError, match=r"stats\.safetensors and .*summary\.json"):
        StatsSnapshot.load(tmp_path / "a")


def test_arrays_without_a_digest_are_still_shape_checked(tmp_path):
    _tracked_snapshot().save(tmp_path)
    _resave_arrays(tmp_path, None)
    assert StatsSnapshot.load(tmp_path).layers["0"].count == 51
    data = json.loads((tmp_path / "summary.json").read_text())
    data["layers"][0]["neuron_ids"] = [1, 2]
    (tmp_path / "summary.json").write_text(json.dumps(data))
    with pytest.raises(SnapshotError, match=r"array '0/mean' has shape \(6,\)"):
        StatsSnapshot.load(tmp_path)


def test_comoments_with_fewer_samples_than_moments_round_trip(tmp_path):
    torch.manual_seed(0)
    x = torch.randn(100, 3, dtype=torch.float64)
    layer = LayerSnapshot(
        "fc", "Linear", [0, 1, 2], Moments.from_samples(x), CoMoments.from_samples(x[:10])
    )
    StatsSnapshot({"fc": layer}).save(tmp_path)
    back = StatsSnapshot.load(tmp_path).layers["fc"]
    assert back.count == 100 and back.comoments.n == 10
    assert torch.equal(back.comoments.covariance(), layer.comoments.covariance())


def test_summary_without_co_count_loads_with_the_moment_count(tmp_path):
    """Files written before ``co_count`` existed: the co-moments have ``count`` samples."""
    import hashlib

    _tracked_snapshot().save(tmp_path)
    data = json.loads((tmp_path / "summary.json").read_text())
    for rec in data["layers"]:
        del rec["co_count"]
    (tmp_path / "summary.json").write_text(json.dumps(data))
    digest = hashlib.sha256(json.dumps(data["layers"], sort_keys=True).encode()).hexdigest()
    _resave_arrays(tmp_path, {"layers": digest})
    back = StatsSnapshot.load(tmp_path).layers["0"]
    assert back.comoments.n == back.count == 51


# --- the layout saved beside the statistics ------------------------------------------------
def _engine(width: int, seed: int = 0) -> tuple[NeuronEngine, nn.Module]:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, width), nn.ReLU(), nn.Linear(width, 2))
    engine = NeuronEngine(model)
    with engine.tracking(), torch.no_grad():
        model(torch.randn(20, 4))
    return engine, model


def test_save_without_layout_removes_a_stale_layout(tmp_path):
    big, _ = _engine(32)
    big.snapshot(with_layout=True).save(tmp_path)
    assert (tmp_path / "layout.json").is_file()
    small, _ = _engine(8)
    small.snapshot().save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stats.safetensors", "summary.json"]
    back = StatsSnapshot.load(tmp_path)
    assert back.model_layout is None
    assert back.planning_layout().sizes == [("0", 8), ("2", 2)]


def test_layout_of_another_model_is_refused(tmp_path):
    big, _ = _engine(32)
    big.snapshot(with_layout=True).save(tmp_path / "big")
    small, _ = _engine(8)
    small.snapshot().save(tmp_path / "small")
    for name in ("layout.json", "layout.safetensors"):
        shutil.copy(tmp_path / "big" / name, tmp_path / "small" / name)
    message = r"layout\.json: layer '0' has 32 units in the saved layout and 8"
    with pytest.raises(SnapshotError, match=message):
        StatsSnapshot.load(tmp_path / "small")


def _edit_layout(folder, edit):
    path = folder / "layout.json"
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def _rename_layer_2(data):
    data["layers"][1]["name"] = "x"
    data["layers"][0]["consumers"][0]["tracked_layer"] = "x"


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d["layers"][0]["neuron_ids"].pop(), r"layer '0' has 8 units but 7 neuron IDs"),
        (lambda d: d["layers"][0]["supports"].append("grow"), r"unknown action kinds \['grow'\]"),
        (
            lambda d: d["layers"][0]["consumers"][0].update(tracked_layer="nope"),
            r"names tracked layer 'nope'",
        ),
        (
            lambda d: d["layers"][1].update(neuron_ids=[100, 101]),
            r"layer '2' has other neuron IDs in the saved layout",
        ),
        (_rename_layer_2, r"saved layout is of layers \['0', 'x'\]"),
    ],
)
def test_invalid_layout_records_are_refused(tmp_path, edit, message):
    engine, _ = _engine(8)
    engine.snapshot(with_layout=True).save(tmp_path)
    assert StatsSnapshot.load(tmp_path).model_layout is not None
    _edit_layout(tmp_path, edit)
    with pytest.raises(SnapshotError, match=message):
        StatsSnapshot.load(tmp_path)


# --- NeuronEngine.load_snapshot refuses what it cannot continue ------------------------------
def _source(**kw) -> StatsSnapshot:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    engine = NeuronEngine(model, **kw)
    with engine.tracking(), torch.no_grad():
        model(torch.randn(30, 4))
    return engine.snapshot()


def _target(**kw) -> NeuronEngine:
    return NeuronEngine(nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)), **kw)


@pytest.mark.parametrize(
    ("source", "target", "message"),
    [
        ({"firing_threshold": 0.5}, {}, r"firing_threshold=0\.5 .* firing_threshold=0\.0"),
        ({"saturation_tolerance": 0.1}, {}, r"saturation_tolerance=0\.1"),
        ({}, {"correlation": True}, r"layer '0': the snapshot has no correlation state"),
        ({"correlation": True}, {}, r"layer '0': the snapshot has correlation state"),
        ({"correlation": ["0"]}, {"correlation": ["2"]}, r"layer '0'"),
    ],
)
def test_load_snapshot_refuses_other_settings(source, target, message):
    snap = _source(**source)
    engine = _target(**target)
    with pytest.raises(LayoutMismatchError, match=message):
        engine.load_snapshot(snap)
    assert engine.snapshot().layers["0"].count == 0  # nothing was half-loaded


def test_load_snapshot_refuses_other_neuron_ids():
    snap = _source()
    engine = _target()
    layer = snap.layers["2"]
    layer.neuron_ids = [n + 100 for n in layer.neuron_ids]
    with pytest.raises(LayoutMismatchError, match=r"layer '2': the snapshot's neuron IDs differ"):
        engine.load_snapshot(snap)


def test_load_snapshot_with_matching_settings_is_accepted():
    snap = _source(firing_threshold=0.5, correlation=True)
    engine = _target(firing_threshold=0.5, correlation=True)
    engine.load_snapshot(snap)
    assert engine.snapshot().layers["0"].comoments.n == 30
