"""A bounded, device-resident history of per-step records: one ring per parameter name.

Rows are written with tensor copies at a host-side row index, so recording never synchronises
with the device. Reading (``rows``) is the only place that copies to the host, and returns the
records oldest first. Rows of a name that did not exist at a recorded step are NaN.

>>> import torch
>>> ring = RecordRing(capacity=3, width=2)
>>> for step in range(4):
...     row = ring.advance(step)
...     ring.write("w", row, torch.tensor([step, 10.0 * step]))
>>> ring.steps().tolist(), ring.rows("w")[:, 1].tolist()
([1, 2, 3], [10.0, 20.0, 30.0])
"""

from __future__ import annotations

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
        self._rings: dict[str, torch.Tensor] = {}
        self._written = 0  # rows ever advanced to
        self._fill = fill  # the value of a row (or column) never written

    @property
    def names(self) -> list[str]:
        return list(self._rings)

    def __len__(self) -> int:
        return min(self._written, self.capacity)

    def advance(self, step: int) -> int:
        """Open the row for ``step`` (overwriting the oldest when full) and return its index."""
        row = self._written % self.capacity
        self._steps[row] = step
        if self._written >= self.capacity:  # a reused row: clear every ring's stale values
            for ring in self._rings.values():
                ring[row].fill_(self._fill)
        self._written += 1
        return row

    def write(self, name: str, row: int, values: torch.Tensor, start: int = 0) -> None:
        """Store ``values`` at ``row`` (columns ``start:start+len``) of ``name``'s ring."""
        ring = self._rings.get(name)
        if ring is None or ring.device != values.device:
            ring = torch.full(
                (self.capacity, self.width), self._fill, dtype=self.dtype, device=values.device
            )
            self._rings[name] = ring
        ring[row, start : start + values.shape[0]] = values

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
        """``name``'s rows, oldest first, as a host array (this is where the host sync is)."""
        if name not in self._rings:
            raise UnknownModuleError("recorded parameter", name, self.names)
        order = torch.as_tensor(self._order(), dtype=torch.long)
        return self._rings[name].index_select(0, order.to(self._rings[name].device)).cpu().numpy()
