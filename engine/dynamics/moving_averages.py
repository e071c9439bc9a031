"""Moving averages of gradients and weights, and how weights move where the gradient is zero.

``MovingAverages`` keeps, per parameter and on the parameter's device, an exponential moving
average (EMA) of its gradient and of its values (``ema = beta·ema + (1 − beta)·x``; the first
step starts it at ``x``), and at every recorded step writes one row of :data:`COLUMNS`:

* ``grad_ema_norm``: ‖EMA(g)‖ — the gradient's persistent direction (noise averages out);
* ``grad_ema_cosine``: cosine between g and EMA(g) (1: the step agrees with the trend);
* ``weight_ema_distance``: ‖w − EMA(w)‖ — how far the weights are from their running mean;
* ``zero_grad``: components whose previous gradient was near zero (|g| < ``eps``);
* ``zero_grad_step``: mean |Δw| over those components since the previous step — weights that
  still move without a gradient (momentum, weight decay, Adam's second moment);
* ``other_step``: mean |Δw| over the other components.

Rows stay on the device (a list of small tensors) until :meth:`history`; Python loops run over
parameters, never over their entries. Call :meth:`update` after ``backward()`` and before
``optimizer.step()``, or ``with averages.tracking(optimizer):``. A parameter whose shape,
dtype or device changed (surgery) starts afresh; its first row then has NaN steps.

>>> import torch, torch.nn as nn
>>> _ = torch.manual_seed(0)
>>> model = nn.Linear(3, 2)
>>> opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
>>> averages = MovingAverages(model, beta=0.5, eps=1e-3)
>>> with averages.tracking(opt):
...     for _ in range(3):
...         opt.zero_grad()
...         model(torch.randn(4, 3)).pow(2).mean().backward()
...         opt.step()
>>> hist = averages.history()
>>> hist.steps.tolist(), hist.column("weight", "zero_grad").tolist()
([0, 1, 2], [nan, 0.0, 0.0])
>>> sorted(averages.ema_weights()) == ["bias", "weight"]
True
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict
from torch import nn

from engine.dynamics.errors import DynamicsConfigError, DynamicsError, UnknownModuleError
from engine.io import atomic_write_json, read_json_model

COLUMNS = (
    "grad_ema_norm",
    "grad_ema_cosine",
    "weight_ema_distance",
    "zero_grad",
    "zero_grad_step",
    "other_step",
)
FORMAT = "engine.moving_averages/1"


class MovingAverageError(DynamicsError, ValueError):
    """A moving-average file is malformed (names the file and the field)."""


class _File(BaseModel):
    model_config = ConfigDict(extra="forbid")
    format: str
    beta: float
    eps: float
    every: int
    columns: list[str]
    steps: list[int]
    records: dict[str, list[list[float | None]]]


@dataclass
class MovingAverageHistory:
    """``records[name]`` is ``(steps, len(COLUMNS))`` on the host (NaN where not recorded)."""

    steps: np.ndarray
    records: dict[str, np.ndarray]
    beta: float = 0.9
    eps: float = 1e-5
    every: int = 1

    @property
    def parameters(self) -> list[str]:
        return list(self.records)

    def column(self, name: str, column: str) -> np.ndarray:
        """One column of one parameter over the recorded steps."""
        if column not in COLUMNS:
            raise DynamicsConfigError(f"unknown column {column!r}; columns: {list(COLUMNS)}")
        if name not in self.records:
            raise UnknownModuleError("parameter", name, self.parameters)
        return self.records[name][:, COLUMNS.index(column)]

    def save(self, path: str | os.PathLike[str]) -> Path:
        def clean(rows: np.ndarray) -> list[list[float | None]]:
            return [[float(v) if math.isfinite(v) else None for v in r] for r in rows.tolist()]

        return atomic_write_json(
            path,
            {
                "format": FORMAT, "beta": self.beta, "eps": self.eps, "every": self.every,
                "columns": list(COLUMNS), "steps": self.steps.tolist(),
                "records": {n: clean(r) for n, r in self.records.items()},
            },
        )  # fmt: skip

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> MovingAverageHistory:
        data = read_json_model(path, _File, MovingAverageError)
        if data.format != FORMAT or data.columns != list(COLUMNS):
            raise MovingAverageError(f"{path}: expected format {FORMAT!r} with columns {COLUMNS}")
        records = {}
        for name, rows in data.records.items():
            if len(rows) != len(data.steps) or any(len(r) != len(COLUMNS) for r in rows):
                raise MovingAverageError(
                    f"{path}: records[{name!r}] must be {len(data.steps)} rows of {len(COLUMNS)}"
                )
            records[name] = np.array(
                [[np.nan if v is None else v for v in r] for r in rows], dtype=np.float64
            ).reshape(len(rows), len(COLUMNS))
        steps = np.asarray(data.steps, dtype=np.int64)
        return cls(steps, records, beta=data.beta, eps=data.eps, every=data.every)


@dataclass
class _State:
    key: tuple[Any, ...]
    grad_ema: torch.Tensor
    weight_ema: torch.Tensor
    previous: torch.Tensor
    zero: torch.Tensor  # |g| < eps at the previous recorded step


@dataclass
class MovingAverages:
    """EMA of gradients and weights per parameter (see the module docstring)."""

    model: nn.Module
    beta: float = 0.9
    eps: float = 1e-5
    every: int = 1
    _state: dict[str, _State] = field(default_factory=dict, init=False, repr=False)
    _rows: list[tuple[int, list[str], torch.Tensor]] = field(
        default_factory=list, init=False, repr=False
    )
    _calls: int = field(default=0, init=False, repr=False)
    _hook: Any = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if not 0.0 <= self.beta < 1.0:
            raise DynamicsConfigError(f"beta must be in [0, 1), got {self.beta}")
        if not self.eps > 0:
            raise DynamicsConfigError(f"eps must be > 0, got {self.eps}")
        if self.every < 1:
            raise DynamicsConfigError(f"every must be ≥ 1, got {self.every}")

    @torch.no_grad()
    def update(self, step: int | None = None) -> bool:
        """Fold the current gradients and weights into the averages; record a row every
        ``every``-th call. Returns whether this call recorded."""
        step = self._calls if step is None else int(step)
        self._calls += 1
        if (self._calls - 1) % self.every:
            return False
        names, rows = [], []
        for name, p in self.model.named_parameters():
            if p.grad is None or p.grad.is_sparse:
                continue
            g = p.grad.detach().to(torch.float32 if p.dtype in (torch.float16, torch.bfloat16)
                                   else p.dtype)  # fmt: skip
            w = p.detach().to(g.dtype)
            key = (tuple(p.shape), p.dtype, p.device, p.data_ptr())
            state = self._state.get(name)
            nan = torch.full((), float("nan"), dtype=g.dtype, device=g.device)
            if state is None or state.key != key:  # new, or changed by surgery
                state = self._state[name] = _State(key, g.clone(), w.clone(), w.clone(),
                                                   g.abs() < self.eps)  # fmt: skip
                zero_count, zero_step, other_step = nan, nan, nan
            else:
                state.grad_ema.mul_(self.beta).add_(g, alpha=1 - self.beta)
                state.weight_ema.mul_(self.beta).add_(w, alpha=1 - self.beta)
                moved = (w - state.previous).abs()
                zeros = state.zero.to(g.dtype)
                n_zero = zeros.sum()
                zero_count = n_zero
                zero_step = (moved * zeros).sum() / n_zero  # NaN when no zero gradient
                other_step = (moved * (1 - zeros)).sum() / (zeros.numel() - n_zero)
                state.previous.copy_(w)
                state.zero = g.abs() < self.eps
            ema_norm = state.grad_ema.norm()
            cosine = (g * state.grad_ema).sum() / (g.norm() * ema_norm)
            distance = (w - state.weight_ema).norm()
            rows.append(torch.stack([ema_norm, cosine, distance, zero_count, zero_step,
                                     other_step]).to(torch.float64))  # fmt: skip
            names.append(name)
        if rows:  # one small tensor per recorded step, on the device (no sync here)
            self._rows.append((step, names, torch.stack([r.to(rows[0].device) for r in rows])))
        return bool(rows)

    def ema_weights(self) -> dict[str, torch.Tensor]:
        """The moving average of every tracked parameter (e.g. to evaluate an EMA model)."""
        return {name: s.weight_ema.clone() for name, s in self._state.items()}

    def attach(self, optimizer: torch.optim.Optimizer) -> None:
        """Update before every ``optimizer.step()`` (a step pre-hook)."""
        self.detach()

        def before_step(*_: Any) -> None:
            self.update()

        self._hook = optimizer.register_step_pre_hook(before_step)

    def detach(self) -> None:
        if self._hook is not None:
            self._hook.remove()
            self._hook = None

    @contextmanager
    def tracking(self, optimizer: torch.optim.Optimizer) -> Iterator[MovingAverages]:
        self.attach(optimizer)
        try:
            yield self
        finally:
            self.detach()

    def history(self) -> MovingAverageHistory:
        """The recorded rows on the host (one copy per recorded step, made here)."""
        steps = np.array([s for s, _, _ in self._rows], dtype=np.int64)
        names = list(dict.fromkeys(n for _, ns, _ in self._rows for n in ns))
        records = {n: np.full((len(steps), len(COLUMNS)), np.nan) for n in names}
        for t, (_, ns, rows) in enumerate(self._rows):
            values = rows.cpu().numpy()
            for i, n in enumerate(ns):
                records[n][t] = values[i]
        return MovingAverageHistory(steps, records, self.beta, self.eps, self.every)
