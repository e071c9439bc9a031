"""Tracing a model into Torch-Pruning's dependency graph without leaving a trace on it.

Used by ``engine.layout.build``: modes, ``requires_grad`` flags and any hooks Torch-Pruning
leaves behind are restored in ``finally``; floating-point inputs become clones that require
grad so that groups reaching a model input can be recognised.

Module types Torch-Pruning does not know get a pruner with :func:`register_pruner` (importing
``engine.integrations.transformers`` registers Hugging Face's ``Conv1D``); a model holding a
known-but-unregistered type, or a trace that fails on a module with its own parameters of a
type Torch-Pruning does not know, raises :class:`~engine.errors.UnsupportedModuleError`
naming the type and how to register it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
import torch_pruning as tp
from torch import nn

from engine.errors import ConfigurationError, UnsupportedModuleError

ForwardFn = Callable[[nn.Module, Any], Any]

_PRUNERS: dict[type, Any] = {}  # module type → Torch-Pruning pruner (BasePruningFunc)
# types that need a registration before any trace: (module, class name) → what to do
_NEEDS_REGISTRATION = {
    ("transformers.pytorch_utils", "Conv1D"): "import engine.integrations.transformers",
}


def register_pruner(module_type: type, pruner: Any) -> None:
    """Give Torch-Pruning's dependency graph a pruner for ``module_type`` (an instance of
    ``torch_pruning.pruner.BasePruningFunc``; exact type, as Torch-Pruning matches it)."""
    if not (isinstance(module_type, type) and issubclass(module_type, nn.Module)):
        raise ConfigurationError(
            f"register_pruner expects an nn.Module subclass, got {module_type!r}"
        )
    _PRUNERS[module_type] = pruner


def registered_pruners() -> dict[type, Any]:
    """The custom pruners given to every trace (a copy)."""
    return dict(_PRUNERS)


def _qualname(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def check_known_modules(model: nn.Module) -> None:
    """Refuse, before tracing, a module type that is known to need a registration."""
    for name, m in model.named_modules():
        cls = type(m)
        todo = _NEEDS_REGISTRATION.get((cls.__module__, cls.__name__))
        if todo is not None and cls not in _PRUNERS:
            raise UnsupportedModuleError(
                _qualname(cls),
                f"module {name!r} is a {_qualname(cls)}, which the dependency trace does not "
                f"know yet: {todo} (it registers the type), or give it a pruner with "
                f"engine.layout.trace.register_pruner",
            )


def _unknown_modules(model: nn.Module) -> list[tuple[str, type]]:
    """Modules holding their own parameters whose type Torch-Pruning has no pruner for."""
    found = []
    for name, m in model.named_modules():
        own = any(p is not None for p in m._parameters.values())
        if own and type(m) not in _PRUNERS and tp.ops.module2type(m) == tp.ops.OPTYPE.ELEMENTWISE:
            found.append((name, type(m)))
    return found


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

    check_known_modules(model)
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
                customized_pruners=dict(_PRUNERS) or None,
                verbose=False,
            )
    except (TypeError, AttributeError, IndexError, AssertionError) as exc:  # inside Torch-Pruning
        unknown = _unknown_modules(model)
        if not unknown:
            raise
        name, cls = unknown[0]
        raise UnsupportedModuleError(
            _qualname(cls),
            f"the dependency trace failed ({type(exc).__name__}: {exc}); module {name!r} is a "
            f"{_qualname(cls)} holding its own parameters, a type Torch-Pruning has no pruner "
            f"for: register one with engine.layout.trace.register_pruner (and its resizer with "
            f"engine.surgery.register_resizer)",
        ) from exc
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
