"""A bitwise return point for a model in training: its modules, parameter and buffer values,
gradients, modes, the optimizer's groups and state, the statistics and the RNG.

A surgery transaction can undo itself up to its commit; a *trial* goes on after the commit
(recovery steps, a held-out evaluation) and may still be refused. ``TrainingState.capture``
before the trial and ``restore`` after a refusal put everything back exactly, so a refused
trial leaves the run as if it had never happened.

>>> import torch, torch.nn as nn
>>> model = nn.Linear(3, 2)
>>> opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
>>> state = TrainingState.capture(model, opt)
>>> model(torch.randn(4, 3)).sum().backward(); opt.step()
>>> state.restore()
>>> torch.equal(model.weight, state.values[0][1]), opt.state == {}, model.weight.grad is None
(True, True, True)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from engine.stats.accumulator import AccumulatorCheckpoint, NeuronAccumulator
from engine.surgery.optimizer_rollback import (
    OptimizerSnapshot,
    optimizer_snapshot,
    restore_optimizer,
)

__all__ = ["TrainingState"]

_SCALARS = (bool, int, float, str, type(None), tuple)


def _clone(value: Any) -> Any:
    return value.detach().clone() if isinstance(value, torch.Tensor) else value


@dataclass(eq=False)
class _ModuleState:
    module: nn.Module
    training: bool
    parameters: dict[str, Any]
    buffers: dict[str, Any]
    attributes: dict[str, Any]


@dataclass(eq=False)
class TrainingState:
    """See the module docstring. ``restore`` may be called once."""

    modules: list[_ModuleState]
    values: list[tuple[torch.Tensor, torch.Tensor]]
    grads: list[tuple[nn.Parameter, torch.Tensor | None]]
    optimizer: torch.optim.Optimizer | None
    optimizer_token: OptimizerSnapshot | None
    optimizer_values: list[tuple[dict[str, Any], dict[str, Any]]]
    accumulators: list[tuple[NeuronAccumulator, AccumulatorCheckpoint]]
    rng: torch.Tensor
    cuda_rng: list[torch.Tensor] | None

    @classmethod
    def capture(
        cls,
        model: nn.Module,
        optimizer: torch.optim.Optimizer | None = None,
        accumulators: Mapping[str, NeuronAccumulator] | None = None,
    ) -> TrainingState:
        """Copy every value that training or surgery may change (one clone per tensor)."""
        modules = [
            _ModuleState(
                m, m.training, dict(m._parameters), dict(m._buffers),
                {k: v for k, v in vars(m).items()
                 if not k.startswith("_") and isinstance(v, _SCALARS)},
            )
            for m in model.modules()
        ]  # fmt: skip
        seen: dict[int, torch.Tensor] = {}
        for t in [*model.parameters(), *model.buffers()]:
            seen.setdefault(id(t), t)
        values = [(t, t.detach().clone()) for t in seen.values()]
        grads = [(p, _clone(p.grad)) for p in model.parameters()]
        opt_values = []
        if optimizer is not None:
            opt_values = [(st, {k: _clone(v) for k, v in st.items()})
                          for st in optimizer.state.values()]  # fmt: skip
        cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
        return cls(
            modules, values, grads, optimizer,
            optimizer_snapshot(optimizer) if optimizer is not None else None, opt_values,
            [(a, a.checkpoint()) for a in (accumulators or {}).values()],
            torch.get_rng_state(), cuda,
        )  # fmt: skip

    def restore(self) -> None:
        """Put everything back as it was at ``capture`` (bitwise)."""
        for s in self.modules:
            s.module._parameters.clear()
            s.module._parameters.update(s.parameters)
            s.module._buffers.clear()
            s.module._buffers.update(s.buffers)
            for k, v in s.attributes.items():
                setattr(s.module, k, v)
            s.module.training = s.training
        with torch.no_grad():
            for t, value in self.values:
                t.copy_(value)
        for p, grad in self.grads:
            p.grad = grad
        if self.optimizer is not None and self.optimizer_token is not None:
            restore_optimizer(self.optimizer, self.optimizer_token)
            for st, saved in self.optimizer_values:
                st.clear()
                st.update(saved)
        for acc, token in self.accumulators:
            acc.restore(token)
        torch.set_rng_state(self.rng)
        if self.cuda_rng is not None:
            torch.cuda.set_rng_state_all(self.cuda_rng)
