"""Where each tracked layer is observed: the signal its consumer actually multiplies.

For every tracked layer the model is traced symbolically (``torch.fx``) and the chain of
element-wise activations and norms that follows the layer's output is read off the graph:
``Linear → F.relu → Linear``, ``Conv → BN → ReLU → Conv``, ``x.sigmoid()`` and so on. The chain
continues while each step has the previous one as its only input and is its only user; it stops
at anything else (dropout, pooling, flatten, residual add, concatenation, a second user).

The observation is then realised with plain forward hooks:

* the hook sits on the *last module in the chain that is called exactly once* (the layer itself,
  a BatchNorm, an ``nn.ReLU``), so the observed tensor is that module's output;
* the activations after it that are functions, methods or shared modules (``F.relu``,
  ``x.tanh()``, one ``nn.ReLU`` instance reused by several layers) are *replayed* out of place on
  the observed tensor inside the hook (a cheap element-wise op, never an in-place one);
* a norm that cannot be hooked on its own (shared or functional) ends the chain before it.

Fallbacks to the layer's own output are recorded with a reason: the model (or a sub-module)
cannot be traced (data-dependent control flow), the layer is called more than once (shared
weights), or it is never seen as a module call. Sub-modules are traced separately when the
whole model cannot be, so a failure only costs the chains that cross it. Containers whose
structure is known (``nn.TransformerEncoderLayer``: ``linear1`` feeds ``activation``) give hints.

>>> import torch.nn as nn
>>> m = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 2))
>>> obs = plan_observations(m, {"0": layer_kind_for(m[0]), "3": layer_kind_for(m[3])})
>>> obs["0"].hook_module, obs["0"].chain, obs["3"].hook_module
('2', ('1:batchnorm1d', '2:relu'), '3')
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import torch.fx as fx
from torch import nn

from engine.layers import LayerKind, layer_kind_for
from engine.observe.activations import (
    HOOK_ONLY_MODULE_TYPES,
    INPLACE_FUNCTIONS,
    NORM_TYPES,
    RECTIFIERS,
    ActivationStep,
    activation_from_function,
    activation_from_method,
    activation_from_module,
    activation_from_value,
)
from engine.observe.tracing import Scope, TracedModel, trace_model

__all__ = ["Observation", "layer_kind_for", "plan_observations"]


@dataclass(frozen=True)
class Observation:
    """Where and how one tracked layer's units are observed."""

    layer: str
    hook_module: str
    replay: tuple[ActivationStep, ...] = ()
    chain: tuple[str, ...] = ()
    bounds: tuple[float, float] | None = None
    rectified: bool = False
    nonnegative: bool = False
    fallback: str | None = None
    # The one nn.Linear that reads this Linear's units right after its activations (no norm,
    # no residual, called once): GradMax growth signals pair the two. None otherwise.
    consumer: str | None = None

    @property
    def at_layer_output(self) -> bool:
        return self.hook_module == self.layer

    def describe(self) -> dict[str, Any]:
        """JSON-friendly description, stored with every snapshot."""
        return {
            "hook": self.hook_module,
            "chain": list(self.chain),
            "replayed": [s.name for s in self.replay],
            "bounds": list(self.bounds) if self.bounds else None,
            "rectified": self.rectified,
            "fallback": self.fallback,
            "consumer": self.consumer,
        }


@dataclass
class _Step:
    label: str
    hook: str | None  # qualified module name if this step can carry the forward hook
    activation: ActivationStep | None
    is_norm: bool = False


