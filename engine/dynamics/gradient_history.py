"""A bounded, device-resident history of per-step records: one ring of rows, one slot per name.

A ring is a ``(capacity, slots, width)`` tensor per device; every name gets a slot the first
time it is written. A recorded step writes the rows of many names with one ``index_copy_`` at a
host-side row index, so recording never synchronises with the device. Reading (``rows``) is the
only place that copies to the host, and returns the records oldest first. Rows of a name that
was not written at a recorded step read as ``fill`` (NaN by default).

>>> import torch
>>> ring = RecordRing(capacity=3, width=2)
>>> slots = ring.slots(["w", "b"])
>>> for step in range(4):
...     row = ring.advance(step)
...     ring.write(row, slots, torch.tensor([[step, 10.0 * step], [-1.0, -1.0]]))
>>> ring.steps().tolist(), ring.rows("w")[:, 1].tolist(), ring.names
([1, 2, 3], [10.0, 20.0, 30.0], ['w', 'b'])
"""

from __future__ import annotations

import math

import numpy as np
import torch

from engine.dynamics.errors import DynamicsConfigError, UnknownModuleError


class RecordRing:
    """``capacity`` most recent rows of ``width`` values for each name (oldest dropped first);
    unwritten values read as ``fill``."""

    def __init__(
        self,
        capacity: int,
        width: int,
        *,
        dtype: torch.dtype = torch.float64,
        fill: float = float("nan"),
    ) -> None:
        if capacity < 1:
            raise DynamicsConfigError(f"history capacity must be ≥ 1, got {capacity}")
        self.capacity, self.width, self.dtype = int(capacity), int(width), dtype
        self._steps = np.full(self.capacity, -1, dtype=np.int64)
        self._slots: dict[str, int] = {}
        self._rings: dict[torch.device, torch.Tensor] = {}
        self._written = 0  # rows ever advanced to
        self._fill = fill  # the value of a row (or column) never written

    @property
    def names(self) -> list[str]:
        return list(self._slots)

    def __len__(self) -> int:
        return min(self._written, self.capacity)

    def slots(self, names: list[str]) -> torch.Tensor:
        """The slot index of each name (new names get new slots), for ``write``."""
        for name in names:
            self._slots.setdefault(name, len(self._slots))
        return torch.tensor([self._slots[n] for n in names], dtype=torch.long)

    def advance(self, step: int) -> int:
        """Open the row for ``step`` (overwriting the oldest when full) and return its index."""
        row = self._written % self.capacity
        self._steps[row] = step
        if self._written >= self.capacity:  # a reused row: clear its stale values
            for ring in self._rings.values():
                ring[row].fill_(self._fill)
        self._written += 1
        return row

    def _ring(self, device: torch.device) -> torch.Tensor:
        ring = self._rings.get(device)
        if ring is None or ring.shape[1] < len(self._slots):
            room = len(self._slots) + 4  # grows only when new names appear (rare)
            grown = torch.full(
                (self.capacity, room, self.width), self._fill, dtype=self.dtype, device=device
            )
            if ring is not None:
                grown[:, : ring.shape[1]] = ring
            self._rings[device] = ring = grown
        return ring

    def write(self, row: int, slots: torch.Tensor, values: torch.Tensor) -> None:
        """Store ``values`` (``(len(slots), width)``) at ``row`` of the slots' rings; ``slots``
        is on ``values.device`` (see ``slots``)."""
        if values.dtype != self.dtype:
            values = values.to(self.dtype)
        self._ring(values.device).select(0, row).index_copy_(0, slots, values)

    def _order(self) -> np.ndarray:
        n = len(self)
        if self._written <= self.capacity:
            return np.arange(n)
        start = self._written % self.capacity
        return (np.arange(n) + start) % self.capacity

    def steps(self) -> np.ndarray:
        """The recorded step numbers, oldest first."""
        return self._steps[self._order()].copy()

    def rows(self, name: str) -> np.ndarray:
        """``name``'s rows, oldest first, as a host array (this is where the host sync is).
        Rows written on several devices are merged (each row is written on one)."""
        if name not in self._slots:
            raise UnknownModuleError("recorded parameter", name, self.names)
        slot, order = self._slots[name], torch.as_tensor(self._order(), dtype=torch.long)
        parts = [
            ring[:, slot].index_select(0, order.to(ring.device)).cpu().numpy()
            for ring in self._rings.values()
            if slot < ring.shape[1]
        ]
        if not parts:
            return np.full((len(order), self.width), self._fill, dtype=self._numpy_dtype())
        out = parts[0]
        for part in parts[1:]:
            unset = np.isnan(out) if self._is_nan_fill() else out == self._fill
            out = np.where(unset, part, out)
        return out

    def _is_nan_fill(self) -> bool:
        return isinstance(self._fill, float) and math.isnan(self._fill)

    def _numpy_dtype(self) -> np.dtype:
        return torch.empty(0, dtype=self.dtype).numpy().dtype
