"""Tracing a model into Torch-Pruning's dependency graph without leaving a trace on it.

Used by ``engine.layout.build``: modes, ``requires_grad`` flags and any hooks Torch-Pruning
leaves behind are restored in ``finally``; floating-point inputs become clones that require
grad so that groups reaching a model input can be recognised.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
import torch_pruning as tp
from torch import nn

from engine.errors import ConfigurationError

ForwardFn = Callable[[nn.Module, Any], Any]


def trace_graph(
    model: nn.Module, example_inputs: Any, forward_fn: ForwardFn | None
) -> tuple[tp.DependencyGraph, set[Any], set[Any]]:
    """Build the DepGraph; restore modes, ``requires_grad`` and stray hooks in ``finally``.

    Floating-point inputs are replaced by clones that require grad, so the trace has a node
    for each model input (a group that reaches one is tied to the input width). Every
    parameter requires grad during the trace so that frozen layers still appear in it.
    """
    if torch.is_inference_mode_enabled():
        raise ConfigurationError(
            "build_layout traces the autograd graph: call it outside torch.inference_mode()"
        )
    modes = [(m, m.training) for m in model.modules()]
    flags = [(p, p.requires_grad) for p in model.parameters()]
    hook_keys = [(m, set(m._forward_hooks)) for m in model.modules()]
    outputs: list[Any] = []
    input_fns: set[Any] = set()

    def run(mdl: nn.Module, inputs: Any) -> Any:
        if forward_fn is not None:
            result = forward_fn(mdl, inputs)
        elif isinstance(inputs, Mapping):
            result = mdl(**inputs)
        elif isinstance(inputs, (tuple, list)):
            result = mdl(*inputs)
        else:
            result = mdl(inputs)
        outputs.append(result)
        return result

    def keep_traceable(result: Any) -> list[torch.Tensor]:
        found = [t for t in _tensors(result) if t.grad_fn is not None]
        if not found:
            raise ConfigurationError(
                f"build_layout: no output of {type(model).__name__} depends on a parameter; "
                f"cannot trace its dependency graph"
            )
        return found

    try:
        with torch.enable_grad():
            for p, _ in flags:
                if p.is_floating_point() or p.is_complex():
                    p.requires_grad_(True)
            inputs = _grad_inputs(example_inputs, input_fns)
            graph = tp.DependencyGraph().build_dependency(
                model,
                example_inputs=inputs,
                forward_fn=run,
                output_transform=keep_traceable,
                verbose=False,
            )
    finally:
        for m, mode in modes:
            m.training = mode
        for p, flag in flags:
            p.requires_grad_(flag)
        for m, keys in hook_keys:  # Torch-Pruning leaves its hooks behind when forward raises
            for key in [k for k in m._forward_hooks if k not in keys]:
                del m._forward_hooks[key]
                m._forward_hooks_with_kwargs.pop(key, None)
                m._forward_hooks_always_called.pop(key, None)
    output_fns = {t.grad_fn for t in _tensors(outputs)}
    return graph, input_fns, output_fns


def _grad_inputs(obj: Any, input_fns: set[Any]) -> Any:
    if isinstance(obj, torch.Tensor):
        if not (obj.is_floating_point() or obj.is_complex()):
            return obj
        x = obj.detach().requires_grad_(True).clone()  # non-leaf: in-place ops stay legal
        input_fns.add(x.grad_fn)
        return x
    if isinstance(obj, Mapping):
        return {k: _grad_inputs(v, input_fns) for k, v in obj.items()}
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):  # namedtuple
        return type(obj)(*(_grad_inputs(v, input_fns) for v in obj))
    if isinstance(obj, (tuple, list)):
        return type(obj)(_grad_inputs(v, input_fns) for v in obj)
    return obj


def _tensors(obj: Any) -> Iterable[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, Mapping):
        for v in obj.values():
            yield from _tensors(v)
    elif isinstance(obj, (tuple, list)):
        for v in obj:
            yield from _tensors(v)
    elif isinstance(obj, nn.utils.rnn.PackedSequence):
        yield obj.data
