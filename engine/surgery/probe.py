"""Measure what surgery did to the function: the model's outputs on a probe batch.

Two readings, both deterministic and side-effect free:

* ``eval``: every module in eval mode (running statistics, no dropout);
* ``batch``: only when the model has norms with running statistics — everything in eval mode
  except those norms, which normalise with the probe batch's own statistics (as in training).
  Running buffers are passed as clones through ``torch.func.functional_call``, so the
  probe never moves them.

Modes are restored afterwards, also when the forward raises. A probe batch without rows (every
batched input tensor has 0 samples) would measure nothing and report a change of 0.0; it is
refused with a ``SurgeryError`` naming the input shapes.

>>> import torch, torch.nn as nn
>>> model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
>>> probe = Probe(model, (torch.randn(5, 3),))
>>> sorted(probe.reference), sorted(probe.max_change().items())
(['batch', 'eval'], [('batch', 0.0), ('eval', 0.0)])
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.func import functional_call
from torch.utils._pytree import tree_flatten

from engine.errors import SurgeryError

__all__ = ["Probe", "check_probe_rows"]


def check_probe_rows(args: tuple[Any, ...], kwargs: dict | None = None) -> None:
    """Raise ``SurgeryError`` when the probe batch has no rows: its input tensors (those with a
    batch axis) all have 0 samples. Inputs without tensors are not judged.

    >>> try:
    ...     check_probe_rows((torch.zeros(0, 8),))
    ... except SurgeryError as exc:
    ...     print(str(exc)[:51])
    the probe batch has no rows (input shapes [[0, 8]])
    """
    leaves, _ = tree_flatten((tuple(args), dict(kwargs or {})))
    batched = [t for t in leaves if isinstance(t, torch.Tensor) and t.dim() >= 1]
    if batched and all(t.shape[0] == 0 for t in batched):
        shapes = [list(t.shape) for t in batched][:8]
        raise SurgeryError(
            f"the probe batch has no rows (input shapes {shapes}): a change measured on it "
            "would be 0.0 and mean nothing; give example inputs with at least one sample"
        )


def _has_running_stats(model: nn.Module) -> bool:
    return any(
        isinstance(m, nn.modules.batchnorm._NormBase) and m.track_running_stats
        for m in model.modules()
    )


class Probe:
    """Reference outputs of ``model`` on ``args``/``kwargs``, and later changes against them."""

    def __init__(self, model: nn.Module, args: tuple[Any, ...], kwargs: dict | None = None):
        check_probe_rows(tuple(args), kwargs)
        self.model = model
        self.args = tuple(args)
        self.kwargs = dict(kwargs or {})
        self.modes = ["eval", "batch"] if _has_running_stats(model) else ["eval"]
        self.reference = {}
        for mode in list(self.modes):
            try:
                self.reference[mode] = self.outputs(mode)
            except Exception:  # e.g. BatchNorm1d on a batch of one in batch mode
                if mode == "eval":
                    raise
                self.modes.remove(mode)

    @torch.no_grad()
    def outputs(self, mode: str) -> list[torch.Tensor]:
        saved = [(m, m.training) for m in self.model.modules()]
        try:
            self.model.eval()
            if mode == "batch":
                for m in self.model.modules():
                    if isinstance(m, nn.modules.batchnorm._NormBase) and m.track_running_stats:
                        m.train()
                buffers = {n: b.clone() for n, b in self.model.named_buffers()}
                out = functional_call(self.model, buffers, self.args, self.kwargs, strict=False)
            else:
                out = self.model(*self.args, **self.kwargs)
        finally:
            for m, mode_flag in saved:
                m.training = mode_flag
        leaves, _ = tree_flatten(out)
        return [t.detach() for t in leaves if isinstance(t, torch.Tensor)]

    def max_change(self) -> dict[str, float | None]:
        """Max |Δoutput| per mode against the reference (None where output shapes changed).

        Raises:
            SurgeryError: the outputs are not finite (the model is broken).
        """
        result: dict[str, float | None] = {}
        for mode in self.modes:
            now = self.outputs(mode)
            ref = self.reference[mode]
            for t in now:
                if t.is_floating_point() and not bool(torch.isfinite(t).all()):
                    raise SurgeryError(f"the probe's outputs ({mode} mode) are not finite")
            if len(now) != len(ref) or any(a.shape != b.shape for a, b in zip(now, ref)):
                result[mode] = None
                continue
            diffs = [
                (a.double() - b.double()).abs().max().item()
                for a, b in zip(now, ref)
                if a.numel() and a.is_floating_point()
            ]
            result[mode] = max(diffs, default=0.0)
        return result
