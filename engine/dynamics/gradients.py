"""Gradient dynamics during training: near-zero gradients, their release, sign flips, steps.

``GradientTracker`` records, per parameter and per recorded step, the columns of
``engine.dynamics.gradient_stats.COLUMNS`` (near-zero count, released and retained counts, sign
flips, local minimum / maximum crossings, weight-difference and gradient norms). State stays on
the parameters' device (one flat ``int8`` code and one previous-weights copy per device and
dtype); records go to a preallocated device ring; nothing syncs with the host until
``history()`` is asked for.

Call ``update()`` after ``backward()`` and before ``optimizer.step()``, or let an optimizer call
it (``attach(optimizer)`` / ``with tracker.tracking(optimizer):``). Parameters are looked up by
name at every recorded step, so the tracker follows surgery: a parameter whose object or shape
changed starts afresh (its previous-step columns are NaN once) and the reset is logged.

>>> import torch, torch.nn as nn
>>> _ = torch.manual_seed(0)
>>> model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
>>> opt = torch.optim.SGD(model.parameters(), lr=0.1)
>>> tracker = GradientTracker(model, eps=1e-3)
>>> with tracker.tracking(opt):
...     for _ in range(3):
...         opt.zero_grad()
...         model(torch.randn(8, 4)).pow(2).mean().backward()
...         opt.step()
>>> hist = tracker.history()
>>> hist.steps.tolist(), hist.parameters[:2]
([0, 1, 2], ['0.weight', '0.bias'])
>>> hist.column("0.weight", "numel").tolist(), float(hist.column("0.weight", "sign_flips")[0])
([12.0, 12.0, 12.0], nan)
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from engine.dynamics.errors import DynamicsConfigError
from engine.dynamics.gradient_history import RecordRing
from engine.dynamics.gradient_layout import FlatParameters, layout_key
from engine.dynamics.gradient_record import GradientHistory
from engine.dynamics.gradient_stats import RECORD_WIDTH
from engine.errors import TrackingStateError
from engine.observe import HookSet

SIGN_ABSENT = 3
"""Value of a sign-sample slot with no gradient component behind it."""


@dataclass
class GradientTracker:
    """Per-parameter gradient statistics every ``every`` calls of ``update()``.

    Args:
        model: the module whose parameters are watched (looked up by name at each record).
        eps: a gradient component is "near zero" when ``|g| < eps``.
        every: record one call in ``every`` (the previous step is then the previous *record*).
        include, exclude: ``fnmatch`` patterns over parameter names (default: every parameter
            that requires grad).
        capacity: records kept on device per parameter (a ring: the oldest are dropped).
        sign_samples: gradient components per parameter kept for the sign heatmap (evenly
            spaced over the flattened parameter; 0 disables it).
    """

    model: nn.Module
    eps: float = 1e-5
    every: int = 1
    include: Sequence[str] | None = None
    exclude: Sequence[str] = ()
    capacity: int = 4096
    sign_samples: int = 256
    resets: list[dict[str, Any]] = field(default_factory=list, init=False)
    calls: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        if not isinstance(self.model, nn.Module):
            raise DynamicsConfigError(f"model must be an nn.Module, got {type(self.model)!r}")
        if not self.eps > 0:
            raise DynamicsConfigError(f"eps must be > 0, got {self.eps!r}")
        if int(self.every) != self.every or self.every < 1:
            raise DynamicsConfigError(f"every must be an integer ≥ 1, got {self.every!r}")
        if self.sign_samples < 0:
            raise DynamicsConfigError(f"sign_samples must be ≥ 0, got {self.sign_samples!r}")
        if isinstance(self.include, str) or isinstance(self.exclude, str):
            raise DynamicsConfigError("include/exclude must be lists of patterns, not a string")
        if self.include is not None and not self.parameters():
            raise DynamicsConfigError(
                f"include={list(self.include)!r} matches no parameter of "
                f"{type(self.model).__name__}"
            )
        self._flats: dict[tuple[str, torch.dtype], FlatParameters] = {}
        self._sign_index: dict[tuple[str, torch.dtype], torch.Tensor] = {}
        self._records = RecordRing(self.capacity, RECORD_WIDTH)
        self._signs = RecordRing(
            self.capacity, max(self.sign_samples, 1), dtype=torch.int8, fill=SIGN_ABSENT
        )
        self._hooks = HookSet()

    # --- selection ------------------------------------------------------------------------
    def _wanted(self, name: str) -> bool:
        if self.include is not None and not any(fnmatch.fnmatchcase(name, p) for p in self.include):
            return False
        return not any(fnmatch.fnmatchcase(name, p) for p in self.exclude)

    def parameters(self) -> dict[str, nn.Parameter]:
        """The watched parameters, looked up by name now (new objects after surgery)."""
        return {
            n: p for n, p in self.model.named_parameters() if p.requires_grad and self._wanted(n)
        }

    # --- recording ------------------------------------------------------------------------
    def update(self, step: int | None = None) -> bool:
        """Record this step if the schedule says so (``True`` when recorded).

        ``step`` labels the record (default: the number of ``update`` calls before this one).
        Parameters without a gradient are skipped (their row stays NaN).
        """
        call = self.calls
        self.calls += 1
        if call % self.every:
            return False
        label = call if step is None else int(step)
        groups: dict[tuple[str, torch.dtype], list[tuple[str, nn.Parameter]]] = {}
        for name, p in self.parameters().items():
            if p.grad is not None:
                groups.setdefault((str(p.device), p.dtype), []).append((name, p))
        row = self._records.advance(label)
        self._signs.advance(label)
        with torch.no_grad():
            for key, named in groups.items():
                flat = self._layout(key, named, label)
                records, _ = flat.step(self.eps)
                for i, name in enumerate(flat.names):
                    self._records.write(name, row, records[i])
                if self.sign_samples:
                    codes = flat.sign_codes(self._sign_index[key])
                    widths = [min(size, self.sign_samples) for size in flat.sizes]
                    for name, part in zip(flat.names, codes.split(widths)):
                        self._signs.write(name, row, part)
        return True

    def _layout(
        self, key: tuple[str, torch.dtype], named: list[tuple[str, nn.Parameter]], step: int
    ) -> FlatParameters:
        old = self._flats.get(key)
        if old is not None and old.key == layout_key(named):
            return old
        for other in self._flats.values():  # a parameter may also have moved between groups
            for name, ref, shape in zip(other.names, other.params, other.shapes):
                now = dict(named).get(name)
                if now is not None and (ref() is not now or shape != tuple(now.shape)):
                    self.resets.append(
                        {
                            "step": step,
                            "parameter": name,
                            "old_shape": list(shape),
                            "new_shape": list(now.shape),
                            "reason": "shape changed"
                            if shape != tuple(now.shape)
                            else "new object",
                        }
                    )
        flat = FlatParameters(named, old)
        self._flats[key] = flat
        index = []
        for (start, _), size in zip(flat.bounds(), flat.sizes):
            k = min(size, self.sign_samples)
            index.append(torch.linspace(0, max(size - 1, 0), k).round().long() + start)
        self._sign_index[key] = torch.cat(index).to(flat.code.device)
        return flat

    def on_surgery(self) -> None:
        """Forget every carried state (optional: changed parameters are detected and reset
        automatically at the next record; unchanged ones keep their previous step)."""
        self._flats.clear()
        self._sign_index.clear()

    # --- hooks ----------------------------------------------------------------------------
    def attach(self, optimizer: torch.optim.Optimizer) -> None:
        """Call ``update()`` before every ``optimizer.step()`` (until ``detach()``)."""
        if len(self._hooks):
            raise TrackingStateError("gradient tracking is already attached; call detach() first")
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise DynamicsConfigError(f"expected a torch.optim.Optimizer, got {type(optimizer)!r}")

        def before_step(opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
            self.update()

        self._hooks.add(optimizer.register_step_pre_hook(before_step))

    def detach(self) -> None:
        """Remove the optimizer hook (idempotent)."""
        self._hooks.remove()

    @property
    def is_attached(self) -> bool:
        return len(self._hooks) > 0

    @contextmanager
    def tracking(self, optimizer: torch.optim.Optimizer) -> Iterator[GradientTracker]:
        """``with tracker.tracking(opt):`` records before each ``opt.step()`` in the block; the
        hook is removed on exit, also when the block raises."""
        self.attach(optimizer)
        try:
            yield self
        finally:
            self.detach()

    # --- reading --------------------------------------------------------------------------
    def history(self) -> GradientHistory:
        """Everything recorded so far as host data (the one place that syncs)."""
        names = self._records.names
        return GradientHistory.from_records(
            steps=self._records.steps(),
            records={n: self._records.rows(n) for n in names},
            signs={n: self._signs.rows(n) for n in names} if self.sign_samples else {},
            eps=self.eps,
            every=self.every,
            resets=list(self.resets),
        )