def _classify(user: fx.Node, scope: Scope, traced: TracedModel) -> _Step | None:
    extra = [a for a in (*user.args[1:], *user.kwargs.values()) if isinstance(a, fx.Node)]
    if extra:
        return None  # a second tensor input: residual add, concatenation, gating…
    if user.op == "call_module":
        module = scope.graph_module.get_submodule(user.target)
        hook = scope.qualify(user.target) if traced.call_count(module) == 1 else None
        label = f"{scope.qualify(user.target)}:{type(module).__name__.lower()}"
        if isinstance(module, NORM_TYPES):
            return _Step(label, hook, None, is_norm=True)
        if isinstance(module, HOOK_ONLY_MODULE_TYPES):  # observable, never replayed (random)
            return _Step(label, hook, None)
        step = activation_from_module(module)
        return None if step is None else _Step(label, hook, step)
    if user.op == "call_function":
        step = activation_from_function(user.target, user.args, user.kwargs)
        return None if step is None else _Step(step.name, None, step)
    if user.op == "call_method":
        step = activation_from_method(user.target, user.args, user.kwargs)
        return None if step is None else _Step(step.name, None, step)
    return None


def _is_inplace_statement(node: fx.Node, source: fx.Node, scope: Scope) -> bool:
    """``h.relu_()`` / ``F.relu(h, inplace=True)`` / an in-place module, result unused."""
    if node.users or not node.args or node.args[0] is not source:
        return False
    if node.op == "call_method":
        return str(node.target).endswith("_")
    if node.op == "call_function":
        return node.kwargs.get("inplace") is True or node.target in INPLACE_FUNCTIONS
    if node.op == "call_module":
        return bool(getattr(scope.graph_module.get_submodule(node.target), "inplace", False))
    return False


def _chain_from(node: fx.Node, scope: Scope, traced: TracedModel) -> tuple[list[_Step], fx.Node]:
    """The steps after ``node``, and the node the chain stopped at."""
    steps: list[_Step] = []
    cur = node
    while cur.users:
        users = list(cur.users)  # in graph order
        while len(users) > 1 and _is_inplace_statement(users[0], cur, scope):
            step = _classify(users[0], scope, traced)  # mutates cur for every later user
            if step is None or step.activation is None:
                return steps, cur
            steps.append(step)
            users = users[1:]
        if len(users) != 1:
            break
        user = users[0]
        if not user.args or user.args[0] is not cur:
            break
        step = _classify(user, scope, traced)
        if step is None or (step.hook is None and step.activation is None):
            break  # unknown op, or a shared/functional norm that cannot be observed
        steps.append(step)
        if _is_inplace_statement(user, cur, scope):
            break  # applied in place as the last use: nothing reads it afterwards
        cur = user
    return steps, cur


def _leaves_scope(
    steps: list[_Step], end: fx.Node, scope: Scope, failures: dict[str, str]
) -> str | None:
    """A fallback reason when a chain with no activation yet stops because its value is
    returned from a scope traced on its own: its parent failed to trace, so an activation the
    parent applies (``F.relu(self.block(x))``) is unseen and the layer is measured before it."""
    users = list(end.users)
    if not scope.prefix or len(users) != 1 or users[0].op != "output":
        return None
    if not all(step.is_norm for step in steps):
        return None  # the scope applies its own activation: the observation is meaningful
    parents = [p for p in failures if p == "" or scope.prefix.startswith(p + ".")]
    message = (
        f"its output leaves the traced scope {scope.prefix!r} and the parent could not be traced"
    )
    if not parents:
        return message
    return f"{message} ({failures[max(parents, key=len)]})"


def _observation_from_steps(name: str, steps: list[_Step], fallback: str | None) -> Observation:
    hook_at = -1
    for k, step in enumerate(steps):
        if step.hook is not None:
            hook_at = k
    replay = tuple(s.activation for s in steps[hook_at + 1 :] if s.activation is not None)
    last = steps[-1] if steps else None
    final = last.activation if last is not None else None
    return Observation(
        layer=name,
        hook_module=steps[hook_at].hook if hook_at >= 0 else name,
        replay=replay,
        chain=tuple(s.label for s in steps),
        bounds=final.bounds if final is not None else None,
        rectified=final is not None and final.name in RECTIFIERS,
        nonnegative=final is not None and final.name in ("relu", "relu6"),
        fallback=fallback,
    )


