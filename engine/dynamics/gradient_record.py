"""Recorded gradient dynamics as plain host data: columns, derived fractions, JSON round trip.

Counts are per parameter and per recorded step (see ``gradient_stats.COLUMNS``); fractions are
derived on demand:

* ``near_zero_fraction`` = near_zero / numel
* ``released_fraction`` = released / prev_near_zero (near zero before, not any more)
* ``retained_fraction`` = retained / prev_near_zero (near zero before and still)
* ``sign_flip_fraction``, ``minimum_fraction``, ``maximum_fraction`` = count / numel

A ratio with a zero denominator is NaN (written ``null`` in JSON). ``"*"`` as the parameter
name sums the counts over every parameter (model-level curves; norms combine as
``sqrt(Σ norm²)``).

>>> import numpy as np
>>> from engine.dynamics.gradient_stats import COLUMNS
>>> row = dict(numel=10, near_zero=4, prev_near_zero=5, retained=3, released=2, sign_flips=1,
...            minimum_crossings=1, maximum_crossings=0, weight_diff_norm=0.5, grad_norm=2.0)
>>> hist = GradientHistory(steps=np.array([7]),
...                        records={"w": np.array([[row[c] for c in COLUMNS]], dtype=float)})
>>> hist.column("w", "released_fraction").tolist(), hist.column("*", "near_zero").tolist()
([0.4], [4.0])
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict

from engine.dynamics.errors import DynamicsConfigError, DynamicsError, UnknownModuleError
from engine.dynamics.gradient_stats import COLUMN, COLUMNS, derive_columns
from engine.io import atomic_write_json, read_json_model

DERIVED: dict[str, tuple[str, str]] = {
    "near_zero_fraction": ("near_zero", "numel"),
    "released_fraction": ("released", "prev_near_zero"),
    "retained_fraction": ("retained", "prev_near_zero"),
    "sign_flip_fraction": ("sign_flips", "numel"),
    "minimum_fraction": ("minimum_crossings", "numel"),
    "maximum_fraction": ("maximum_crossings", "numel"),
}
_NORMS = ("weight_diff_norm", "grad_norm")


class GradientHistoryError(DynamicsError, ValueError):
    """A gradient-history file is malformed (names the file and the field)."""


class _HistoryFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    format: str
    columns: list[str]
    eps: float
    every: int
    steps: list[int]
    records: dict[str, list[list[float | None]]]
    signs: dict[str, list[list[int]]] = {}
    resets: list[dict[str, Any]] = []


@dataclass
class GradientHistory:
    """``records[name]`` is ``(steps, len(COLUMNS))``; ``signs[name]`` the sampled packed
    states ``(steps, sign_samples)`` (see ``gradient_stats``; 3 = no component)."""

    steps: np.ndarray
    records: dict[str, np.ndarray]
    signs: dict[str, np.ndarray] = field(default_factory=dict)
    eps: float = 1e-5
    every: int = 1
    resets: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def from_records(cls, records: dict[str, np.ndarray], **fields: Any) -> GradientHistory:
        """From stored device records (``numel, fresh, *RAW`` per row; see ``gradient_stats``)."""
        return cls(records={n: derive_columns(r) for n, r in records.items()}, **fields)

    @property
    def parameters(self) -> list[str]:
        return list(self.records)

    def _raw(self, name: str, column: str) -> np.ndarray:
        if name == "*":
            stacked = np.stack([r[:, COLUMN[column]] for r in self.records.values()])
            if column in _NORMS:
                return np.sqrt(np.nansum(stacked**2, axis=0))
            return np.nansum(stacked, axis=0)
        if name not in self.records:
            raise UnknownModuleError("recorded parameter", name, self.parameters)
        return self.records[name][:, COLUMN[column]]

    def column(self, name: str, column: str) -> np.ndarray:
        """One column (or derived fraction) of parameter ``name`` (``"*"``: all summed)."""
        if column in DERIVED:
            num, den = (self._raw(name, c) for c in DERIVED[column])
            with np.errstate(invalid="ignore", divide="ignore"):
                return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)
        if column not in COLUMN:
            raise DynamicsConfigError(f"unknown column {column!r}; known: {[*COLUMNS, *DERIVED]}")
        return self._raw(name, column)

    # --- JSON -----------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        def clean(rows: np.ndarray) -> list[list[float | None]]:
            return [[v if math.isfinite(v) else None for v in row] for row in rows.tolist()]

        return {
            "format": "engine.gradient_history/1",
            "columns": list(COLUMNS),
            "eps": self.eps,
            "every": self.every,
            "steps": self.steps.tolist(),
            "records": {n: clean(r) for n, r in self.records.items()},
            "signs": {n: s.astype(int).tolist() for n, s in self.signs.items()},
            "resets": self.resets,
        }

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write strict JSON atomically (NaN as ``null``)."""
        return atomic_write_json(path, self.to_json())

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> GradientHistory:
        data = read_json_model(path, _HistoryFile, GradientHistoryError)
        if data.columns != list(COLUMNS):
            raise GradientHistoryError(f"{path}: field 'columns': expected {list(COLUMNS)}")
        for name, rows in data.records.items():
            if len(rows) != len(data.steps) or any(len(r) != len(COLUMNS) for r in rows):
                raise GradientHistoryError(
                    f"{path}: records[{name!r}] must be {len(data.steps)} rows of "
                    f"{len(COLUMNS)} values"
                )
        return cls(
            steps=np.asarray(data.steps, dtype=np.int64),
            records={
                n: np.array([[np.nan if v is None else v for v in r] for r in rows], dtype=float)
                for n, rows in data.records.items()
            },
            signs={n: np.asarray(s, dtype=np.int8) for n, s in data.signs.items()},
            eps=data.eps,
            every=data.every,
            resets=data.resets,
        )
