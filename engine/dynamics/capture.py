"""Layer outputs for a batch of inputs, captured with forward hooks that never outlive the call.

``capture_outputs`` registers one forward hook per requested module (handles owned by a
``HookSet``), runs the model in eval mode without gradients (so BatchNorm statistics and
dropout are untouched; the previous train/eval flags are restored), and removes every hook in
``finally``, also when forward raises. Each output is flattened to ``(samples, features)``
(tuple outputs such as an LSTM's give their first element) and kept on the model's device.

With a ``NeuronEngine``, ``engine_capture_points`` picks each tracked layer's observation point
(the post-activation signal the engine measures, functional activations replayed).

>>> import torch, torch.nn as nn
>>> model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
>>> out = capture_outputs(model, torch.randn(5, 4), ["1", "2"])
>>> {name: tuple(t.shape) for name, t in out.items()}
{'1': (5, 8), '2': (5, 2)}
>>> sum(len(m._forward_hooks) for m in model.modules())
0
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from engine.dynamics.errors import DynamicsConfigError, UnknownModuleError
from engine.observe import HookSet

Transform = Callable[[Any], torch.Tensor]


def _first_tensor(output: Any) -> torch.Tensor:
    while isinstance(output, (tuple, list)):
        output = output[0]
    if isinstance(output, nn.utils.rnn.PackedSequence):
        return output.data
    if not isinstance(output, torch.Tensor):
        raise DynamicsConfigError(f"cannot read a tensor from a module output of {type(output)}")
    return output


def engine_capture_points(engine: Any) -> dict[str, tuple[str, Transform]]:
    """``{layer: (hook module, transform)}`` for every layer tracked by a ``NeuronEngine``:
    the signal the engine observes (after norms and activations)."""
    points = {}
    for name, layer in engine.layers.items():
        obs, kind = layer.observation, layer.kind
        select = kind.select if obs.at_layer_output else _first_tensor
        replay = tuple(step.replay for step in obs.replay)

        def transform(out: Any, select: Transform = select, replay: tuple = replay) -> torch.Tensor:
            x = select(out)
            for fn in replay:
                x = fn(x)
            return x

        points[name] = (obs.hook_module, transform)
    return points


def _resolve(
    model: nn.Module, layers: Sequence[str] | Mapping[str, tuple[str, Transform]] | None
) -> dict[str, tuple[str, Transform]]:
    if layers is None:
        raise DynamicsConfigError("name the layers to capture (module names), or pass an engine")
    if isinstance(layers, str):
        raise DynamicsConfigError(
            f"layers must be a list of module names, got the string {layers!r}"
        )
    points = (
        dict(layers) if isinstance(layers, Mapping) else {n: (n, _first_tensor) for n in layers}
    )
    if not points:
        raise DynamicsConfigError("no layer to capture: the layer list is empty")
    known = dict(model.named_modules())
    for module_name, _ in points.values():
        if module_name not in known:
            raise UnknownModuleError("layer", module_name, [k for k in known if k])
    return points


def capture_outputs(
    model: nn.Module,
    inputs: Any,
    layers: Sequence[str] | Mapping[str, tuple[str, Transform]] | None,
    *,
    batch_size: int | None = None,
    eval_mode: bool = True,
) -> dict[str, torch.Tensor]:
    """``{layer: (samples, features)}`` outputs of ``model(inputs)`` (detached, float32).

    ``inputs``: a tensor (split into ``batch_size`` chunks if given) or a tuple of positional
    arguments. ``layers``: module names, or ``{name: (module name, transform)}`` as returned
    by ``engine_capture_points``.
    """
    points = _resolve(model, layers)
    modules = dict(model.named_modules())
    chunks: dict[str, list[torch.Tensor]] = {name: [] for name in points}
    hooks = HookSet()
    modes = {m: m.training for m in model.modules()}
    try:
        for name, (module_name, transform) in points.items():

            def hook(module: nn.Module, args: Any, out: Any, name=name, transform=transform):
                x = transform(out).detach()
                chunks[name].append(x.reshape(x.shape[0], -1).float())

            hooks.add(modules[module_name].register_forward_hook(hook))
        if eval_mode:
            model.eval()
        with torch.no_grad():
            for batch in _batches(inputs, batch_size):
                model(*batch)
    finally:
        hooks.remove()
        for module, training in modes.items():
            module.training = training
    return {
        name: torch.cat(parts) if parts else torch.empty(0, 0) for name, parts in chunks.items()
    }


def _batches(inputs: Any, batch_size: int | None) -> list[tuple[Any, ...]]:
    args = inputs if isinstance(inputs, tuple) else (inputs,)
    if batch_size is None:
        return [args]
    if batch_size < 1:
        raise DynamicsConfigError(f"batch_size must be ≥ 1, got {batch_size}")
    first = args[0]
    if not isinstance(first, torch.Tensor):
        raise DynamicsConfigError("batch_size needs tensor inputs")
    n = first.shape[0]
    return [
        tuple(a[i : i + batch_size] if isinstance(a, torch.Tensor) else a for a in args)
        for i in range(0, n, batch_size)
    ]
