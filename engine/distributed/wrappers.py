"""What the engine refuses to track: wrappers that replicate or shard a model.

* ``DistributedDataParallel`` and ``DataParallel`` themselves: pass the wrapped
  ``ddp.module`` (the engine's hooks live on the real layers; after surgery
  ``engine.distributed.rewrap(ddp)`` builds the new wrapper). We refuse rather than unwrap
  silently, so that ``engine.model`` is always the module the caller passed.
* Sharded models: FSDP (``FullyShardedDataParallel``, ``fully_shard``), DeepSpeed, fairscale
  and anything holding ``DTensor`` parameters. Each rank holds a slice of every parameter, so
  per-unit statistics and row surgery on one rank would corrupt the shards; they are refused
  with :class:`~engine.errors.ConfigurationError` instead.

Detection reads class names along the MRO and parameter attributes: nothing of DeepSpeed or
fairscale is imported.

>>> import torch.nn as nn
>>> sharding_of(nn.Linear(2, 2)) is None
True
>>> class FullyShardedDataParallel(nn.Module): ...
>>> sharding_of(nn.Sequential(FullyShardedDataParallel()))
"module '0' is a FullyShardedDataParallel"
"""

from __future__ import annotations

from typing import Any

from torch import nn

from engine.errors import ConfigurationError

__all__ = ["check_trackable", "sharding_of"]

_SHARDED_CLASSES = (
    "FullyShardedDataParallel", "FSDPModule", "DeepSpeedEngine", "PipelineEngine",
    "ShardedDataParallel", "FlatParameter", "DTensor",
)  # fmt: skip
_SHARDED_PARAM_ATTRS = ("ds_id", "ds_numel", "_sharded_param_data", "_local_shard")


def _names(obj: Any) -> set[str]:
    return {c.__name__ for c in type(obj).__mro__}


def sharding_of(model: nn.Module) -> str | None:
    """Why ``model`` is sharded (names the module or parameter), or None when it is not."""
    for name, module in model.named_modules():
        hit = _names(module) & set(_SHARDED_CLASSES)
        if hit or hasattr(module, "_fsdp_wrapped_module"):
            kind = sorted(hit)[0] if hit else "FSDP-wrapped module"
            where = f"module {name!r}" if name else "the model"
            return f"{where} is a {kind}"
    for name, param in model.named_parameters():
        hit = _names(param) & set(_SHARDED_CLASSES)
        attrs = [a for a in _SHARDED_PARAM_ATTRS if hasattr(param, a)]
        if hit or attrs:
            return f"parameter {name!r} is a {sorted(hit)[0] if hit else 'sharded parameter'}" + (
                f" (it has {attrs[0]})" if attrs and not hit else ""
            )
    return None


def check_trackable(model: nn.Module) -> None:
    """Raise ``ConfigurationError`` for a model the engine cannot watch (see the module
    docstring): a DDP/DataParallel wrapper (pass ``.module``) or a sharded model."""
    names = _names(model)
    if {"DistributedDataParallel", "DataParallel"} & names:
        kind = "DistributedDataParallel" if "DistributedDataParallel" in names else "DataParallel"
        advice = (
            "wrap the model in DDP as usual and give the engine the inner module: "
            "NeuronEngine(ddp.module); after engine.apply(...) on every rank, "
            "ddp = engine.distributed.rewrap(ddp)"
            if kind == "DistributedDataParallel"
            else "DataParallel copies the model on every forward; use DistributedDataParallel "
            "(one process per device) and NeuronEngine(ddp.module)"
        )
        raise ConfigurationError(f"NeuronEngine got the {kind} wrapper itself: {advice}")
    reason = sharding_of(model)
    if reason is not None:
        raise ConfigurationError(
            f"the model is sharded ({reason}): FSDP, DeepSpeed and other sharded wrappers hold "
            "a slice of every parameter on each rank, and neither statistics per unit nor "
            "surgery on rows can be done on a slice without corrupting the shards. Track and "
            "modify the unsharded model under DistributedDataParallel instead"
        )
