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


def first_samples(args: tuple[Any, ...], limit: int = 8) -> tuple[Any, ...]:
    """Detached copies of the first ``limit`` samples of each tensor argument."""
    out = []
    for a in args:
        if isinstance(a, torch.Tensor):
            a = a.detach()
            a = (a[:limit] if a.dim() > 0 else a).clone()
        out.append(a)
    return tuple(out)


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
    from engine.layout_builder import build_layout

    inputs = example_inputs if example_inputs is not None else engine.example_inputs
    if inputs is None:
        raise ConfigurationError(
            "the model layout needs example inputs: run one tracked forward first, or pass "
            "example_inputs=(batch,) to model_layout/propose"
        )
    if isinstance(inputs, tuple) and len(inputs) == 1:
        inputs = inputs[0]
    layers = {name: engine.neurons.ids(name) for name in engine.layers}
    with hooks_paused(engine):
        return build_layout(engine.model, layers, inputs)


def propose(engine: NeuronEngine, config: Any = None, example_inputs: Any = None) -> Plan:
    from engine.plan import Plan
    from policies import propose_actions, resolve_config

    cfg = resolve_config(config)
    snapshot = engine.snapshot()
    layout = model_layout(engine, example_inputs)
    actions = propose_actions(snapshot, layout, cfg)
    return Plan.create(actions, layout, policies=cfg.describe(), samples_seen=snapshot.samples_seen)
