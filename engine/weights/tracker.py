"""``WeightTracker``: weight snapshots of a live model, around surgery too, in one run folder.

Attach it to a :class:`~engine.NeuronEngine` (``engine.add_listener(tracker)``) and it takes a
snapshot before and after every applied plan and appends the plan's actions to the change log;
call :meth:`~WeightTracker.on_step` / :meth:`~WeightTracker.on_epoch` from the training loop
for the rest. Snapshots record every tracked layer's neuron IDs and which tensor axes hold
them, so comparisons align units by ID across surgery.

>>> import tempfile, torch, torch.nn as nn
>>> model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
>>> tracker = WeightTracker(model, tempfile.mkdtemp(), every_n_steps=10)
>>> for step in range(25):
...     with torch.no_grad():
...         _ = model[0].weight.mul_(0.99)
...     _ = tracker.on_step(step, loss=1.0 / (step + 1))
>>> [s.step for s in tracker.snapshots()], round(tracker.compare(0, -1).total.l1, 3) > 0
([0, 10, 20], True)
"""

from __future__ import annotations

import time
import warnings
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from torch import nn

from engine.errors import ConfigurationError, EngineError
from engine.neurons import NeuronRegistry
from engine.surgery.records import SurgeryRecord
from engine.weights.axes import AxisMap, check_axes, consumer_axes, norms_after, output_axes
from engine.weights.changelog import ChangeEntry, ChangeLog, lineage_from_record
from engine.weights.compare import WeightComparison, compare_series, compare_snapshots
from engine.weights.errors import WeightSnapshotError
from engine.weights.schema import Trigger
from engine.weights.store import SnapshotStore
from engine.weights.weight_snapshot import WeightSnapshot, capture_weights
from engine.weights.writer import SnapshotWriter

DEFAULT_ROOT = Path("outputs") / "weights"
CHANGELOG_FILE = "changes.jsonl"


def _is_engine(obj: Any) -> bool:
    return all(hasattr(obj, a) for a in ("model", "neurons", "layers", "model_layout"))


