"""Training history: per-epoch per-neuron statistics with the epoch's metrics.

Each record holds, for every tracked layer, the neuron IDs alive in that epoch and their mean,
variance and firing rate over that epoch's observations, so evolution stays meaningful when
surgery changes layer widths mid-run. Saved as JSON; SelfModifyingSLM's history files
(``neuron_histories``) load too.

>>> import torch
>>> from engine.stats import Moments
>>> h = TrainingHistory()
>>> for e in range(3):
...     stats = Moments.from_samples(torch.full((4, 1), float(e)))
...     _ = h.log(e, {"fc": ([7], stats)}, loss=1 / (e + 1))
>>> h.neuron_evolution(7)["mean"], h.metric("loss")[-1]
([0.0, 1.0, 2.0], 0.3333333333333333)
"""

from __future__ import annotations

import json
import math
import numbers
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from engine.errors import ConfigurationError, HistoryError
from engine.io import atomic_write_json
from engine.stats import Moments

FORMAT = "neuron-engine.history"
VERSION = 1


def _num(v: float) -> float | None:
    return v if math.isfinite(v) else None


def _metric_value(key: str, value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ConfigurationError(f"metric {key!r} must be a scalar, got shape {value.shape}")
        value = value.item()
    if hasattr(value, "item") and not isinstance(value, numbers.Number):
        value = value.item()  # numpy scalars
    if not isinstance(value, numbers.Real):
        raise ConfigurationError(f"metric {key!r} must be a number, got {value!r}")
    return _num(float(value))


@dataclass
class EpochRecord:
    epoch: int
    metrics: dict[str, float | None]
    layers: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "metrics": self.metrics, "layers": self.layers}


class TrainingHistory:
    """A list of ``EpochRecord`` with save/load and per-neuron evolution."""

    def __init__(self) -> None:
        self.records: list[EpochRecord] = []

    def __len__(self) -> int:
        return len(self.records)

    def log(
        self,
        epoch: int,
        layers: dict[str, tuple[list[int], Moments]],
        loss: float | None = None,
        accuracy: float | None = None,
        **metrics: Any,
    ) -> EpochRecord:
        values = {"loss": loss, "accuracy": accuracy, **metrics}
        clean = {k: _metric_value(k, v) for k, v in values.items() if v is not None}
        per_layer = {}
        for name, (ids, m) in layers.items():
            per_layer[name] = {
                "neuron_ids": [int(i) for i in ids],
                "count": m.n,
                "mean": [_num(v) for v in m.mean.tolist()],
                "variance": [_num(v) for v in m.variance.tolist()],
                "firing_rate": [_num(v) for v in m.firing_rate.tolist()],
            }
        record = EpochRecord(int(epoch), clean, per_layer)
        self.records.append(record)
        return record

    # --- queries --------------------------------------------------------------------------
    def metric(self, name: str) -> list[float | None]:
        """One metric over the logged epochs (None where an epoch did not log it)."""
        return [r.metrics.get(name) for r in self.records]

    @property
    def epochs(self) -> list[int]:
        return [r.epoch for r in self.records]

    def neuron_evolution(self, neuron_id: int) -> dict[str, list[Any]]:
        """Mean, variance and firing rate of one neuron per epoch (the epochs it was alive),
        with the epoch's loss and accuracy."""
        out: dict[str, list[Any]] = {
            "epoch": [], "layer": [], "mean": [], "variance": [], "firing_rate": [],
            "loss": [], "accuracy": [],
        }  # fmt: skip
        for r in self.records:
            for name, layer in r.layers.items():
                ids = layer["neuron_ids"]
                if neuron_id in ids:
                    i = ids.index(neuron_id)
                    out["epoch"].append(r.epoch)
                    out["layer"].append(name)
                    for key in ("mean", "variance", "firing_rate"):
                        out[key].append(layer[key][i])
                    out["loss"].append(r.metrics.get("loss"))
                    out["accuracy"].append(r.metrics.get("accuracy"))
                    break
        if not out["epoch"]:
            raise HistoryError(f"neuron {neuron_id} appears in no logged epoch")
        return out

    # --- persistence ----------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": VERSION,
            "epochs": [r.to_json() for r in self.records],
        }

    def save(self, path: str | Path) -> Path:
        return atomic_write_json(path, self.to_json())

    @classmethod
    def load(cls, path: str | Path) -> TrainingHistory:
        """Load a history saved by ``save`` or by SelfModifyingSLM's ``save_training_history``."""
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise HistoryError(f"{path}: no such history file") from None
        except json.JSONDecodeError as exc:
            raise HistoryError(f"{path}: not valid JSON ({exc})") from None
        if isinstance(data, dict) and data.get("format") == FORMAT:
            return cls._from_ours(data, path)
        if isinstance(data, dict) and "neuron_histories" in data:
            return cls._from_selfmodifying_slm(data, path)
        raise HistoryError(
            f"{path}: not a training history (expected format {FORMAT!r} or a "
            f"SelfModifyingSLM file with 'neuron_histories')"
        )

    @classmethod
    def _from_ours(cls, data: dict[str, Any], path: Path) -> TrainingHistory:
        if data.get("version") != VERSION:
            raise HistoryError(f"{path}: version {data.get('version')!r}, expected {VERSION}")
        hist = cls()
        try:
            for e in data["epochs"]:
                hist.records.append(EpochRecord(int(e["epoch"]), dict(e["metrics"]), e["layers"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise HistoryError(f"{path}: malformed epoch record ({exc!r})") from None
        return hist

    @classmethod
    def _from_selfmodifying_slm(cls, data: dict[str, Any], path: Path) -> TrainingHistory:
        histories = data["neuron_histories"]
        if not isinstance(histories, dict) or not histories:
            raise HistoryError(f"{path}: 'neuron_histories' is empty or not an object")
        ids = sorted(int(k) for k in histories)
        try:
            n_epochs = max(len(h.get("mean", [])) for h in histories.values())
            first = histories[str(ids[0])]
            hist = cls()
            for e in range(n_epochs):

                def col(key: str, e: int = e) -> list[float | None]:
                    vals = [histories[str(i)].get(key, []) for i in ids]
                    return [v[e] if e < len(v) else None for v in vals]

                metrics = {
                    k: first[k][e] for k in ("loss", "accuracy") if e < len(first.get(k, []))
                }
                layer = {
                    "neuron_ids": ids,
                    "count": None,
                    "mean": col("mean"),
                    "variance": col("variance"),
                    "firing_rate": col("frequency"),
                }
                hist.records.append(EpochRecord(e, metrics, {"imported": layer}))
        except (AttributeError, KeyError, TypeError, IndexError) as exc:
            raise HistoryError(f"{path}: malformed SelfModifyingSLM history ({exc!r})") from None
        return hist
