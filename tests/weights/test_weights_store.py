"""Snapshots on disk: chronological reload, unique names, metadata, dtype, retention, safety."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch
from safetensors import safe_open
from torch import nn

from engine.errors import EngineError
from engine.weights import (
    SnapshotStore,
    TensorNotFoundError,
    WeightSnapshotError,
    WeightTracker,
    capture_weights,
)


def small_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))


def test_reload_is_chronological_not_file_name_order(tmp_path):
    steps = list(range(0, 140, 10))  # 14 snapshots
    random.Random(7).shuffle(steps)  # captured out of order (e.g. runs merged into one folder)
    store = SnapshotStore(tmp_path)
    for step in steps:
        store.add(capture_weights(small_model(), name=f"epoch_{step // 10}", step=step))
    files = sorted(p.name for p in (tmp_path / "snapshots").glob("*.safetensors"))
    reloaded = SnapshotStore(tmp_path).snapshots()
    assert [s.step for s in reloaded] == sorted(steps)
    names_in_file_order = [f.split("-", 1)[1].removesuffix(".safetensors") for f in files]
    assert names_in_file_order != [s.name for s in reloaded]  # file order is not time order
    assert sorted(s.name for s in reloaded) != [s.name for s in reloaded]  # nor name order


def test_epoch_snapshots_without_step_interleave_with_step_snapshots(tmp_path):
    tracker = WeightTracker(small_model(), tmp_path)
    tracker.snapshot(step=0, epoch=0)
    tracker.snapshot(step=5)  # epoch inherited: 0
    tracker.on_epoch(1)  # step inherited: 5, then epoch 1 sorts after it
    tracker.snapshot(step=7)
    tracker.flush()  # another reader of the folder sees what is written
    order = [(s.epoch, s.step) for s in SnapshotStore(tmp_path).snapshots()]
    assert order == [(0, 0), (None, 5), (1, None), (None, 7)]


def test_rapid_snapshots_with_the_same_name_all_persist(tmp_path):
    store = SnapshotStore(tmp_path)
    model = small_model()
    for _ in range(25):
        store.add(capture_weights(model, name="same"))
    assert len(list((tmp_path / "snapshots").glob("*.safetensors"))) == 25
    assert len({s.entry.file for s in SnapshotStore(tmp_path).snapshots()}) == 25


def test_non_json_metadata_is_converted_and_reloads(tmp_path):
    tracker = WeightTracker(small_model(), tmp_path)
    tracker.snapshot(
        epoch=np.int64(2),
        loss=torch.tensor(0.5),
        lr=np.float32(0.25),
        acc=torch.tensor(0.75),
        flag=np.bool_(True),
        bad=float("nan"),
        path=tmp_path,
        obj=object,
    )
    tracker.flush()
    snap = SnapshotStore(tmp_path).snapshots()[0]
    assert (snap.epoch, snap.loss) == (2, 0.5)
    assert snap.metadata["lr"] == 0.25 and snap.metadata["acc"] == 0.75
    assert snap.metadata["flag"] is True and snap.metadata["bad"] is None
    assert snap.metadata["path"] == str(tmp_path) and "object" in snap.metadata["obj"]


def test_float16_storage_and_lazy_tensor_reads(tmp_path):
    model = small_model()
    tracker = WeightTracker(model, tmp_path, dtype=torch.float16)
    tracker.snapshot()
    tracker.flush()
    snap = SnapshotStore(tmp_path).snapshots()[0]
    assert snap._tensors is None  # nothing read yet
    w = snap.tensor("0.weight")
    assert w.dtype == torch.float16
    torch.testing.assert_close(w.float(), model[0].weight.detach(), atol=1e-3, rtol=1e-3)
    assert snap.tensor("1.num_batches_tracked").dtype == torch.int64  # integers kept
    with pytest.raises(TensorNotFoundError, match="no tensor 'nope'"):
        snap.tensor("nope")


def test_retention_keeps_last_every_nth_and_surgery_snapshots(tmp_path):
    tracker = WeightTracker(small_model(), tmp_path, keep_last=2, keep_every=5)
    for step in range(12):
        tracker.snapshot(step=step, pinned=step == 3)
    kept = [s.step for s in tracker.snapshots()]
    assert kept == [0, 3, 5, 10, 11]
    assert len(list((tmp_path / "snapshots").glob("*.safetensors"))) == len(kept)


def test_lost_index_is_rebuilt_from_file_headers(tmp_path):
    store = SnapshotStore(tmp_path)
    for step in (3, 1, 2):
        store.add(capture_weights(small_model(), step=step, metadata={"k": step}))
    (tmp_path / "index.json").unlink()
    rebuilt = SnapshotStore(tmp_path).snapshots()
    assert [(s.step, s.metadata["k"]) for s in rebuilt] == [(1, 1), (2, 2), (3, 3)]


def test_bad_files_raise_typed_errors_naming_the_file(tmp_path):
    store = SnapshotStore(tmp_path)
    snap = store.add(capture_weights(small_model()))
    snap.path.write_bytes(b"\x80\x04 not safetensors (a pickle header)")
    lazy = SnapshotStore(tmp_path).snapshots()[0]
    with pytest.raises(WeightSnapshotError, match=snap.path.name):
        lazy.load()
    with pytest.raises(WeightSnapshotError, match="cannot read tensor"):
        lazy.tensor("0.weight")
    (tmp_path / "index.json").write_text('{"format": "neuron-engine.weights", "version": 9}')
    with pytest.raises(WeightSnapshotError, match="version"):
        SnapshotStore(tmp_path)
    (tmp_path / "index.json").write_text("{not json")
    with pytest.raises(WeightSnapshotError, match="not valid JSON"):
        SnapshotStore(tmp_path)
    with pytest.raises(WeightSnapshotError, match="no snapshot 'missing'"):
        store.get("missing")
    assert issubclass(WeightSnapshotError, EngineError)


def test_index_refuses_file_names_that_leave_the_run_folder(tmp_path):
    store = SnapshotStore(tmp_path)
    store.add(capture_weights(small_model()))
    data = json.loads((tmp_path / "index.json").read_text())
    data["snapshots"][0]["file"] = "../../etc/passwd.safetensors"
    (tmp_path / "index.json").write_text(json.dumps(data))
    with pytest.raises(WeightSnapshotError, match="file"):
        SnapshotStore(tmp_path)


def test_files_are_safetensors_and_json_only_and_writes_leave_no_temporaries(tmp_path):
    tracker = WeightTracker(small_model(), tmp_path)
    for step in range(3):
        tracker.snapshot(step=step)
    tracker.close()
    files = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    assert files[0] == "index.json"
    assert all(f.endswith(".safetensors") for f in files[1:]) and len(files) == 4
    with safe_open(str(tmp_path / files[1]), framework="pt") as fh:  # parses without pickle
        names = list(fh.keys())
    assert "0.weight" in names
    json.loads((tmp_path / "index.json").read_text())