class WeightTracker:
    """Weight snapshots, comparisons and the surgery change log of one training run.

    Args:
        target: a ``NeuronEngine`` (neuron IDs, norms and consumers are read from it) or a plain
            ``nn.Module`` (optionally with ``registry``, a ``NeuronRegistry`` keyed by module
            names, and ``layout``, a ``ModelLayout`` giving consumers).
        run_dir: folder of the run; by default ``outputs/weights/<date-time>``.
        every_n_steps: :meth:`on_step` snapshots when ``step % every_n_steps == 0``.
        dtype: storage dtype of floating tensors (``torch.float16`` halves the files).
        keep_last, keep_every: retention: keep the ``keep_last`` latest snapshots and every
            ``keep_every``-th capture; surgery snapshots are always kept.
        example_inputs: a batch for the model layout when the engine has seen none yet.
        background: write snapshots in a background thread (``SnapshotWriter``): the training
            thread only copies the tensors; ``flush()`` waits for the writes, ``close()`` (or
            leaving ``with WeightTracker(...)``, or interpreter exit) also stops the thread.
            ``False``: every snapshot is on disk when ``snapshot()`` returns.
        max_pending: snapshots that may wait for the writer before ``snapshot()`` blocks.
    """

    def __init__(
        self,
        target: Any,
        run_dir: str | Path | None = None,
        *,
        registry: NeuronRegistry | None = None,
        layout: Any = None,
        every_n_steps: int | None = None,
        dtype: torch.dtype | None = None,
        keep_last: int | None = None,
        keep_every: int | None = None,
        example_inputs: Any = None,
        background: bool = True,
        max_pending: int = 1,
    ) -> None:
        if _is_engine(target):
            self.engine, self.model, self.registry = target, target.model, target.neurons
        elif isinstance(target, nn.Module):
            self.engine, self.model, self.registry = None, target, registry
        else:
            raise ConfigurationError(
                f"WeightTracker expects a NeuronEngine or an nn.Module, got {type(target)!r}"
            )
        for label, value in (("every_n_steps", every_n_steps), ("keep_last", keep_last),
                             ("keep_every", keep_every)):  # fmt: skip
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ConfigurationError(f"{label} must be a positive int or None, got {value!r}")
        if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
            raise ConfigurationError(f"dtype must be a floating torch.dtype, got {dtype!r}")
        if run_dir is None:
            stamp = time.strftime("%Y%m%d-%H%M%S") + f"-{time.time_ns() % 10**9:09d}"
            run_dir = DEFAULT_ROOT / stamp
        self.writer = SnapshotWriter(max_pending) if background else None
        self.store = SnapshotStore(run_dir, self.writer)
        self.changelog = ChangeLog(self.store.run_dir / CHANGELOG_FILE)
        self.layout, self.every_n_steps, self.dtype = layout, every_n_steps, dtype
        self.keep_last, self.keep_every = keep_last, keep_every
        self.example_inputs = example_inputs
        self._structure: tuple[tuple[str, ...], AxisMap] | None = None
        self._layout_failed: str | None = None
        self._recent: dict[int, WeightSnapshot] = {}  # the latest two, in memory
        self._before_seq: int | None = None
        self._warned_no_layout = False

    @property
    def run_dir(self) -> Path:
        return self.store.run_dir

    def flush(self) -> None:
        """Wait until every snapshot taken so far is on disk (raises a failed write's error)."""
        self.store.flush()

    def close(self) -> None:
        """Flush and stop the background writer (idempotent; snapshots stay readable)."""
        if self.writer is not None:
            self.writer.close()
            self.store.writer = self.writer = None

    def __enter__(self) -> WeightTracker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- neuron IDs and unit axes ---------------------------------------------------------
    def _widths(self) -> dict[str, int]:
        if self.registry is None:
            return {}
        return {name: self.registry.size(name) for name in self.registry.layer_names}

    def _layout(self) -> Any:
        if self.layout is not None or self.engine is None or self._layout_failed:
            return self.layout
        try:
            return self.engine.model_layout(self.example_inputs)
        except ConfigurationError:  # no example inputs yet: retry at the next snapshot
            if not self._warned_no_layout:
                self._warned_no_layout = True
                warnings.warn(
                    "WeightTracker: the engine has seen no batch yet, so this snapshot records "
                    "the unit axes of each layer's own tensors only, not of its consumers' "
                    "columns (comparisons with it cannot align those); pass example_inputs= "
                    "or take the first snapshot after a tracked forward",
                    stacklevel=4,
                )
            return None
        except (EngineError, RuntimeError, TypeError, ValueError) as exc:
            self._layout_failed = f"{type(exc).__name__}: {exc}"
            return None

    def _axes(self, shapes: dict[str, list[int]]) -> AxisMap:
        widths = self._widths()
        if not widths:
            return {}
        key = tuple(shapes)
        if self._structure is None or self._structure[0] != key:
            observations = self.engine.observation_points() if self.engine is not None else {}
            axes = output_axes(self.model, widths, norms_after(self.model, observations))
            layout = self._layout()
            if layout is not None:
                consumer_axes(self.model, layout, axes)
                self._structure = (key, axes)  # complete: cache (surgery keeps the structure)
            elif self._layout_failed or self.engine is None:
                self._structure = (key, axes)
        else:
            axes = self._structure[1]
        return check_axes(axes, shapes, widths)

    @property
    def lineage(self) -> dict[int, dict[str, Any]]:
        """Every neuron fate known: the run's (from the change log) and the registry's."""
        out = dict(self.store.lineage)
        if self.registry is not None:
            out.update(self.registry.lineage)
        return out

    # --- capturing ------------------------------------------------------------------------
    def snapshot(
        self,
        name: str | None = None,
        *,
        epoch: int | None = None,
        step: int | None = None,
        loss: Any = None,
        trigger: Trigger = "manual",
        pinned: bool = False,
        model: nn.Module | None = None,
        **metadata: Any,
    ) -> WeightSnapshot:
        """Capture the model's weights now and write them to the run folder."""
        snap = capture_weights(
            model if model is not None else self.model,
            name=name, epoch=epoch, step=step, loss=loss, metadata=metadata, trigger=trigger,
            dtype=self.dtype,
            neuron_ids={k: self.registry.ids(k) for k in self._widths()},
        )  # fmt: skip
        snap.entry.axes = self._axes(snap.entry.shapes)
        with self.writer.batch() if self.writer is not None else nullcontext():
            stored = self.store.add(snap, pinned=pinned)
            self._recent = {s.seq: s for s in [*self._recent.values(), stored][-2:]}
            if not pinned:
                for seq in self.store.retain(self.keep_last, self.keep_every):
                    self._recent.pop(seq, None)
        return stored

    def on_step(self, step: int, *, epoch: int | None = None, loss: Any = None, **metadata: Any):
        """Snapshot when ``step`` is a multiple of ``every_n_steps``; returns it or None."""
        if self.every_n_steps is None or step % self.every_n_steps:
            return None
        return self.snapshot(step=step, epoch=epoch, loss=loss, trigger="step", **metadata)

    def on_epoch(self, epoch: int, *, step: int | None = None, loss: Any = None, **metadata: Any):
        """Snapshot at the end of an epoch."""
        return self.snapshot(epoch=epoch, step=step, loss=loss, trigger="epoch", **metadata)

    # --- SurgeryListener ------------------------------------------------------------------
    def before_surgery(self, model: Any, plan: Any, *, step: int | None, epoch: int | None):
        """Snapshot the unmodified model (kept by retention)."""
        fingerprint = getattr(getattr(plan, "metadata", None), "fingerprint", None)
        snap = self.snapshot(
            "before-surgery", epoch=epoch, step=step, trigger="before_surgery", pinned=True,
            model=model, plan_fingerprint=fingerprint,
        )  # fmt: skip
        self._before_seq = snap.seq

    def after_surgery(self, model: Any, record: SurgeryRecord) -> None:
        """Record the neuron fates, snapshot the modified model, append the change log."""
        if record.dry_run:
            return
        self.store.update_lineage(lineage_from_record(record))
        if self.registry is not None:
            self.store.update_lineage(self.registry.lineage)
        snap = self.snapshot(
            "after-surgery", epoch=record.epoch, step=record.step, trigger="after_surgery",
            pinned=True, model=model, plan_fingerprint=record.fingerprint_after,
        )  # fmt: skip
        self.store.run_later(self.changelog.append, record, self._before_seq, snap.seq)
        self._before_seq = None

    def after_rollback(self, model: Any, record: SurgeryRecord) -> None:
        """A trial surgery was refused and rolled back: log its actions as ``rolled_back``
        (the model is the one of the "before" snapshot; no lineage changes)."""
        if record.dry_run:
            return
        self.store.run_later(self.changelog.append, record, self._before_seq, self._before_seq)
        self._before_seq = None

    # --- reading back ---------------------------------------------------------------------
    def snapshots(self) -> list[WeightSnapshot]:
        """All snapshots of the run, chronological (tensors stay on disk)."""
        return [self._recent.get(s.seq, s) for s in self.store.snapshots()]

    def get(self, key: int | str | WeightSnapshot) -> WeightSnapshot:
        """A snapshot by position in :meth:`snapshots` (int, negative from the end), by name
        (str) or itself."""
        if isinstance(key, WeightSnapshot):
            return key
        if isinstance(key, str):
            return self._recent.get(self.store.get(key).seq, self.store.get(key))
        snaps = self.snapshots()
        try:
            return snaps[key]
        except IndexError:
            raise WeightSnapshotError(
                f"{self.run_dir}: snapshot position {key} is out of range ({len(snaps)} snapshots)"
            ) from None

    def compare(self, a: Any = -2, b: Any = -1, **kwargs: Any) -> WeightComparison:
        """Compare two snapshots (see :meth:`get`); ``kwargs`` go to ``compare_snapshots``."""
        kwargs.setdefault("lineage", self.lineage)
        return compare_snapshots(self.get(a), self.get(b), **kwargs)

    def compare_consecutive(self, **kwargs: Any) -> list[WeightComparison]:
        """Every snapshot compared with the one before it."""
        kwargs.setdefault("lineage", self.lineage)
        return compare_series(self.snapshots(), **kwargs)

    def changes(self) -> list[ChangeEntry]:
        """The change log, one entry per applied action."""
        self.flush()
        return self.changelog.read()
