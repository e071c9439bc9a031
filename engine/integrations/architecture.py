"""The architecture a checkpoint needs to be rebuilt: the plans applied since the model was
built, its neuron IDs, and a probe batch to replay the plans' structure on.

Frameworks save checkpoints of their own (Lightning's ``.ckpt``); this record travels inside
them as plain data (JSON text and tensors, so ``torch.load(weights_only=True)`` reads it). A
fresh module built by the user's code is resized with :func:`restore_architecture` (the
plans' structure is replayed exactly as ``engine.checkpoint.load`` does) before the weights
are loaded into it.

:class:`ArchitectureRecorder` is a surgery listener that keeps the plans an engine applied
(a trial that was rolled back is dropped).

>>> import torch, torch.nn as nn
>>> from engine import NeuronEngine
>>> model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
>>> with torch.no_grad():
...     model[0].bias[:3] = -100.0  # three dead units
>>> engine = NeuronEngine(model)
>>> recorder = ArchitectureRecorder(engine)
>>> with engine.tracking():
...     _ = model(torch.randn(128, 4))
>>> _ = engine.apply(engine.propose({"policies": [{"name": "dead"}]}))
>>> record = recorder.record()
>>> fresh = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
>>> _ = restore_architecture(fresh, record)
>>> fresh.load_state_dict(model.state_dict()); fresh[0].out_features
<All keys matched successfully>
5
"""

from __future__ import annotations

import json
from typing import Any

import torch
from torch import nn

from engine.checkpoint import _replay as replay_structure  # shapes only, as checkpoint.load
from engine.errors import ConfigurationError
from engine.neurons import NeuronRegistry
from engine.plan import Plan
from engine.surgery.transaction import ProbeInputs

__all__ = ["FORMAT", "ArchitectureRecorder", "restore_architecture"]

FORMAT = "neuron-engine.architecture"
VERSION = 1
_PRIMITIVES = (bool, int, float, str, type(None))


def _storable(value: Any) -> bool:
    if isinstance(value, torch.Tensor):
        return True
    if isinstance(value, (list, tuple)):
        return all(_storable(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _storable(v) for k, v in value.items())
    return isinstance(value, _PRIMITIVES)


def _cpu(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().clone()
    if isinstance(value, (list, tuple)):
        return [_cpu(v) for v in value]
    if isinstance(value, dict):
        return {k: _cpu(v) for k, v in value.items()}
    return value


class ArchitectureRecorder:
    """Keeps every plan ``engine`` applies (a surgery listener; see the module docstring).

    ``target``: the engine's model's name inside the module a checkpoint holds (``""``: the
    module itself; ``"net"`` for ``LightningModule.net``). ``plans`` may start with the plans
    a restored checkpoint had applied already.
    """

    def __init__(self, engine: Any, target: str = "", plans: list[Plan] | None = None) -> None:
        self.engine = engine
        self.target = target
        self.plans: list[Plan] = list(plans or [])
        self._pending: Plan | None = None
        engine.add_listener(self)

    def before_surgery(self, model: Any, plan: Plan, *, step: int | None, epoch: int | None
                       ) -> None:  # fmt: skip
        self._pending = plan

    def after_surgery(self, model: Any, record: Any) -> None:
        if self._pending is not None:
            self.plans.append(self._pending)
        self._pending = None

    def after_rollback(self, model: Any, record: Any) -> None:
        self._pending = None  # a refused trial changed nothing

    def record(self) -> dict[str, Any]:
        """The architecture as plain data (JSON text and CPU tensors)."""
        engine = self.engine
        args, kwargs = tuple(engine.example_inputs or ()), dict(engine.example_kwargs or {})
        probe = {"args": _cpu(list(args)), "kwargs": _cpu(kwargs)}
        if engine.example_inputs is None or not _storable(probe):
            probe = None  # nothing seen yet, or inputs that are not plain data
        return {
            "format": FORMAT,
            "version": VERSION,
            "target": self.target,
            "plans": [p.dumps(indent=None) for p in self.plans],
            "neurons": json.dumps(engine.neurons.state_dict()),
            "probe": probe,
        }


def _check(record: Any) -> dict[str, Any]:
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise ConfigurationError(
            f"not a {FORMAT} record (got {type(record).__name__}); it is written by "
            f"ArchitectureRecorder.record()"
        )
    if record.get("version") != VERSION:
        raise ConfigurationError(f"{FORMAT} version {record.get('version')!r}: expected {VERSION}")
    return record


def recorded_plans(record: dict[str, Any]) -> list[Plan]:
    """The plans of a record, validated."""
    return [Plan.loads(text, source=f"{FORMAT} plan {i}")
            for i, text in enumerate(_check(record)["plans"])]  # fmt: skip


def recorded_neurons(record: dict[str, Any]) -> NeuronRegistry:
    """The neuron IDs a record holds (load them into an engine on the restored model)."""
    return NeuronRegistry.from_state_dict(json.loads(_check(record)["neurons"]))


def restore_architecture(
    module: nn.Module, record: dict[str, Any], example_inputs: Any = None
) -> nn.Module:
    """Resize the freshly built ``module`` (the one a checkpoint was saved from, before any
    surgery) to the record's architecture by replaying its plans' structure on the
    sub-module ``record["target"]``; the weights are loaded afterwards, by the caller.
    ``example_inputs``: the probe to replay on (default: the one recorded). Returns the
    target sub-module."""
    plans = recorded_plans(record)
    target = module.get_submodule(record.get("target", "")) if record.get("target") else module
    if not plans:
        return target
    probe = example_inputs
    if probe is None:
        stored = record.get("probe")
        if stored is None:
            raise ConfigurationError(
                f"the checkpoint's {len(plans)} plans need example inputs to be replayed and "
                f"it holds none: pass example_inputs="
            )
        device = next((p.device for p in target.parameters()), torch.device("cpu"))
        moved = _to(stored, device)
        probe = ProbeInputs(tuple(moved["args"]), dict(moved["kwargs"]))
    replay_structure(target, plans, probe)
    return target


def _to(value: Any, device: torch.device) -> Any:
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, list):
        return [_to(v, device) for v in value]
    if isinstance(value, dict):
        return {k: _to(v, device) for k, v in value.items()}
    return value
