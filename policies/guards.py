"""Guards shared by every policy of a plan: what may change, and what is already claimed.

Never prune or merge an output layer's units (logits), never empty a layer, keep each layer at
or above ``min_width`` (and ``min_keep_fraction`` of its width), leave protected layers and
residual-coupled layers alone, respect what surgery supports for the layer, let each unit
take part in at most one action per plan, and never remove a unit grown fewer than
``min_age_epochs`` epochs ago (its statistics are too young to judge it).

>>> from engine.layout import LayerLayout, ModelLayout
>>> layout = ModelLayout({"fc": LayerLayout("fc", "Linear", 4, [0, 1, 2, 3]),
...                       "out": LayerLayout("out", "Linear", 2, [4, 5], is_output=True)})
>>> g = Guard(layout, GuardSettings(min_width=2))
>>> g.removable("fc"), g.removable("out")
(2, 0)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from fnmatch import fnmatchcase

from pydantic import BaseModel, ConfigDict, Field

from engine.layout import ModelLayout


class GuardSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    min_width: int = Field(default=4, ge=1, description="never shrink a layer below this")
    min_keep_fraction: float = Field(default=0.25, ge=0.0, le=1.0)
    protected: list[str] = Field(default_factory=list, description="names or fnmatch patterns")
    allow_output_changes: bool = Field(
        default=False, description="allow removing units of output layers (logits): rarely right"
    )
    min_age_epochs: int = Field(
        default=0,
        ge=0,
        description="units grown fewer than this many epochs ago are not pruned or merged away",
    )


class Guard:
    """Per-plan bookkeeping of removable capacity and claimed units."""

    def __init__(
        self,
        layout: ModelLayout,
        settings: GuardSettings | None = None,
        ages: Mapping[int, int] | None = None,
    ) -> None:
        """``ages``: neuron ID → epochs since it was grown (``NeuronRegistry.ages``)."""
        self.layout = layout
        self.settings = settings or GuardSettings()
        self.claimed: dict[str, set[int]] = {name: set() for name in layout.layers}
        self.removed: dict[str, int] = dict.fromkeys(layout.layers, 0)
        # Units read by an earlier action (net2net sources) or too young to judge: they must
        # stay, but may still be kept (or be the surviving unit) by an action.
        self.reserved: dict[str, set[int]] = {name: set() for name in layout.layers}
        self.young: dict[str, list[int]] = {}
        self.ages: Mapping[int, int] = ages or {}
        # Why a policy left a layer alone, for the plan's notes (``note``).
        self.notes: list[str] = []
        min_age = self.settings.min_age_epochs
        if ages and min_age:
            for name, layer in layout.layers.items():
                young = [
                    i for i, nid in enumerate(layer.neuron_ids) if ages.get(nid, min_age) < min_age
                ]
                if young:
                    self.young[name] = young
                    self.reserved[name].update(young)

    def note(self, policy: str, name: str, why: str) -> None:
        """Record why ``policy`` left layer ``name`` alone (the plan's notes list it)."""
        self.notes.append(f"{policy}: layer {name!r} left alone: {why}")

    def is_protected(self, name: str) -> bool:
        return any(name == p or fnmatchcase(name, p) for p in self.settings.protected)

    def why_frozen(self, name: str, kind: str) -> str | None:
        """Why ``kind`` actions may not touch layer ``name`` (None when they may)."""
        layer = self.layout.layers[name]
        if self.is_protected(name):
            return "protected layer"
        if kind not in layer.supports:
            return f"surgery does not support {kind!r} on {layer.module_type}"
        if layer.coupled:
            return f"coupled with {layer.coupled} (residual): change them together by hand"
        if kind != "expand" and layer.is_output and not self.settings.allow_output_changes:
            return "output layer: its units are the model's outputs"
        return None

    def removable(self, name: str, kind: str = "prune") -> int:
        """How many more units may be removed from ``name`` by ``kind`` actions."""
        if self.why_frozen(name, kind) is not None:
            return 0
        units = self.layout.layers[name].units
        keep = math.ceil(units * self.settings.min_keep_fraction - 1e-9)
        floor = max(self.settings.min_width, keep, 1)
        return max(0, units - floor - self.removed[name])

    def free(self, name: str, local_indices) -> list[int]:
        """The indices not yet claimed by an earlier action of this plan."""
        taken = self.claimed[name]
        return [int(i) for i in local_indices if int(i) not in taken]

    def removable_units(self, name: str, local_indices) -> list[int]:
        """The indices a later action may remove: not claimed and not reserved as a source."""
        taken = self.claimed[name] | self.reserved[name]
        return [int(i) for i in local_indices if int(i) not in taken]

    def reserve(self, name: str, local_indices) -> None:
        """Mark units that an action reads (net2net sources): never removed by later actions."""
        self.reserved[name].update(int(i) for i in local_indices)

    def claim(self, name: str, local_indices, removes: int) -> None:
        self.claimed[name].update(int(i) for i in local_indices)
        self.removed[name] += removes
