"""Snapshots written in the background: the training thread only copies; order, errors,
back-pressure and a SIGKILL mid-write leave every written snapshot intact."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from torch import nn

import engine.weights.store as store_module
from engine.weights import SnapshotStore, WeightSnapshotError, WeightTracker
from engine.weights.writer import SnapshotWriter

REPO = Path(__file__).resolve().parents[2]


def small_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))


@pytest.fixture
def gated(monkeypatch):
    """File writes of snapshots wait until the test opens the gate."""
    gate, started = threading.Event(), threading.Event()
    real = store_module.atomic_write_bytes

    def slow(path, data):
        started.set()
        assert gate.wait(10), "the test never opened the gate"
        return real(path, data)

    monkeypatch.setattr(store_module, "atomic_write_bytes", slow)
    return gate, started


def test_snapshot_returns_before_the_write_and_flush_waits(tmp_path, gated):
    gate, started = gated
    model = small_model()
    tracker = WeightTracker(model, tmp_path)
    expected = model[0].weight.detach().clone()
    snap = tracker.snapshot(step=0)  # returns although the file cannot be written yet
    assert started.wait(5)
    assert not snap.path.exists()
    assert torch.equal(snap.tensor("0.weight"), model[0].weight.detach())  # held in memory
    with torch.no_grad():
        model[0].weight.add_(1.0)  # training goes on: the snapshot keeps its own copy
    gate.set()
    tracker.flush()
    on_disk = SnapshotStore(tmp_path).snapshots()
    assert len(on_disk) == 1 and on_disk[0].path.is_file()
    assert torch.equal(on_disk[0].tensor("0.weight"), expected)
    tracker.close()


def test_the_index_on_disk_never_names_a_file_not_yet_written(tmp_path, gated):
    gate, started = gated
    gate.set()
    tracker = WeightTracker(small_model(), tmp_path)
    tracker.snapshot(step=0)
    tracker.flush()
    gate.clear()
    started.clear()
    tracker.snapshot(step=1)
    assert started.wait(5)
    index = json.loads((tmp_path / "index.json").read_text())
    assert [e["step"] for e in index["snapshots"]] == [0]  # the pending one is not listed
    gate.set()
    tracker.close()
    assert [s.step for s in SnapshotStore(tmp_path).snapshots()] == [0, 1]


def test_background_and_synchronous_runs_write_the_same_snapshots(tmp_path):
    runs = {}
    for background in (True, False):
        model = small_model()
        folder = tmp_path / str(background)
        with WeightTracker(model, folder, background=background, keep_last=2) as tracker:
            for step in range(4):
                with torch.no_grad():
                    model[0].weight.mul_(1.5)
                tracker.snapshot(step=step)
        runs[background] = SnapshotStore(folder).snapshots()
    assert [s.step for s in runs[True]] == [s.step for s in runs[False]] == [2, 3]
    for a, b in zip(runs[True], runs[False], strict=True):
        assert a.entry.file == b.entry.file
        for name in a.names:
            assert torch.equal(a.tensor(name), b.tensor(name)), name


def test_a_failed_write_is_raised_by_the_next_call(tmp_path, monkeypatch):
    def broken(path, data):
        raise OSError("disk full")

    tracker = WeightTracker(small_model(), tmp_path)
    monkeypatch.setattr(store_module, "atomic_write_bytes", broken)
    tracker.snapshot(step=0)
    with pytest.raises(WeightSnapshotError, match="disk full"):
        tracker.flush()
    tracker.close()


def test_a_full_queue_blocks_until_a_write_is_done():
    gate = threading.Event()
    writer = SnapshotWriter(max_pending=1)
    writer.submit(gate.wait)  # being written
    writer.submit(lambda: None)  # waiting
    third = threading.Thread(target=writer.submit, args=(lambda: None,))
    third.start()
    third.join(0.3)
    assert third.is_alive()  # blocked: memory stays bounded
    gate.set()
    third.join(5)
    assert not third.is_alive()
    writer.close()
    assert writer.pending == 0
    with pytest.raises(WeightSnapshotError, match="closed"):
        writer.submit(lambda: None)
    writer.close()  # idempotent


_KILLED_WRITER = r"""
import sys, time, torch
from torch import nn
import engine.weights.store as store
from engine.weights import WeightTracker
torch.manual_seed(0)
model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 8))
tracker = WeightTracker(model, sys.argv[1])
for step in range(3):
    tracker.snapshot(step=step)
tracker.flush()
real = store.atomic_write_bytes
def slow(path, data):  # write half of the temporary, then hang: killed mid-write
    tmp = path.parent / f".{path.name}.tmp-{__import__('os').getpid()}-0badc0de"
    tmp.write_bytes(data[: len(data) // 2])
    sys.stdout.write("writing\n"); sys.stdout.flush()
    time.sleep(60)
store.atomic_write_bytes = slow
tracker.snapshot(step=3)
sys.stdout.write("returned\n"); sys.stdout.flush()
time.sleep(60)
"""


def test_sigkill_mid_write_leaves_every_written_snapshot_intact(tmp_path):
    script = tmp_path / "writer.py"
    script.write_text(_KILLED_WRITER)
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, str(script), str(run)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env)  # fmt: skip
    try:
        seen = set()
        deadline = time.monotonic() + 60
        while seen != {"writing", "returned"} and time.monotonic() < deadline:
            line = proc.stdout.readline().strip()
            if not line and proc.poll() is not None:
                break
            seen.add(line)
        assert seen >= {"writing", "returned"}, seen
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    snaps = SnapshotStore(run).snapshots()
    assert [s.step for s in snaps] == [0, 1, 2]  # the one in flight is lost, nothing else
    for snap in snaps:
        assert set(snap.load()) == {"0.weight", "0.bias", "2.weight", "2.bias"}
    stale = [p for p in (run / "snapshots").iterdir() if ".tmp-" in p.name]
    assert len(stale) == 1  # the killed writer's half-written temporary…
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 8))
    with WeightTracker(model, run) as tracker:  # …is removed by the next write of that file
        tracker.snapshot(step=3)
    assert not [p for p in (run / "snapshots").iterdir() if ".tmp-" in p.name]
    assert [s.step for s in SnapshotStore(run).snapshots()] == [0, 1, 2, 3]


def test_a_batch_queues_its_jobs_when_it_ends():
    done = []
    with SnapshotWriter() as writer:
        with writer.batch():
            writer.submit(lambda: done.append("file"))
            writer.submit(lambda: done.append("index"), heavy=False)
            time.sleep(0.05)
            assert done == []  # nothing starts while the caller is still in the batch
        writer.flush()
        assert done == ["file", "index"]
