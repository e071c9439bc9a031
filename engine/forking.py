"""What ``NeuronEngine.fork`` checks and copies: a second engine on a copy of the model.

A fork lets a user try plans side by side: apply one plan to the original and another to the
copy, train both, compare. The fork starts where the source engine stands: the same settings,
the same statistics (so a plan proposed by either applies to the other, and both propose the
same plan), the same neuron IDs and lineage, history, probe inputs and surgery records. From
then on the two are independent: tracking, surgery or ``reset`` on one never shows in the other.

The copy must be a structural twin (same parameter and buffer names, shapes and dtypes) and
must not share a parameter or buffer object with the source: a shared tensor would be trained
by both loops. A module copied while the engine tracked carries the engine's hooks (``deepcopy``
copies a module's hook dicts, and the hook functions feed the *source's* statistics); such a
copy is refused with the way out (copy outside ``engine.tracking()`` or under
``engine.paused()``, or let ``fork()`` make the copy).

>>> import torch, torch.nn as nn
>>> from engine import NeuronEngine
>>> model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
>>> engine = NeuronEngine(model)
>>> with engine.tracking():
...     _ = model(torch.randn(32, 4))
>>> twin = engine.fork()
>>> twin.model is not model, twin.snapshot().layers["0"].count
(True, 32)
>>> with twin.tracking():
...     _ = twin.model(torch.randn(8, 4))
>>> engine.snapshot().layers["0"].count, twin.snapshot().layers["0"].count
(32, 40)
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from engine.errors import ConfigurationError

__all__ = ["check_fork_target", "copy_engine_state", "engine_hook_functions"]


def engine_hook_functions(hooks: Any) -> set[int]:
    """ids of the hook functions behind the handles of a ``HookSet``."""
    found = set()
    for handle in getattr(hooks, "_handles", []):
        table = handle.hooks_dict_ref()
        if table is not None and handle.id in table:
            found.add(id(table[handle.id]))
    return found


def _hook_tables(module: nn.Module) -> list[dict]:
    names = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks",
             "_backward_pre_hooks")  # fmt: skip
    return [getattr(module, n) for n in names if isinstance(getattr(module, n, None), dict)]


def _tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    found = dict(model.named_parameters(remove_duplicate=False))
    found.update(dict(model.named_buffers(remove_duplicate=False)))
    return found


def check_fork_target(source: nn.Module, target: nn.Module, hook_ids: set[int]) -> None:
    """Refuse a ``target`` that is not an independent structural twin of ``source``.

    Raises:
        ConfigurationError: naming the first parameter or buffer that is missing, extra,
            shaped differently or shared, or the module that carries the source's hooks.
    """
    if target is source:
        raise ConfigurationError("fork() needs a copy of the model, not the model itself")
    if not isinstance(target, nn.Module):
        raise ConfigurationError(f"fork() expects an nn.Module, got {type(target)!r}")
    mine, theirs = _tensors(source), _tensors(target)
    missing, extra = sorted(set(mine) - set(theirs)), sorted(set(theirs) - set(mine))
    if missing or extra:
        raise ConfigurationError(
            f"the model copy is not the same architecture: missing {missing[:5]}, "
            f"extra {extra[:5]}; fork a copy.deepcopy of the model"
        )
    for name, tensor in mine.items():
        other = theirs[name]
        if other is tensor or (other.numel() and other.data_ptr() == tensor.data_ptr()):
            raise ConfigurationError(
                f"the model copy shares {name!r} with the model: training one would train "
                f"both; fork a copy.deepcopy of the model"
            )
        if other.shape != tensor.shape or other.dtype != tensor.dtype:
            raise ConfigurationError(
                f"the model copy's {name!r} is {tuple(other.shape)} {other.dtype}, expected "
                f"{tuple(tensor.shape)} {tensor.dtype} (the model as it is now)"
            )
    for name, module in target.named_modules():
        for table in _hook_tables(module):
            if any(id(fn) in hook_ids for fn in table.values()):
                raise ConfigurationError(
                    f"the model copy's module {name or '(root)'!r} carries this engine's "
                    "tracking hooks (it was copied while tracking): copy the model outside "
                    "engine.tracking() or under engine.paused(), or call fork() without one"
                )


def copy_engine_state(source: Any, target: Any) -> None:
    """Give the fresh engine ``target`` the state of ``source`` (see the module docstring).

    Accumulators share the source's running tensors: they are only ever replaced, never
    written in place, so sharing is safe and costs no copy. Growth-signal sums are summed in
    place, so they are deep-copied.
    """
    target.neurons.load_state_dict(copy.deepcopy(source.neurons.state_dict()))
    for name, layer in source.layers.items():
        mine = target.layers[name]
        mine.accumulator.restore(layer.accumulator.checkpoint())
        if layer.growth is not None:
            mine.growth = copy.deepcopy(layer.growth)
    target.history = copy.deepcopy(source.history)
    if source.example_inputs is not None:
        target.example_inputs = tuple(
            a.clone() if isinstance(a, torch.Tensor) else copy.deepcopy(a)
            for a in source.example_inputs
        )
        target.example_kwargs = {
            k: v.clone() if isinstance(v, torch.Tensor) else copy.deepcopy(v)
            for k, v in source.example_kwargs.items()
        }
    target.surgeries = list(source.surgeries)
    target.trials = list(source.trials)
