"""Plain-data statistics snapshots: JSON summary + safetensors arrays, save/load/merge.

A snapshot is what policies and reports read: no modules, no hooks, CPU float64 tensors.
On disk it is a folder with ``summary.json`` (layout, counts, observation points, per-layer
summary) and ``stats.safetensors`` (per-neuron arrays). Nothing is unpickled. The folder is
written as a whole (``engine.io.atomic_write_dir``): a crash or kill mid-save leaves the
previous snapshot loadable, and the next save removes what the killed one left.

>>> import torch, tempfile
>>> from engine.stats import Moments
>>> layer = LayerSnapshot("fc", "Linear", [0, 1], Moments.from_samples(torch.rand(8, 2)))
>>> snap = StatsSnapshot({"fc": layer})
>>> path = snap.save(tempfile.mkdtemp())
>>> StatsSnapshot.load(path).layers["fc"].moments.n
8
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, NonNegativeInt
from safetensors import SafetensorError, safe_open
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from engine._version import __version__
from engine.errors import (
    LayerNotFoundError,
    LayoutMismatchError,
    NeuronNotFoundError,
    SnapshotError,
)
from engine.io import (
    atomic_write_bytes,
    atomic_write_dir,
    atomic_write_json,
    read_json,
    resolve_dir,
    validate_json,
)
from engine.layout.io import (
    LAYOUT_FILE,
    WEIGHTS_FILE,
    layout_from_snapshot_sizes,
    load_layout,
    save_layout,
)
from engine.layout.model import layout_fingerprint
from engine.stats.comoments import CoMoments
from engine.stats.growth import GradientCross
from engine.stats.layer_snapshot import LayerSnapshot
from engine.stats.moments import TENSOR_FIELDS, Moments

FORMAT = "neuron-engine.stats"
VERSION = 1
SUMMARY_FILE = "summary.json"
ARRAYS_FILE = "stats.safetensors"
FILES = (SUMMARY_FILE, ARRAYS_FILE, LAYOUT_FILE, WEIGHTS_FILE)  # all a snapshot folder holds


class _LayerRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    module_type: str
    neuron_ids: list[NonNegativeInt]
    count: NonNegativeInt
    correlation: bool
    co_count: NonNegativeInt | None = None  # co-moment samples; absent in older files: count
    bounds: tuple[float, float] | None = None
    observation: dict[str, Any] = {}
    summary: dict[str, Any] = {}
    growth_consumer: str | None = None  # the layer has a growth signal (array growth_cross)
    growth_batches: NonNegativeInt = 0
    growth_rows: NonNegativeInt = 0  # with arrays growth_input and growth_delta (newer files)
    growth_nonfinite_rows: NonNegativeInt = 0  # rows the growth signal left out (NaN/inf)


class _SnapshotRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")
    format: Literal["neuron-engine.stats"]
    version: Literal[1]
    created: str
    library_version: str
    firing_threshold: float
    saturation_tolerance: float
    fingerprint: str
    layers: list[_LayerRecord]
    metadata: dict[str, Any] = {}


@dataclass(eq=False)
class StatsSnapshot:
    """Statistics of every tracked layer, as plain data (see module docstring)."""

    layers: dict[str, LayerSnapshot]
    firing_threshold: float = 0.0
    saturation_tolerance: float = 0.02
    created: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat())
    metadata: dict[str, Any] = field(default_factory=dict)
    model_layout: Any = None  # engine.layout.ModelLayout, saved beside the statistics if set

    @property
    def layout(self) -> list[tuple[str, int]]:
        """``[(layer name, unit count), …]`` in tracking order."""
        return [(name, layer.num_units) for name, layer in self.layers.items()]

    def fingerprint(self) -> str:
        return layout_fingerprint(self.layout)

    @property
    def samples_seen(self) -> dict[str, int]:
        return {name: layer.count for name, layer in self.layers.items()}

    def layer(self, name: str) -> LayerSnapshot:

        try:
            return self.layers[name]
        except KeyError:
            raise LayerNotFoundError(name, list(self.layers)) from None

    def neuron(self, neuron_id: int) -> dict[str, Any]:
        """Statistics of one neuron by global ID."""

        for layer in self.layers.values():
            if neuron_id in layer.neuron_ids:
                return layer.neuron(layer.neuron_ids.index(neuron_id))
        raise NeuronNotFoundError(f"neuron {neuron_id} is not in this snapshot")

    def check_continues(
        self,
        layout: list[tuple[str, int]],
        neuron_ids: Mapping[str, list[int]],
        correlation: Mapping[str, bool],
        *,
        firing_threshold: float,
        saturation_tolerance: float,
    ) -> None:
        """Raise ``LayoutMismatchError`` unless a tracker with this ``layout``, these neuron
        IDs, correlation flags and settings can continue from this snapshot's statistics."""
        if self.fingerprint() != layout_fingerprint(layout):
            raise LayoutMismatchError(
                f"snapshot layout {self.layout} does not match the tracked layout {layout}"
            )
        ours = {"firing_threshold": firing_threshold, "saturation_tolerance": saturation_tolerance}
        for setting, value in ours.items():
            theirs = getattr(self, setting)
            if theirs != value:
                raise LayoutMismatchError(
                    f"the snapshot was recorded with {setting}={theirs} and this engine uses "
                    f"{setting}={value}: its counts cannot be continued; create the engine with "
                    f"{setting}={theirs}"
                )
        for name, layer in self.layers.items():
            if layer.neuron_ids != neuron_ids[name]:
                raise LayoutMismatchError(
                    f"layer {name!r}: the snapshot's neuron IDs differ from this engine's (a "
                    f"snapshot from before or after surgery?)"
                )
            has, wants = layer.comoments is not None, correlation[name]
            if has != wants:
                raise LayoutMismatchError(
                    f"layer {name!r}: the snapshot has "
                    f"{'correlation state' if has else 'no correlation state'} but this engine "
                    f"tracks it {'without' if has else 'with'} correlation"
                )

    # --- combining ------------------------------------------------------------------------
    def merge(self, other: StatsSnapshot) -> StatsSnapshot:
        """Exact union of two snapshots of the same layout (e.g. two data shards or ranks)."""
        if list(self.layers) != list(other.layers):
            raise LayoutMismatchError(
                f"cannot merge snapshots of different layers: {list(self.layers)} vs "
                f"{list(other.layers)}"
            )
        if self.firing_threshold != other.firing_threshold:
            raise LayoutMismatchError(
                f"cannot merge snapshots with firing thresholds {self.firing_threshold} and "
                f"{other.firing_threshold}"
            )
        merged = {name: layer.merge(other.layers[name]) for name, layer in self.layers.items()}
        return replace(self, layers=merged, created=datetime.now(timezone.utc).isoformat())

    def planning_layout(self):
        """The saved model layout, or a conservative one built from the layer sizes alone."""
        if self.model_layout is not None:
            return self.model_layout

        ids = {name: layer.neuron_ids for name, layer in self.layers.items()}
        return layout_from_snapshot_sizes(self.layout, ids)

    # --- persistence ----------------------------------------------------------------------
    def _record(self) -> dict[str, Any]:

        return _SnapshotRecord(
            format=FORMAT,
            version=VERSION,
            created=self.created,
            library_version=__version__,
            firing_threshold=self.firing_threshold,
            saturation_tolerance=self.saturation_tolerance,
            fingerprint=self.fingerprint(),
            metadata=self.metadata,
            layers=[
                _LayerRecord(
                    name=name,
                    module_type=layer.module_type,
                    neuron_ids=layer.neuron_ids,
                    count=layer.count,
                    correlation=layer.comoments is not None,
                    co_count=None if layer.comoments is None else layer.comoments.n,
                    bounds=layer.bounds,
                    observation=layer.observation,
                    summary=layer.summary(),
                    growth_consumer=None if layer.growth is None else layer.growth.consumer,
                    growth_batches=0 if layer.growth is None else layer.growth.batches,
                    growth_rows=0 if layer.growth is None else layer.growth.rows,
                    growth_nonfinite_rows=(
                        0 if layer.growth is None else layer.growth.nonfinite_rows
                    ),
                )
                for name, layer in self.layers.items()
            ],
        ).model_dump(mode="json")

    def save(self, directory: str | Path) -> Path:
        """Write ``summary.json``, ``stats.safetensors`` (and the model layout, if set) as the
        folder ``directory``, atomically as a whole: every file goes into a new sibling folder
        that then replaces ``directory``, so a failed or killed save leaves the previous
        snapshot loadable. A ``directory`` holding other files than a snapshot's is refused
        with ``SnapshotError`` (it is replaced as a whole); nothing is written then."""
        directory = Path(directory)
        tensors: dict[str, torch.Tensor] = {}
        for name, layer in self.layers.items():
            for key, value in layer.moments.tensors().items():
                tensors[f"{name}/{key}"] = value.detach().cpu().contiguous()
            if layer.comoments is not None:
                tensors[f"{name}/co_mean"] = layer.comoments.mean.cpu().contiguous()
                tensors[f"{name}/co_matrix"] = layer.comoments.c.cpu().contiguous()
            if layer.growth is not None:
                tensors[f"{name}/growth_cross"] = layer.growth.total.cpu().contiguous()
                if layer.growth.input_total is not None:
                    tensors[f"{name}/growth_input"] = layer.growth.input_total.cpu().contiguous()
                    tensors[f"{name}/growth_delta"] = layer.growth.delta_total.cpu().contiguous()
        record = self._record()
        digest = _layers_digest(record["layers"])

        def fill(tmp: Path) -> None:  # a fresh folder: no stale layout of another model in it
            atomic_write_bytes(tmp / ARRAYS_FILE, st_save(tensors, metadata={"layers": digest}))
            atomic_write_json(tmp / SUMMARY_FILE, record)
            if self.model_layout is not None:
                save_layout(self.model_layout, tmp)

        atomic_write_dir(directory, fill, keep=FILES, error=SnapshotError)
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> StatsSnapshot:
        """Read a snapshot folder (see :meth:`save`); a folder missing because a save was cut
        between its two renames is read from the previous copy set aside beside it."""
        directory = resolve_dir(directory)
        summary_path, arrays_path = directory / SUMMARY_FILE, directory / ARRAYS_FILE
        for p in (summary_path, arrays_path):
            if not p.is_file():
                raise SnapshotError(
                    f"{p}: missing (a snapshot folder holds {SUMMARY_FILE} and {ARRAYS_FILE})"
                )
        raw = read_json(summary_path, SnapshotError)
        record = validate_json(raw, _SnapshotRecord, summary_path, SnapshotError)
        try:
            tensors = st_load(arrays_path.read_bytes())
            with safe_open(str(arrays_path), framework="pt") as fh:
                stored = (fh.metadata() or {}).get("layers")
        except (SafetensorError, ValueError, OSError) as exc:
            raise SnapshotError(f"{arrays_path}: not a readable safetensors file ({exc})") from None
        if stored is not None and stored != _layers_digest(raw["layers"]):  # as on disk
            raise SnapshotError(
                f"{arrays_path} and {summary_path} do not belong together: the arrays were saved "
                f"with another summary (a partial copy or an interrupted save?)"
            )
        layers: dict[str, LayerSnapshot] = {}
        for rec in record.layers:
            layers[rec.name] = _layer_from_arrays(rec, tensors, arrays_path)

        expected = {name: layer.neuron_ids for name, layer in layers.items()}
        return cls(
            layers=layers,
            firing_threshold=record.firing_threshold,
            saturation_tolerance=record.saturation_tolerance,
            created=record.created,
            metadata=record.metadata,
            model_layout=load_layout(directory, expected=expected),
        )