def _observe_in_scope(
    name: str, kind: LayerKind, scope: Scope, traced: TracedModel
) -> Observation | None:
    target = scope.relative(name)
    if target is None:
        return None
    nodes = [
        n for n in scope.graph_module.graph.nodes if n.op == "call_module" and n.target == target
    ]
    if not nodes:
        return None
    calls = traced.call_count(scope.graph_module.get_submodule(target))
    if calls > 1:
        return Observation(name, name, fallback=f"called {calls} times (shared weights)")
    start = nodes[0]
    if kind.returns_tuple:
        firsts = [
            u for u in start.users if u.op == "call_function" and len(u.args) > 1 and u.args[1] == 0
        ]
        if len(firsts) != 1:
            return Observation(name, name)
        start = firsts[0]
    steps, end = _chain_from(start, scope, traced)
    obs = _observation_from_steps(name, steps, _leaves_scope(steps, end, scope, traced.failures))
    consumer = _linear_consumer(scope.graph_module.get_submodule(target), steps, end, scope, traced)
    return replace(obs, consumer=consumer) if consumer is not None else obs


def _linear_consumer(
    module: nn.Module, steps: list[_Step], end: fx.Node, scope: Scope, traced: TracedModel
) -> str | None:
    """The Linear that alone reads a Linear layer's activations (see ``Observation.consumer``)."""
    if not isinstance(module, nn.Linear) or any(s.is_norm for s in steps):
        return None
    users = list(end.users)
    if len(users) != 1 or users[0].op != "call_module" or users[0].args[:1] != (end,):
        return None
    if len(users[0].args) != 1 or users[0].kwargs:
        return None
    consumer = scope.graph_module.get_submodule(users[0].target)
    if not isinstance(consumer, nn.Linear) or traced.call_count(consumer) != 1:
        return None
    return scope.qualify(users[0].target)


# Containers whose forward cannot be traced but whose wiring is known:
# container type → {child layer name: function(container) → activation applied to its output}.
STRUCTURE_HINTS: dict[type, dict[str, Callable[[nn.Module], Any]]] = {
    nn.TransformerEncoderLayer: {"linear1": lambda m: m.activation},
    nn.TransformerDecoderLayer: {"linear1": lambda m: m.activation},
}


def _hinted(name: str, model: nn.Module) -> Observation | None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    for cls in type(parent).__mro__:
        hints = STRUCTURE_HINTS.get(cls, {})
        if child in hints:
            step = activation_from_value(hints[child](parent))
            if step is None:
                return None
            return Observation(
                layer=name,
                hook_module=name,
                replay=(step,),
                chain=(f"{step.name} (structure hint for {cls.__name__})",),
                bounds=step.bounds,
            )
    return None


def _untraced_reason(name: str, failures: dict[str, str]) -> str:
    """The innermost enclosing scope that failed to trace, for the fallback message."""
    enclosing = [p for p in failures if p == "" or name.startswith(p + ".")]
    if not enclosing:
        return "not seen as a module call in the traced graph"
    scope = max(enclosing, key=len)
    return f"could not trace {scope or 'the model'!r} ({failures[scope]})"


def plan_observations(model: nn.Module, tracked: dict[str, LayerKind]) -> dict[str, Observation]:
    """Choose the observation point of every tracked layer (see the module docstring)."""
    traced = trace_model(model, set(tracked))
    plans: dict[str, Observation] = {}
    for name, kind in tracked.items():
        obs = None
        for scope in traced.scopes:
            obs = _observe_in_scope(name, kind, scope, traced)
            if obs is not None:
                break
        if obs is None:
            obs = _hinted(name, model) or Observation(
                name, name, fallback=_untraced_reason(name, traced.failures)
            )
        plans[name] = obs
    return plans
