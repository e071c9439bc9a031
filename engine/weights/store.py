"""A run folder of weight snapshots: ``index.json`` plus ``snapshots/*.safetensors``.

Files are named ``<seq>-<name>.safetensors`` with a sequence number that is never reused, so
two snapshots taken in the same second never overwrite each other. Every write is atomic (file
first, then the index). :meth:`SnapshotStore.snapshots` returns snapshots in chronological
order (epoch, step, capture number), never in file-name order, and reads no tensor.
Each file's header repeats its index entry, so a lost ``index.json`` is rebuilt from the files.
With a :class:`~engine.weights.writer.SnapshotWriter`, ``add``, ``retain`` and
``update_lineage`` do the cheap bookkeeping now and leave serialisation and every write to the
writer's thread, in order (each job writes the index as it was when the job was queued, so the
index on disk never names a file not yet written); readers wait for pending writes first.

>>> import tempfile, torch.nn as nn
>>> from engine.weights.weight_snapshot import capture_weights
>>> store = SnapshotStore(tempfile.mkdtemp())
>>> for step in (20, 10):
...     _ = store.add(capture_weights(nn.Linear(2, 2), step=step))
>>> [s.step for s in store.snapshots()], [s.seq for s in store.snapshots()]
([10, 20], [1, 0])
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as st_save

from engine.io import atomic_write_bytes, atomic_write_text, read_json_model
from engine.weights.errors import WeightSnapshotError
from engine.weights.schema import FORMAT, RunIndex, SnapshotEntry, chronological
from engine.weights.weight_snapshot import WeightSnapshot
from engine.weights.writer import SnapshotWriter

INDEX_FILE = "index.json"
SNAPSHOT_DIR = "snapshots"
_HEADER_KEY = "neuron_engine_entry"


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._")[:60] or "snapshot"


class SnapshotStore:
    """Snapshots of one run, on disk (see the module docstring)."""

    def __init__(self, run_dir: str | Path, writer: SnapshotWriter | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.writer = writer
        self.index_path = self.run_dir / INDEX_FILE
        self.snapshot_dir = self.run_dir / SNAPSHOT_DIR
        if self.index_path.is_file():
            self.index = read_json_model(self.index_path, RunIndex, WeightSnapshotError)
        else:
            self.index = self._rebuild()

    # --- reading --------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.index.snapshots)

    def flush(self) -> None:
        """Wait for the writer's pending writes (a no-op without a writer)."""
        if self.writer is not None:
            self.writer.flush()

    def snapshots(self) -> list[WeightSnapshot]:
        """All snapshots, chronological (epoch, step, capture number); tensors stay on disk."""
        self.flush()
        entries = chronological(self.index.snapshots)
        return [WeightSnapshot(e, self.snapshot_dir / e.file) for e in entries]

    def get(self, key: int | str) -> WeightSnapshot:
        """A snapshot by sequence number (int) or name (str, the latest with that name)."""
        hits = [
            s for s in self.snapshots() if (s.seq == key if isinstance(key, int) else s.name == key)
        ]
        if not hits:
            known = ", ".join(f"#{s.seq} {s.name!r}" for s in self.snapshots()[:12])
            raise WeightSnapshotError(f"{self.run_dir}: no snapshot {key!r}; there are: {known}")
        return hits[-1]

    @property
    def lineage(self) -> dict[int, dict[str, Any]]:
        return self.index.lineage

    # --- writing --------------------------------------------------------------------------
    def next_seq(self) -> int:
        return max((e.seq for e in self.index.snapshots), default=-1) + 1

    def add(self, snapshot: WeightSnapshot, *, pinned: bool = False) -> WeightSnapshot:
        """Write ``snapshot`` (an in-memory capture) under a fresh sequence number; returns the
        stored snapshot (its tensors still in memory, the file backing it)."""
        seq = self.next_seq()
        while True:
            file = f"{seq:06d}-{_slug(snapshot.entry.name)}.safetensors"
            if not (self.snapshot_dir / file).exists():
                break
            seq += 1  # a file left by another writer: never overwrite it
        entry = snapshot.entry.model_copy(update={"seq": seq, "file": file, "pinned": pinned})
        tensors = snapshot.load()
        path = self.snapshot_dir / file

        def header() -> dict[str, str]:
            return {_HEADER_KEY: entry.model_dump_json(), "format": FORMAT}

        if self.writer is None:
            atomic_write_bytes(path, st_save(tensors, metadata=header()))
            self.index.snapshots.append(entry)
            self._write_index()
        else:
            self.index.snapshots.append(entry)
            index = self._index_now()

            def write() -> None:  # in the writer's thread: file first, then the index
                atomic_write_bytes(path, st_save(tensors, metadata=header()))
                self._write_index(index)

            self.writer.submit(write)
        return replace(snapshot, entry=entry, path=path)

    def update_lineage(self, lineage: dict[int, dict[str, Any]]) -> None:
        """Merge neuron fates into the run's lineage (IDs are never reused, so this only grows)."""
        changed = {
            int(k): dict(v) for k, v in lineage.items() if self.index.lineage.get(int(k)) != v
        }
        if changed:
            self.index.lineage.update(changed)
            self.run_later(self._write_index, self._index_now())

    def retain(self, keep_last: int | None = None, keep_every: int | None = None) -> list[int]:
        """Delete snapshots that are neither pinned, among the ``keep_last`` latest, nor every
        ``keep_every``-th capture (by sequence number); the latest is always kept. Returns the
        deleted sequence numbers. With both None nothing is deleted."""
        if keep_last is None and keep_every is None:
            return []
        ordered = chronological(self.index.snapshots)
        recent = {e.seq for e in ordered[-(keep_last or 1) :]}
        keep = {
            e.seq
            for e in ordered
            if e.pinned or e.seq in recent or (keep_every and e.seq % keep_every == 0)
        }
        dropped = [e for e in ordered if e.seq not in keep]
        if dropped:
            self.index.snapshots = [e for e in self.index.snapshots if e.seq in keep]
            index, files = self._index_now(), [self.snapshot_dir / e.file for e in dropped]

            def prune() -> None:  # the index first: a crash leaves stray files, never dangling
                self._write_index(index)
                for path in files:
                    path.unlink(missing_ok=True)

            self.run_later(prune)
        return [e.seq for e in dropped]

    def _index_now(self) -> RunIndex:
        """The index as it is now, for a write that may run later (entries are never changed
        in place, so copying the lists is enough)."""
        return RunIndex.model_construct(
            **{**dict(self.index), "snapshots": list(self.index.snapshots),
               "lineage": dict(self.index.lineage)}
        )  # fmt: skip

    def run_later(self, job: Callable[..., object], *args: Any) -> None:
        """Run ``job(*args)`` after every write queued so far (now, without a writer)."""
        if self.writer is None:
            job(*args)
        else:
            self.writer.submit(lambda: job(*args), heavy=False)

    def _write_index(self, index: RunIndex | None = None) -> None:
        index = self.index if index is None else index
        atomic_write_text(self.index_path, index.model_dump_json(indent=1) + "\n")

    # --- recovery -------------------------------------------------------------------------
    def _rebuild(self) -> RunIndex:
        """An index from the files' headers (a run folder whose ``index.json`` was lost)."""
        index = RunIndex()
        if not self.snapshot_dir.is_dir():
            return index
        for path in sorted(self.snapshot_dir.glob("*.safetensors")):
            try:
                with safe_open(str(path), framework="pt") as fh:
                    raw = (fh.metadata() or {}).get(_HEADER_KEY)
                entry = SnapshotEntry.model_validate(json.loads(raw or "null"))
            except (SafetensorError, OSError, ValueError, ValidationError) as exc:
                raise WeightSnapshotError(
                    f"{path}: no readable snapshot header to rebuild {INDEX_FILE} ({exc})"
                ) from None
            index.snapshots.append(entry.model_copy(update={"file": path.name}))
        return index