def _layers_digest(layers: list[dict[str, Any]]) -> str:
    """The hash of the summary's layer records stored in the arrays file's metadata."""
    return hashlib.sha256(json.dumps(layers, sort_keys=True).encode()).hexdigest()


def _layer_from_arrays(
    rec: _LayerRecord, tensors: dict[str, torch.Tensor], path: Path
) -> LayerSnapshot:
    units = len(rec.neuron_ids)

    def get(key: str, shape: tuple[int, ...]) -> torch.Tensor:
        full = f"{rec.name}/{key}"
        if full not in tensors:
            raise SnapshotError(f"{path}: array {full!r} is missing")
        t = tensors[full]
        if tuple(t.shape) != shape:
            raise SnapshotError(
                f"{path}: array {full!r} has shape {tuple(t.shape)}, expected {shape} "
                f"for {units} units"
            )
        return t.to(torch.float64)

    # ``nonfinite`` is absent in files written before it was counted: zeros (from_tensors)
    keys = [k for k in TENSOR_FIELDS if k != "nonfinite" or f"{rec.name}/{k}" in tensors]
    moments = Moments.from_tensors(rec.count, {k: get(k, (units,)) for k in keys})
    cm = None
    if rec.correlation:
        co_count = rec.count if rec.co_count is None else rec.co_count
        cm = CoMoments(co_count, get("co_mean", (units,)), get("co_matrix", (units, units)))
    bounds = tuple(rec.bounds) if rec.bounds is not None else None
    growth = None
    if rec.growth_consumer is not None:
        key = f"{rec.name}/growth_cross"
        if key not in tensors or tensors[key].dim() != 2:
            raise SnapshotError(f"{path}: array {key!r} is missing or not a matrix")
        total = tensors[key].double()
        sums: tuple = (None, None, 0)
        if rec.growth_rows:
            x_key, d_key = f"{rec.name}/growth_input", f"{rec.name}/growth_delta"
            shapes = {x_key: (total.shape[1],), d_key: (total.shape[0],)}
            for k, shape in shapes.items():
                if k not in tensors or tuple(tensors[k].shape) != shape:
                    raise SnapshotError(f"{path}: array {k!r} is missing or not of shape {shape}")
            sums = (tensors[x_key].double(), tensors[d_key].double(), rec.growth_rows)
        growth = GradientCross(
            rec.growth_consumer, rec.growth_batches, total, *sums, rec.growth_nonfinite_rows
        )
    return LayerSnapshot(
        rec.name, rec.module_type, list(rec.neuron_ids), moments, cm, rec.observation, bounds,
        growth,
    )  # fmt: skip
