"""Which module types hold neurons, how many, and where the neuron axis is.

A registry keyed by module type: behaviour that varies by layer lives here and nowhere else.
Lookup follows the class hierarchy, so subclasses of ``nn.Linear`` are tracked like ``nn.Linear``.

>>> import torch.nn as nn
>>> kind = layer_kind_for(nn.Conv2d(3, 8, 3))
>>> kind.units(nn.Conv2d(3, 8, 3)), kind.name
(8, 'conv')

Register your own layer type:

>>> class Gate(nn.Module):
...     def __init__(self, n):
...         super().__init__(); self.n = n
>>> register_layer_kind(Gate, LayerKind("gate", units=lambda m: m.n))
>>> layer_kind_for(Gate(5)).units(Gate(5))
5
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from engine.errors import ConfigurationError


def _first(output: Any) -> torch.Tensor:
    out = output[0] if isinstance(output, (tuple, list)) else output
    if isinstance(out, nn.utils.rnn.PackedSequence):
        return out.data  # (total valid steps, H): every real observation, no padding
    return out


def _identity(output: Any) -> torch.Tensor:
    return output


@dataclass(frozen=True)
class LayerKind:
    """How to read the neurons of one module type.

    ``units(module)`` is the number of output units. ``channel_axis`` is the axis of the unit in
    a batched output (``-1`` for features-last layers, ``1`` for convolutions). ``spatial_dims``
    lets an unbatched conv input (no batch axis) be recognised. ``select`` picks the activation
    tensor out of the module's output (RNNs and attention return tuples).
    """

    name: str
    units: Callable[[nn.Module], int]
    channel_axis: int = -1
    spatial_dims: int | None = None
    select: Callable[[Any], torch.Tensor] = _identity

    @property
    def returns_tuple(self) -> bool:
        return self.select is _first

    def unit_axis(self, x: torch.Tensor) -> int:
        if self.channel_axis == -1:
            return x.dim() - 1
        if self.spatial_dims is not None and x.dim() == self.spatial_dims + 1:
            return 0  # unbatched convolution input: (C, *spatial)
        return self.channel_axis


def _rnn_units(m: nn.Module) -> int:
    proj = getattr(m, "proj_size", 0) or 0
    return (proj or m.hidden_size) * (2 if m.bidirectional else 1)


_REGISTRY: dict[type, LayerKind] = {
    nn.Linear: LayerKind("linear", units=lambda m: m.out_features),
    nn.Bilinear: LayerKind("linear", units=lambda m: m.out_features),
    nn.Conv1d: LayerKind("conv", units=lambda m: m.out_channels, channel_axis=1, spatial_dims=1),
    nn.Conv2d: LayerKind("conv", units=lambda m: m.out_channels, channel_axis=1, spatial_dims=2),
    nn.Conv3d: LayerKind("conv", units=lambda m: m.out_channels, channel_axis=1, spatial_dims=3),
    nn.ConvTranspose1d: LayerKind(
        "conv_transpose", units=lambda m: m.out_channels, channel_axis=1, spatial_dims=1
    ),
    nn.ConvTranspose2d: LayerKind(
        "conv_transpose", units=lambda m: m.out_channels, channel_axis=1, spatial_dims=2
    ),
    nn.ConvTranspose3d: LayerKind(
        "conv_transpose", units=lambda m: m.out_channels, channel_axis=1, spatial_dims=3
    ),
    nn.RNN: LayerKind("rnn", units=_rnn_units, select=_first),
    nn.LSTM: LayerKind("lstm", units=_rnn_units, select=_first),
    nn.GRU: LayerKind("gru", units=_rnn_units, select=_first),
    nn.MultiheadAttention: LayerKind("attention", units=lambda m: m.embed_dim, select=_first),
    nn.Embedding: LayerKind("embedding", units=lambda m: m.embedding_dim),
    nn.EmbeddingBag: LayerKind("embedding", units=lambda m: m.embedding_dim),
}


def register_layer_kind(module_type: type, kind: LayerKind) -> None:
    """Track every module of ``module_type`` (and its subclasses) with ``kind``."""
    if not (isinstance(module_type, type) and issubclass(module_type, nn.Module)):
        raise ConfigurationError(
            f"register_layer_kind expects an nn.Module subclass, got {module_type!r}"
        )
    _REGISTRY[module_type] = kind


def layer_kind_for(module: nn.Module) -> LayerKind | None:
    """The registered kind of ``module`` (nearest class in its MRO), or None if untracked."""
    for cls in type(module).__mro__:
        kind = _REGISTRY.get(cls)
        if kind is not None:
            return kind
    return None


def tracked_types() -> tuple[type, ...]:
    """Module types the engine tracks by default."""
    return tuple(_REGISTRY)


# Module types outside ``torch.nn`` whose weight multiplies their inputs (a consumer of the
# units before them): type → (weight path, input axis of that weight). Linear and Conv are
# known to the layout without it; Hugging Face's ``Conv1D`` (weight ``(in, out)``) registers
# ``("weight", 0)`` from ``engine.integrations.transformers``.
_CONSUMERS: dict[type, tuple[str, int]] = {}


def register_consumer_weight(module_type: type, path: str, input_dim: int) -> None:
    """Tell the layout that ``module_type`` multiplies its inputs by the tensor at ``path``
    along ``input_dim`` (so the layers before it are not output layers, and folds see it).

    >>> class Transposed(nn.Module):  # weight (in, out), like Hugging Face's Conv1D
    ...     pass
    >>> register_consumer_weight(Transposed, "weight", 0)
    >>> consumer_weight_of(Transposed()), consumer_weight_of(nn.ReLU())
    (('weight', 0), None)
    """
    if not (isinstance(module_type, type) and issubclass(module_type, nn.Module)):
        raise ConfigurationError(
            f"register_consumer_weight expects an nn.Module subclass, got {module_type!r}"
        )
    _CONSUMERS[module_type] = (str(path), int(input_dim))


def consumer_weight_of(module: nn.Module) -> tuple[str, int] | None:
    """``(path, input_dim)`` registered for ``module``'s type (nearest class in its MRO)."""
    for cls in type(module).__mro__:
        spec = _CONSUMERS.get(cls)
        if spec is not None:
            return spec
    return None
