"""What the engine tracks: each layer's module, kind, observation point and statistics.

``track_layers`` discovers the layers (``engine.selection``), places their observation points
after the norm and nonlinearity that consume them (``engine.observe``), numbers their units
(``NeuronRegistry``) and gives each its ``NeuronAccumulator``.

>>> import torch.nn as nn
>>> model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
>>> neurons, layers = track_layers(model)
>>> {n: (l.num_units, l.observation.hook_module) for n, l in layers.items()}
{'0': (8, '1'), '2': (2, '2')}
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from engine.errors import ConfigurationError
from engine.layers import LayerKind
from engine.neurons import NeuronRegistry
from engine.observe import Observation, plan_observations
from engine.selection import Selector, check_selector, discover_layers, matches
from engine.stats import NeuronAccumulator
from engine.stats.growth import GradientCrossAccumulator

__all__ = ["TrackedLayer", "track_layers"]


@dataclass
class TrackedLayer:
    """One tracked layer: its module, kind, observation point and running statistics."""

    name: str
    module: nn.Module
    kind: LayerKind
    observation: Observation
    accumulator: NeuronAccumulator
    growth: GradientCrossAccumulator | None = None  # GradMax signal, when requested

    @property
    def num_units(self) -> int:
        return self.accumulator.num_units


def track_layers(
    model: nn.Module,
    *,
    include: Selector = None,
    exclude: Selector = None,
    correlation: bool | Selector = False,
    max_correlation_units: int = 4096,
    firing_threshold: float = 0.0,
    saturation_tolerance: float = 0.02,
    flush_every: int = 64,
    growth_signal: bool | Selector = False,
) -> tuple[NeuronRegistry, dict[str, TrackedLayer]]:
    """The tracked layers of ``model`` and their neuron IDs (see ``NeuronEngine``'s
    arguments)."""
    found = discover_layers(model, include, exclude)
    if not isinstance(correlation, bool):
        check_selector(model, correlation, "correlation")
    if not isinstance(growth_signal, bool):
        check_selector(model, growth_signal, "growth_signal")
    if not found:
        raise ConfigurationError(
            f"no trackable layer in {type(model).__name__} with include={include!r}, "
            f"exclude={exclude!r} (the root module itself is not tracked: wrap a bare layer "
            f"in nn.Sequential); register custom types with engine.register_layer_kind"
        )
    observations = plan_observations(model, {n: kind for n, (_, kind) in found.items()})
    neurons = NeuronRegistry()
    layers: dict[str, TrackedLayer] = {}
    for name, (module, kind) in found.items():
        units = kind.units(module)
        neurons.add_layer(name, units)
        wants_corr = (
            correlation if isinstance(correlation, bool) else matches(name, module, correlation)
        )
        acc = NeuronAccumulator(
            units,
            firing_threshold=firing_threshold,
            bounds=observations[name].bounds,
            saturation_tolerance=saturation_tolerance,
            correlation=wants_corr,
            max_correlation_units=max_correlation_units,
            flush_every=flush_every,
            name=name,
            nonnegative=observations[name].nonnegative,
        )
        growth = _growth_accumulator(name, module, observations[name], growth_signal)
        layers[name] = TrackedLayer(name, module, kind, observations[name], acc, growth)
    return neurons, layers


def _growth_accumulator(
    name: str, module: nn.Module, observation: Observation, wanted: bool | Selector
) -> GradientCrossAccumulator | None:
    """A growth-signal accumulator for a layer that has a Linear consumer; a layer named
    explicitly without one is refused (``True`` takes the layers that have one)."""
    asked = wanted if isinstance(wanted, bool) else matches(name, module, wanted)
    if not asked:
        return None
    if observation.consumer is None:
        if wanted is True:
            return None
        raise ConfigurationError(
            f"growth_signal: layer {name!r} has no single nn.Linear consumer reading its "
            f"activations (GradMax needs Linear → activation → Linear, no norm or residual)"
        )
    return GradientCrossAccumulator(observation.consumer)
