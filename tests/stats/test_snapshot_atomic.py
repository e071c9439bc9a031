"""A snapshot folder is written as a whole: crashes and kills mid-save keep the previous one
loadable, and the temporaries a killed save left are removed by the next save (only ours)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

import engine.io
from engine import NeuronEngine, SnapshotError, StatsSnapshot
from engine.stats import snapshot as snapshot_module

DEAD_PID = 2**31 - 1  # above any pid_max: never a running process


def _snapshot(seed: int, with_layout: bool = False) -> StatsSnapshot:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(5, 6), nn.Tanh(), nn.Linear(6, 3))
    engine = NeuronEngine(model, correlation=True)
    with engine.tracking(), torch.no_grad():
        model(torch.randn(17, 5))
    return engine.snapshot(with_layout=with_layout, run=f"seed-{seed}")


def _assert_same(a: StatsSnapshot, b: StatsSnapshot) -> None:
    assert a.layout == b.layout and a.metadata == b.metadata and a.created == b.created
    for name, layer in a.layers.items():
        other = b.layers[name]
        assert other.count == layer.count and other.neuron_ids == layer.neuron_ids
        for key, value in layer.moments.tensors().items():
            assert torch.equal(value, other.moments.tensors()[key]), (name, key)
        assert torch.equal(layer.comoments.c, other.comoments.c)
        assert torch.equal(layer.comoments.mean, other.comoments.mean)


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def _ours_left(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if ".tmp-" in p.name or ".old-" in p.name)


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2", "two-renames"])
def test_crash_between_the_two_files_keeps_the_previous_snapshot(tmp_path, monkeypatch, exchange):
    if not exchange:
        monkeypatch.setattr(engine.io, "_RENAMEAT2", None)
    elif engine.io._RENAMEAT2 is None:
        pytest.skip("no renameat2 on this platform")
    swaps: list[bool] = []
    real_exchange = engine.io._exchange
    monkeypatch.setattr(
        engine.io, "_exchange", lambda a, b: swaps.append(real_exchange(a, b)) or swaps[-1]
    )
    target = tmp_path / "stats"
    first = _snapshot(0, with_layout=True)
    first.save(target)
    before = _files(target)

    def crash(*_args, **_kwargs):
        raise OSError("disk full (simulated)")

    with monkeypatch.context() as m:
        m.setattr(snapshot_module, "atomic_write_json", crash)  # the second file of the save
        with pytest.raises(OSError, match="simulated"):
            _snapshot(1).save(target)
    assert _files(target) == before  # bitwise: every file of the previous snapshot
    _assert_same(StatsSnapshot.load(target), first)
    assert _ours_left(tmp_path) == []

    second = _snapshot(1)
    second.save(target)
    _assert_same(StatsSnapshot.load(target), second)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stats"]
    assert sorted(_files(target)) == ["stats.safetensors", "summary.json"]  # no stale layout
    assert swaps == ([True] if exchange else [False])  # the one save over an existing folder


def test_stale_temporaries_of_ours_are_removed_and_look_alikes_are_not(tmp_path):
    target = tmp_path / "stats"
    _snapshot(0).save(target)
    stale_dir = tmp_path / f".stats.tmp-{DEAD_PID}-0123abcd"
    stale_dir.mkdir()
    (stale_dir / "stats.safetensors").write_bytes(b"\0" * 1000)
    stale_file = tmp_path / f".stats.old-{DEAD_PID}-deadbeef"
    stale_file.write_bytes(b"half")
    live = tmp_path / f".stats.tmp-{os.getpid()}-89abcdef"  # a writer still running: kept
    live.mkdir()
    look_alikes = [
        ".stats.tmp-backup",
        f".stats.tmp-{DEAD_PID}-0123abc",  # 7 hex digits
        f".stats.tmp-{DEAD_PID}-0123ABCD",  # upper case
        f"stats.tmp-{DEAD_PID}-0123abcd",  # no leading dot
        f".stats2.tmp-{DEAD_PID}-0123abcd",  # another target
        f".stats.tmp-{DEAD_PID}-0123abcd.keep",
        "stats.bak",
    ]
    for name in look_alikes:
        (tmp_path / name).mkdir() if name.endswith("backup") else (tmp_path / name).write_text("x")
    (tmp_path / ".stats.tmp-backup" / "mine.txt").write_text("user data")

    second = _snapshot(1)
    second.save(target)
    assert not stale_dir.exists() and not stale_file.exists()
    assert live.is_dir()
    for name in look_alikes:
        assert (tmp_path / name).exists(), name
    assert (tmp_path / ".stats.tmp-backup" / "mine.txt").read_text() == "user data"
    _assert_same(StatsSnapshot.load(target), second)


def test_legacy_temporaries_inside_the_folder_go_with_the_old_folder(tmp_path):
    """What earlier versions' killed writes left inside the folder (mkstemp names)."""
    _snapshot(0).save(tmp_path / "stats")
    (tmp_path / "stats" / ".stats.safetensors.k3j_9x0a.tmp").write_bytes(b"\0" * 100)
    _snapshot(1).save(tmp_path / "stats")
    assert sorted(_files(tmp_path / "stats")) == ["stats.safetensors", "summary.json"]


