"""Symbolic tracing of a model for observation placement, robust to untraceable code.

``trace_model`` returns the fx graphs ("scopes") that cover as much of the model as can be
traced, the reason each untraceable part failed, and how many times each module object is
called, counted across all scopes (a module shared by two separately traced blocks is called
twice) and including calls from code that could not be traced.

Strategy for a scope that fails to trace:

1. find its *opaque* descendants: children whose own trace fails (searched recursively, so only
   the smallest failing sub-modules become opaque);
2. trace the scope again with those as leaves; opaque modules that hold tracked layers are then
   traced as scopes of their own;
3. if the scope's own ``forward`` is the problem, trace each child separately.

>>> import torch.nn as nn
>>> traced = trace_model(nn.Sequential(nn.Linear(2, 2), nn.ReLU()), {"0"})
>>> [s.prefix for s in traced.scopes], traced.failures
([''], {})
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch.fx as fx
from torch import nn


@dataclass
class Scope:
    """One traced graph, rooted at the module named ``prefix`` ('' for the model)."""

    graph_module: fx.GraphModule
    prefix: str

    def qualify(self, target: str) -> str:
        return f"{self.prefix}.{target}" if self.prefix else target

    def relative(self, name: str) -> str | None:
        """``name`` relative to this scope, or None when the layer is not inside it."""
        if not self.prefix:
            return name
        return name[len(self.prefix) + 1 :] if name.startswith(self.prefix + ".") else None


@dataclass
class TracedModel:
    scopes: list[Scope] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)
    calls: Counter = field(default_factory=Counter)  # id(module) → calls seen or possible

    def call_count(self, module: nn.Module) -> int:
        return self.calls[id(module)]


class _Tracer(fx.Tracer):
    """Tracked layers and opaque modules are leaves; containers of tracked layers are traced."""

    def __init__(self, tracked: set[str], opaque: set[str]) -> None:
        super().__init__()
        self.tracked, self.opaque = tracked, opaque

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        if qualname in self.tracked or qualname in self.opaque:
            return True
        prefix = qualname + "."
        if any(name.startswith(prefix) for name in self.tracked):
            return False
        return super().is_leaf_module(m, qualname)


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _inside(names: set[str], prefix: str) -> set[str]:
    """Names strictly inside ``prefix``, made relative to it."""
    if not prefix:
        return set(names)
    return {n[len(prefix) + 1 :] for n in names if n.startswith(prefix + ".")}


def _reason(exc: Exception) -> str:
    first_line = (str(exc).strip().splitlines() or [""])[0][:160]
    return f"{type(exc).__name__}: {first_line}"


def _try_trace(root: nn.Module, tracked: set[str], opaque: set[str]) -> fx.Graph | Exception:
    try:
        return _Tracer(tracked, opaque).trace(root)
    except Exception as exc:  # tracing fails in many ways: control flow, unsupported ops…
        return exc


def _find_opaque(module: nn.Module, prefix: str, tracked: set[str], out: TracedModel) -> set[str]:
    """Smallest descendants of ``module`` (full names) whose own trace fails."""
    opaque: set[str] = set()
    for name, child in module.named_children():
        full = _join(prefix, name)
        if full in tracked:
            continue
        inside = _inside(tracked, full)
        result = _try_trace(child, inside, set())
        if not isinstance(result, Exception):
            continue
        out.failures[full] = _reason(result)
        if inside:
            deeper = _find_opaque(child, full, tracked, out)
            relative = _inside(deeper, full)
            if deeper and not isinstance(_try_trace(child, inside, relative), Exception):
                opaque |= deeper
                del out.failures[full]
                continue
        opaque.add(full)
    return opaque


def _modules_outside_scopes(root: nn.Module, scope_roots: set[int]) -> Iterator[nn.Module]:
    """``root`` and its descendants, skipping sub-trees that are traced scopes of their own."""
    yield root
    for child in root.children():
        if id(child) not in scope_roots:
            yield from _modules_outside_scopes(child, scope_roots)


def _trace_scope(
    root: nn.Module, prefix: str, tracked: set[str], out: TracedModel, untraced: list
) -> None:
    inside = _inside(tracked, prefix)
    if not inside:
        return
    result = _try_trace(root, inside, set())
    if isinstance(result, Exception):
        out.failures[prefix] = _reason(result)
        opaque = _find_opaque(root, prefix, tracked, out)
        if opaque:
            result = _try_trace(root, inside, _inside(opaque, prefix))
        if not opaque or isinstance(result, Exception):
            for name, child in root.named_children():  # the scope's own forward is untraceable
                full = _join(prefix, name)
                if _inside(tracked, full):
                    _trace_scope(child, full, tracked, out, untraced)
                else:
                    untraced.append(child)  # called by code we cannot see
            return
        del out.failures[prefix]
        for full in opaque:
            child = root.get_submodule(_inside({full}, prefix).pop())
            untraced.append(child)
            _trace_scope(child, full, tracked, out, untraced)
    out.scopes.append(Scope(fx.GraphModule(root, result), prefix))


def trace_model(model: nn.Module, tracked: set[str]) -> TracedModel:
    """Trace ``model`` into scopes and count module calls (see the module docstring)."""
    out = TracedModel()
    untraced: list[nn.Module] = []
    _trace_scope(model, "", tracked, out, untraced)
    for scope in out.scopes:
        gm = scope.graph_module
        for node in gm.graph.nodes:
            if node.op == "call_module":
                out.calls[id(gm.get_submodule(node.target))] += 1
    scope_roots = {id(model.get_submodule(s.prefix)) for s in out.scopes if s.prefix}
    for module in untraced:
        if id(module) in scope_roots:  # its inside is counted by its own graph
            out.calls[id(module)] += 1
            continue
        for m in _modules_outside_scopes(module, scope_roots):
            out.calls[id(m)] += 1
    return out
