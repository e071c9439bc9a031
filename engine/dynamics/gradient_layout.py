"""The watched parameters of one device and dtype laid end to end, with their carried state.

One recorded step is then a fixed number of tensor ops over one flat vector, whatever the
number of parameters (per-op dispatch, not arithmetic, dominates small parameters on CPU):
gradients and weights are copied into flat buffers, ``step_sums`` runs once, and one reduction
per parameter gives its ``RAW`` sums.

The layout is keyed by each parameter's name, object, shape, device and dtype. When surgery
replaces or reshapes a parameter, a new layout is built: unchanged parameters keep their
carried state (a copy of their slices), the others start *fresh* (their next record has no
previous step).

>>> import torch
>>> a, b = torch.nn.Parameter(torch.ones(2, 3)), torch.nn.Parameter(torch.zeros(4))
>>> a.grad, b.grad = torch.full((2, 3), 0.5), torch.zeros(4)
>>> flat = FlatParameters([("a", a), ("b", b)])
>>> flat.sizes, flat.fresh
([6, 4], [True, True])
>>> sums, fresh = flat.step(eps=1e-3)
>>> sums.shape, fresh, flat.fresh  # (parameters, 2 + len(RAW)); fresh until the first step
(torch.Size([2, 10]), [True, True], [False, False])
"""

from __future__ import annotations

import weakref

import torch
from torch import nn

from engine.dynamics.gradient_stats import RAW, step_sums

LayoutKey = tuple[tuple[str, int, tuple[int, ...], str, torch.dtype], ...]


def layout_key(named: list[tuple[str, nn.Parameter]]) -> LayoutKey:
    """What must stay the same for carried state to stay valid: names, objects, shapes."""
    return tuple((name, id(p), tuple(p.shape), str(p.device), p.dtype) for name, p in named)


class FlatParameters:
    """Flat carried state (``int8`` codes, previous weights) and scratch for ``named``
    parameters (all on one device, one dtype); ``old`` hands over unchanged parameters."""

    def __init__(
        self, named: list[tuple[str, nn.Parameter]], old: FlatParameters | None = None
    ) -> None:
        self.names = [n for n, _ in named]
        self.params = [weakref.ref(p) for _, p in named]
        self.shapes = [tuple(p.shape) for _, p in named]
        self.sizes = [p.numel() for _, p in named]
        self.key = layout_key(named)
        first = named[0][1]
        total, dtype, device = sum(self.sizes), first.dtype, first.device
        work_dtype = dtype if dtype in (torch.float32, torch.float64) else torch.float32
        self.code = torch.zeros(total, dtype=torch.int8, device=device)
        self.prev_weight = torch.empty(total, dtype=work_dtype, device=device)
        self.grads = torch.empty(total, dtype=work_dtype, device=device)
        self.weights = torch.empty(total, dtype=work_dtype, device=device)
        self.rows = torch.empty((len(RAW), total), dtype=work_dtype, device=device)
        self.scratch = torch.empty((3, total), dtype=work_dtype, device=device)
        self.fresh = [True] * len(named)
        self.numel = torch.tensor(self.sizes, dtype=torch.float64).to(device)
        carried = old._slices() if old is not None else {}
        with torch.no_grad():
            for i, ((name, p), (start, stop)) in enumerate(zip(named, self.bounds())):
                kept = carried.get(name)
                if (
                    kept is not None
                    and kept[0]() is p
                    and kept[1] == tuple(p.shape)
                    and (kept[2].device == device)
                ):
                    self.code[start:stop] = kept[2]
                    self.prev_weight[start:stop] = kept[3]
                    self.fresh[i] = kept[4]
                else:
                    self.prev_weight[start:stop] = p.detach().reshape(-1)

    def bounds(self) -> list[tuple[int, int]]:
        out, start = [], 0
        for size in self.sizes:
            out.append((start, start + size))
            start += size
        return out

    def _slices(self) -> dict[str, tuple]:
        return {
            name: (ref, shape, self.code[a:b], self.prev_weight[a:b], fresh)
            for name, ref, shape, (a, b), fresh in zip(
                self.names, self.params, self.shapes, self.bounds(), self.fresh
            )
        }

    def step(self, eps: float) -> tuple[torch.Tensor, list[bool]]:
        """One step over every parameter: ``(parameters, 2 + len(RAW))`` records (numel, fresh,
        sums) on the device, and which parameters were fresh (had no previous step)."""
        grads, weights = [], []
        for ref in self.params:
            p = ref()
            grads.append(p.grad.detach().reshape(-1))
            weights.append(p.detach().reshape(-1))
        torch.cat(grads, out=self.grads)
        torch.cat(weights, out=self.weights)
        sums = step_sums(
            self.grads,
            self.weights,
            self.code,
            self.prev_weight,
            eps,
            self.rows,
            self.scratch,
            self.bounds(),
        )
        fresh, self.fresh = self.fresh, [False] * len(self.names)
        flags = self.numel.new_tensor(fresh) if any(fresh) else self.numel.new_zeros(len(fresh))
        records = torch.cat((self.numel[:, None], flags[:, None], sums.to(torch.float64)), 1)
        return records, fresh

    def sign_codes(self, index: torch.Tensor) -> torch.Tensor:
        """The packed codes at flat ``index`` (for the sign heatmap)."""
        return self.code.index_select(0, index)
