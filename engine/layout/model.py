"""What policies know about a model besides its statistics: a plain-data layout.

For every tracked layer: its units and neuron IDs, whether its units are model outputs (nothing
inside the model consumes them: logits), which other tracked layers are coupled to it (residual
adds), which action kinds surgery supports for it, how many parameters one unit costs, and the
consumer weights ``V`` that multiply each unit (stacked as a ``(rows, units)`` matrix, so
``‖V[:, j]‖²`` is the weight mass unit j feeds forward).

Built from the live model with Torch-Pruning's dependency graph (see ``build_layout``); policies
read it and never touch modules.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

import torch


def layout_fingerprint(layout: list[tuple[str, int]]) -> str:
    """A short hash of the tracked layers' names and sizes, in order (plans record it).

    >>> layout_fingerprint([("fc", 8)]) == layout_fingerprint([("fc", 8)])
    True
    """
    text = json.dumps([[name, int(size)] for name, size in layout])
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


ALL_KINDS = frozenset({"prune", "merge", "fold", "expand"})


@dataclass(eq=False)
class ConsumerSlice:
    """The weights of one consumer module that multiply a layer's units.

    ``weight`` is ``(rows, units)`` float64 on the CPU: a Linear consumer gives its
    ``weight[:, cols]``; a convolution gives its kernel with (out, kh, kw) folded into rows; a
    Linear after ``flatten`` gives one row per (output, spatial position) of each channel.
    ``tracked_layer`` names the consumer when it is itself tracked (its width may change too);
    ``columns_per_unit`` is how many of its input features one unit feeds (H·W after flatten).
    """

    module: str
    module_type: str
    weight: torch.Tensor
    columns_per_unit: int = 1
    tracked_layer: str | None = None


@dataclass(eq=False)
class LayerLayout:
    name: str
    module_type: str
    units: int
    neuron_ids: list[int]
    is_output: bool = False
    coupled: list[str] = field(default_factory=list)
    supports: frozenset[str] = ALL_KINDS
    params_per_unit: int = 0
    consumers: list[ConsumerSlice] = field(default_factory=list)
    # The layer's width must stay a multiple of this (the num_heads of an attention block,
    # the num_groups of a GroupNorm in its group): policies remove units in such steps.
    width_multiple: int = 1

    def consumer_matrix(self) -> torch.Tensor | None:
        """All consumers' weights on this layer's units, stacked: ``(rows, units)``, or None."""
        if not self.consumers:
            return None
        return torch.cat([c.weight for c in self.consumers], dim=0)

    def consumer_sq_norms(self) -> torch.Tensor | None:
        """``‖V[:, j]‖²`` per unit, or None when no consumer weights are known."""
        v = self.consumer_matrix()
        return None if v is None else v.square().sum(0)


@dataclass(eq=False)
class ModelLayout:
    layers: dict[str, LayerLayout]
    total_params: int = 0

    @property
    def sizes(self) -> list[tuple[str, int]]:
        return [(name, layer.units) for name, layer in self.layers.items()]

    def fingerprint(self) -> str:
        return layout_fingerprint(self.sizes)

    def params_after(self, removed: dict[str, int]) -> int:
        """Parameter count after removing ``removed[layer]`` units from each layer.

        Each unit costs ``params_per_unit`` (incoming weights, bias, norm parameters, its
        consumer columns and the rest of its coupled group). A weight whose rows and columns
        both shrink loses the shared entries once, not twice: for a producer ``A`` losing
        ``k`` units and a tracked consumer ``B`` losing ``m`` (``B`` itself or any layer
        coupled with it is in ``removed``), ``k·m`` pairs are added back. List one layer per
        coupled group (its partners shrink with it). Exact for chains and residual groups of
        Linear/Conv layers; groups holding a MultiheadAttention, or a layer that reads and
        writes the same units, are exact for one unit.
        """
        shrink: dict[str, int] = {}
        for name, layer in self.layers.items():
            k = removed.get(name, 0) or max((removed.get(c, 0) for c in layer.coupled), default=0)
            if k:
                shrink[name] = k
        total = self.total_params
        for name, k in removed.items():
            layer = self.layers[name]
            total -= k * layer.params_per_unit
            if not k:
                continue
            group = {name, *layer.coupled}
            for c in layer.consumers:
                m = shrink.get(c.tracked_layer, 0) if c.tracked_layer is not None else 0
                if not m:
                    continue
                # one (producer unit, consumer unit) pair shares rows/out weights:
                # 1 for Linear, kh·kw for a conv kernel, H·W after flatten
                out_units = self.layers[c.tracked_layer].units
                per_pair = c.weight.shape[0] // max(1, out_units)
                # a consumer in the producer's own group: its diagonal is in params_per_unit
                pairs = k * m - (k if c.tracked_layer in group else 0)
                total += pairs * per_pair
        return total