def test_a_folder_with_user_files_is_refused_untouched(tmp_path):
    target = tmp_path / "stats"
    _snapshot(0).save(target)
    (target / "notes.txt").write_text("mine")
    before = _files(target)
    with pytest.raises(SnapshotError, match=r"holds 'notes\.txt' besides its own files"):
        _snapshot(1).save(target)
    assert _files(target) == before and _ours_left(tmp_path) == []
    (tmp_path / "file").write_text("x")
    with pytest.raises(SnapshotError, match="exists and is not a folder"):
        _snapshot(1).save(tmp_path / "file")


def test_load_falls_back_to_the_aside_copy_in_the_rename_window(tmp_path, monkeypatch):
    """Without renameat2 the swap is two renames; a kill between them leaves only the aside."""
    monkeypatch.setattr(engine.io, "_RENAMEAT2", None)
    target = tmp_path / "stats"
    first = _snapshot(0)
    first.save(target)
    aside = tmp_path / f".stats.old-{DEAD_PID}-0badf00d"
    target.rename(aside)  # the state a kill between the two renames leaves
    _assert_same(StatsSnapshot.load(target), first)
    _assert_same(StatsSnapshot.load(str(target)), first)
    second = _snapshot(1)
    second.save(target)
    _assert_same(StatsSnapshot.load(target), second)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stats"]


def test_a_missing_folder_without_an_aside_still_says_missing(tmp_path):
    with pytest.raises(SnapshotError, match=r"summary\.json: missing"):
        StatsSnapshot.load(tmp_path / "nothing")


_CHILD = """
import sys, time
from pathlib import Path
import torch
from torch import nn
from engine import NeuronEngine
from engine.stats import snapshot as snapshot_module
import engine.io

real_write = engine.io.atomic_write_bytes

def slow_write(path, data):  # write half of the arrays file, say so, then hang
    with open(path, "wb") as fh:
        fh.write(data[: len(data) // 2])
        fh.flush()
    print("writing", flush=True)
    time.sleep(60)
    return real_write(path, data)

snapshot_module.atomic_write_bytes = slow_write
torch.manual_seed(1)
model = nn.Sequential(nn.Linear(5, 6), nn.Tanh(), nn.Linear(6, 3))
engine_ = NeuronEngine(model, correlation=True)
with engine_.tracking(), torch.no_grad():
    model(torch.randn(17, 5))
engine_.snapshot().save(Path(sys.argv[1]))
"""


def test_sigkill_mid_save_keeps_the_previous_snapshot(tmp_path):
    target = tmp_path / "stats"
    first = _snapshot(0)
    first.save(target)
    before = _files(target)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    child = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(_CHILD), str(target)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        line = child.stdout.readline()
        assert line.strip() == "writing", child.stderr.read()
    finally:
        child.kill()  # SIGKILL
        child.wait(timeout=30)  # reaped: its pid is no longer running
    assert child.returncode == -9
    left = _ours_left(tmp_path)
    assert len(left) == 1 and left[0].startswith(f".stats.tmp-{child.pid}-"), left
    assert _files(target) == before
    _assert_same(StatsSnapshot.load(target), first)

    second = _snapshot(2)  # the next save removes what the killed one left
    second.save(target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stats"]
    _assert_same(StatsSnapshot.load(target), second)
