"""Gradient dynamics during training: near-zero gradients, their release, sign flips, steps.

``GradientTracker`` records, per parameter and per recorded step, the columns of
``engine.dynamics.gradient_stats.COLUMNS`` (near-zero count, released and retained counts, sign
flips, local minimum / maximum crossings, weight-difference and gradient norms). State stays on
the parameters' device (per device and dtype: one flat copy of the previous weights and two
``int8`` flags per component); records go to a preallocated device ring; nothing syncs with
the host until ``history()`` is asked for. On CPU a recorded step is one fused numba pass per
parameter (``gradient_fused``); on other devices (or with ``kernel="torch"``) it is about
twenty tensor ops over the flat parameters, whatever their number (``gradient_kernel``).

Call ``update()`` after ``backward()`` and before ``optimizer.step()``, or let an optimizer call
it (``attach(optimizer)`` / ``with tracker.tracking(optimizer):``). Parameters are looked up by
name at every recorded step, so the tracker follows surgery: a parameter whose object, shape,
dtype or device changed starts afresh (its previous-step columns are NaN once) and the reset is
logged in ``resets``. Gradients may be float16, bfloat16, float32 or float64 (half types are
counted in float32, and ``eps`` is compared in the precision counted in), dense or sparse.

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

import numpy as np
import torch
from torch import nn

from engine.dynamics.errors import DynamicsConfigError
from engine.dynamics.gradient_fused import fused_kernel_available
from engine.dynamics.gradient_history import RecordRing
from engine.dynamics.gradient_kernel import PACKED_ABSENT, decode_codes
from engine.dynamics.gradient_layout import FlatParameters
from engine.dynamics.gradient_record import GradientHistory
from engine.dynamics.gradient_stats import RECORD_WIDTH
from engine.errors import TrackingStateError
from engine.observe import HookSet

KERNELS = ("auto", "torch")
"""``GradientTracker(kernel=...)`` values."""


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
        kernel: ``"auto"`` (default) counts CPU parameters with the fused numba kernel
            (``gradient_fused``: one pass per parameter) when numba is installed, and every
            other device with the tensor-op kernel (``gradient_kernel``); ``"torch"`` uses the
            tensor-op kernel everywhere. Both give the same counts. ``kernels`` says which one
            each group uses.
    """

    model: nn.Module
    eps: float = 1e-5
    every: int = 1
    include: Sequence[str] | None = None
    exclude: Sequence[str] = ()
    capacity: int = 4096
    sign_samples: int = 256
    kernel: str = "auto"
    resets: list[dict[str, Any]] = field(default_factory=list, init=False)
    calls: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        self._selected: dict[str, bool] = {}  # name → matches include/exclude (fixed patterns)
        if not isinstance(self.model, nn.Module):
            raise DynamicsConfigError(f"model must be an nn.Module, got {type(self.model)!r}")
        if not self.eps > 0:
            raise DynamicsConfigError(f"eps must be > 0, got {self.eps!r}")
        if int(self.every) != self.every or self.every < 1:
            raise DynamicsConfigError(f"every must be an integer ≥ 1, got {self.every!r}")
        if self.sign_samples < 0:
            raise DynamicsConfigError(f"sign_samples must be ≥ 0, got {self.sign_samples!r}")
        if self.kernel not in KERNELS:
            raise DynamicsConfigError(f"kernel must be one of {KERNELS}, got {self.kernel!r}")
        if isinstance(self.include, str) or isinstance(self.exclude, str):
            raise DynamicsConfigError("include/exclude must be lists of patterns, not a string")
        if self.include is not None and not self.parameters():
            raise DynamicsConfigError(
                f"include={list(self.include)!r} matches no parameter of "
                f"{type(self.model).__name__}"
            )
        self._flats: dict[tuple[torch.device, torch.dtype], FlatParameters] = {}
        self._slots: dict[tuple[torch.device, torch.dtype], torch.Tensor] = {}
        self._records = RecordRing(self.capacity, RECORD_WIDTH)
        self._signs = RecordRing(  # packed sign samples; unwritten decodes as ABSENT
            self.capacity, max(self.sign_samples, 1), dtype=torch.int8, fill=PACKED_ABSENT
        )
        self._hooks = HookSet()

    # --- selection ------------------------------------------------------------------------
    def _wanted(self, name: str) -> bool:
        wanted = self._selected.get(name)
        if wanted is None:
            wanted = self._selected[name] = (
                self.include is None or any(fnmatch.fnmatchcase(name, p) for p in self.include)
            ) and not any(fnmatch.fnmatchcase(name, p) for p in self.exclude)
        return wanted

    def parameters(self) -> dict[str, nn.Parameter]:
        """The watched parameters, looked up by name now (new objects after surgery)."""
        return {
            n: p for n, p in self.model.named_parameters() if p.requires_grad and self._wanted(n)
        }

    # --- recording ------------------------------------------------------------------------
    def update(self, step: int | None = None) -> bool:
        """Record this step if the schedule says so (``True`` when recorded).

        ``step`` labels the record (default: the number of ``update`` calls before this one).
        Parameters without a gradient are skipped (their row stays NaN) and start afresh when
        they have one again (their next record has no previous step).
        """
        call = self.calls
        self.calls += 1
        if call % self.every:
            return False
        label = call if step is None else int(step)
        named = [
            (name, p)
            for name, p in self.model.named_parameters()
            if p.grad is not None and p.requires_grad and self._wanted(name)
        ]
        row = self._records.advance(label)
        self._signs.advance(label)
        only = next(iter(self._flats.items())) if len(self._flats) == 1 else None
        if only is not None and only[1].matches(named):  # the usual case: nothing changed
            self._write(row, self._slots[only[0]], only[1])
            return True
        groups: dict[tuple[torch.device, torch.dtype], list[tuple[str, nn.Parameter]]] = {}
        for name, p in named:
            groups.setdefault((p.device, p.dtype), []).append((name, p))
        for key, named in groups.items():
            flat = self._layout(key, named, label)  # creates the key's slots
            self._write(row, self._slots[key], flat)
        for key in [k for k in self._flats if k not in groups]:  # no gradient there any more:
            del self._flats[key], self._slots[key]  # its parameters restart when they are back
        return True

    def _write(self, row: int, slots: torch.Tensor, flat: FlatParameters) -> None:
        """One step of ``flat`` into ``row`` of the rings."""
        self._records.write(row, slots, flat.step())
        if self.sign_samples:
            self._signs.write(row, slots, flat.sign_samples())

    def _layout(
        self,
        key: tuple[torch.device, torch.dtype],
        named: list[tuple[str, nn.Parameter]],
        step: int,
    ) -> FlatParameters:
        old = self._flats.get(key)
        if old is not None and old.matches(named):
            return old
        now = dict(named)
        for other in self._flats.values():  # a parameter may also have moved between groups
            for name, ref, shape in zip(other.names, other.params, other.shapes):
                p = now.get(name)
                if p is None:
                    continue
                if shape != tuple(p.shape):
                    reason = "shape changed"
                elif ref() is not p:
                    reason = "new object"
                elif (other.device, other.dtype) != key:
                    reason = f"moved to {key[0]} {key[1]}"
                else:
                    continue
                self.resets.append(
                    {
                        "step": step,
                        "parameter": name,
                        "old_shape": list(shape),
                        "new_shape": list(p.shape),
                        "reason": reason,
                    }
                )
        flat = FlatParameters(
            named, self.eps, old, self.sign_samples, kernel=self._kernel_for(key[0])
        )
        self._flats[key] = flat
        self._slots[key] = self._records.slots(flat.names).to(flat.device)
        self._signs.slots(flat.names)
        return flat

    def _kernel_for(self, device: torch.device) -> str:
        fused = self.kernel == "auto" and device.type == "cpu" and fused_kernel_available()
        return "fused" if fused else "torch"

    @property
    def kernels(self) -> dict[str, str]:
        """``"device dtype"`` → ``"fused"`` or ``"torch"``: the kernel of each parameter group
        recorded so far (e.g. ``{"cpu torch.float32": "fused"}``)."""
        return {f"{device} {dtype}": flat.kernel for (device, dtype), flat in self._flats.items()}

    def on_surgery(self) -> None:
        """Forget every carried state (optional: changed parameters are detected and reset
        automatically at the next record; unchanged ones keep their previous step)."""
        self._flats.clear()
        self._slots.clear()

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
    def _sign_codes(self, name: str) -> np.ndarray:
        return decode_codes(self._signs.rows(name))

    def history(self) -> GradientHistory:
        """Everything recorded so far as host data (the one place that syncs)."""
        names = self._records.names
        return GradientHistory.from_records(
            steps=self._records.steps(),
            records={n: self._records.rows(n) for n in names},
            signs={n: self._sign_codes(n) for n in names} if self.sign_samples else {},
            eps=self.eps,
            every=self.every,
            resets=list(self.resets),
        )
