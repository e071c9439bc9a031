"""From a live engine to a plan: layout of the model, then the policies.

``NeuronEngine.model_layout`` and ``NeuronEngine.propose`` delegate here. The policies live in
the ``policies`` package; this is the engine's one (lazy) use of it, so that
``engine.propose("policies.yaml")`` works without the caller wiring policies by hand.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import torch

from engine.errors import ConfigurationError
from engine.layout import ModelLayout

if TYPE_CHECKING:  # pragma: no cover
    from engine.core import NeuronEngine
    from engine.plan import Plan


def _first(a: Any, limit: int) -> Any:
    if not isinstance(a, torch.Tensor):
        return a
    a = a.detach()
    # A 0-d or 1-d tensor may be one unbatched sample (``model(torch.randn(16))``): slicing it
    # would cut its feature axis. Keep it whole.
    return (a[:limit] if a.dim() >= 2 else a).clone()


def first_samples(args: tuple[Any, ...], limit: int = 8) -> tuple[Any, ...]:
    """Detached copies of the first ``limit`` samples of each batched tensor argument."""
    return tuple(_first(a, limit) for a in args)


def first_kwarg_samples(kwargs: dict[str, Any], limit: int = 8) -> dict[str, Any]:
    """``first_samples`` for keyword arguments (``model(x=batch)``)."""
    return {k: _first(v, limit) for k, v in kwargs.items()}


@contextmanager
def hooks_paused(engine: NeuronEngine) -> Iterator[None]:
    """Detach the tracking hooks for the duration (re-attached afterwards, also on error)."""
    was_tracking = engine.is_tracking
    if was_tracking:
        engine.stop()
    try:
        yield
    finally:
        if was_tracking:
            engine.start()


def model_layout(engine: NeuronEngine, example_inputs: Any = None) -> ModelLayout:
    from engine.layout.build import build_layout

    kwargs: dict[str, Any] = {}
    if example_inputs is not None:
        inputs = example_inputs
    else:
        inputs, kwargs = engine.example_inputs, dict(engine.example_kwargs)
    if inputs is None:
        raise ConfigurationError(
            "the model layout needs example inputs: run one tracked forward first, or pass "
            "example_inputs=(batch,) to model_layout/propose"
        )
    layers = {name: engine.neurons.ids(name) for name in engine.layers}
    with hooks_paused(engine):
        if kwargs:  # the model was called with keyword arguments: call it the same way
            return build_layout(
                engine.model,
                layers,
                (tuple(inputs), kwargs),
                forward_fn=lambda m, inp: m(*inp[0], **inp[1]),
            )
        if isinstance(inputs, tuple) and len(inputs) == 1:
            inputs = inputs[0]
        return build_layout(engine.model, layers, inputs)


def propose(
    engine: NeuronEngine, config: Any = None, example_inputs: Any = None, epoch: int | None = None
) -> Plan:
    from engine.plan import Plan
    from policies import propose_actions, resolve_config

    cfg = resolve_config(config)
    snapshot = engine.snapshot()
    layout = model_layout(engine, example_inputs)
    ages = engine.neurons.ages(epoch) if epoch is not None else None
    notes: list[str] = []
    actions = propose_actions(snapshot, layout, cfg, ages=ages, notes=notes)
    return Plan.create(
        actions,
        layout,
        policies=cfg.describe(),
        samples_seen=snapshot.samples_seen,
        notes=notes,
    )
