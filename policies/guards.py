"""Guards shared by every policy of a plan: what may change, and what is already claimed.

Never prune or merge an output layer's units (logits), never empty a layer, keep each layer at
or above ``min_width`` (and ``min_keep_fraction`` of its width), leave protected layers and
residual-coupled layers alone, respect what surgery supports for the layer, let each unit
take part in at most one action per plan, and never remove a unit grown fewer than
``min_age_epochs`` epochs ago (its statistics are too young to judge it).

A residual-coupled group (``LayerLayout.coupled``: layers whose outputs are added, one unit
space) is frozen unless a policy opts in with ``coupled_ok=True``: then the group is judged as
a whole (every member must be changeable, its floor is the group's, and units claimed or
reserved in any member count for all of them), and the policy claims units with
:meth:`Guard.claim_group`.

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
    shrink_while_growing: bool = Field(
        default=True,
        description="False: when a growth policy of the plan grows any layer, the shrinking "
        "policies after it (all but dead-unit removal) stand down: the loss says the network "
        "is short of units, so it is not also cut in that plan",
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
        # Units added per layer by the growth policies of this plan (``grow``).
        self.grown: dict[str, int] = {}
        # Why a policy left a layer alone, for the plan's notes (``note``).
        self.notes: list[str] = []
        # Layers whose statistics saw non-finite values (``policies.common.exclude_nonfinite``):
        # why, and whether no action at all may touch them (no finite sample) or only growth.
        self.unjudged: dict[str, str] = {}
        self.unjudged_all: set[str] = set()
        self.unjudged_units: dict[str, set[int]] = {}  # claimed: no policy may use them
        self.nonfinite_checked = False
        min_age = self.settings.min_age_epochs
        if ages and min_age:
            for name, layer in layout.layers.items():
                young = [
                    i for i, nid in enumerate(layer.neuron_ids) if ages.get(nid, min_age) < min_age
                ]
                if young:
                    self.young[name] = young
                    self.reserved[name].update(young)

    def grow(self, name: str, count: int) -> None:
        """Record that an action of this plan adds ``count`` units to layer ``name`` (with
        ``shrink_while_growing`` off, the cutting policies after it then stand down)."""
        self.grown[name] = self.grown.get(name, 0) + count

    def note(self, policy: str, name: str, why: str) -> None:
        """Record why ``policy`` left layer ``name`` alone (the plan's notes list it)."""
        self.notes.append(f"{policy}: layer {name!r} left alone: {why}")

    def is_protected(self, name: str) -> bool:
        return any(name == p or fnmatchcase(name, p) for p in self.settings.protected)

    def group(self, name: str) -> list[str]:
        """``name`` and the tracked layers residual-coupled with it, in layout order.

        >>> from engine.layout import LayerLayout, ModelLayout
        >>> layout = ModelLayout({"a": LayerLayout("a", "Linear", 4, [0, 1, 2, 3], coupled=["b"]),
        ...                       "b": LayerLayout("b", "Linear", 4, [4, 5, 6, 7], coupled=["a"])})
        >>> Guard(layout).group("b")
        ['a', 'b']
        """
        members = {name, *self.layout.layers[name].coupled}
        return [n for n in self.layout.layers if n in members]

    def why_frozen(self, name: str, kind: str, coupled_ok: bool = False) -> str | None:
        """Why ``kind`` actions may not touch layer ``name`` (None when they may).

        A residual-coupled layer is frozen unless ``coupled_ok``: then every member of its
        group must be changeable (not protected, ``kind`` supported, not an output).

        >>> from engine.layout import LayerLayout, ModelLayout
        >>> layout = ModelLayout({"a": LayerLayout("a", "Linear", 4, [0, 1, 2, 3], coupled=["b"]),
        ...                       "b": LayerLayout("b", "Linear", 4, [4, 5, 6, 7], coupled=["a"])})
        >>> Guard(layout).why_frozen("a", "prune")
        "coupled with ['b'] (residual): change them together by hand"
        >>> Guard(layout).why_frozen("a", "prune", coupled_ok=True) is None
        True
        """
        if not coupled_ok:
            return self._why_frozen_alone(name, kind, refuse_coupled=True)
        for member in self.group(name):
            why = self._why_frozen_alone(member, kind, refuse_coupled=False)
            if why is not None:
                return why if member == name else f"coupled with {member!r}: {why}"
        return None

    def _why_frozen_alone(self, name: str, kind: str, refuse_coupled: bool) -> str | None:
        layer = self.layout.layers[name]
        if self.is_protected(name):
            return "protected layer"
        if name in self.unjudged and (kind == "expand" or name in self.unjudged_all):
            return self.unjudged[name]
        if kind not in layer.supports:
            return (
                f"surgery does not support {kind!r} on this {layer.module_type} layer (its "
                f"group allows {sorted(layer.supports) or 'nothing'}: e.g. a concat branch, a "
                "grouped conv, an attention block or an RNN)"
            )
        if refuse_coupled and layer.coupled:
            return f"coupled with {layer.coupled} (residual): change them together by hand"
        if kind != "expand" and layer.is_output and not self.settings.allow_output_changes:
            return "output layer: its units are the model's outputs"
        return None

    def removable(self, name: str, kind: str = "prune", coupled_ok: bool = False) -> int:
        """How many more units may be removed from ``name`` by ``kind`` actions (for a
        coupled group with ``coupled_ok``: from the whole group, one unit space)."""
        if self.why_frozen(name, kind, coupled_ok) is not None:
            return 0
        members = self.group(name) if coupled_ok else [name]
        left = []
        for member in members:
            units = self.layout.layers[member].units
            keep = math.ceil(units * self.settings.min_keep_fraction - 1e-9)
            floor = max(self.settings.min_width, keep, 1)
            left.append(units - floor - self.removed[member])
        return self.divisible(name, max(0, min(left)), coupled_ok)

    def divisible(self, name: str, count: int, coupled_ok: bool = False) -> int:
        """The largest removal ``≤ count`` that leaves every member's width a multiple of its
        ``width_multiple`` (an attention block's heads keep one size, GroupNorm groups too).

        >>> from engine.layout import LayerLayout, ModelLayout
        >>> layout = ModelLayout({"a": LayerLayout("a", "Linear", 16, list(range(16)),
        ...                                        width_multiple=4)})
        >>> Guard(layout).divisible("a", 7), Guard(layout).removable("a")
        (4, 12)
        """
        members = self.group(name) if coupled_ok else [name]
        # The members of a coupled group share one unit space (same width, same removals):
        # k is valid when k ≡ width (mod the lcm of their multiples).
        multiple = math.lcm(*(max(1, self.layout.layers[m].width_multiple) for m in members))
        width = self.layout.layers[name].units - self.removed[name]
        return max(0, count - (count - width) % multiple) if count > 0 else 0

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

    def claim_group(self, name: str, local_indices, removes: int) -> None:
        """:meth:`claim` on every member of ``name``'s coupled group (one unit space).

        >>> from engine.layout import LayerLayout, ModelLayout
        >>> ids = list(range(8))
        >>> layout = ModelLayout({"a": LayerLayout("a", "Linear", 8, ids, coupled=["b"]),
        ...                       "b": LayerLayout("b", "Linear", 8, ids, coupled=["a"])})
        >>> g = Guard(layout, GuardSettings(min_width=2))
        >>> g.reserve("b", [5])
        >>> g.claim_group("a", [0, 1], removes=2)
        >>> g.removed, g.removable("b", coupled_ok=True), g.group_free("a", range(8))
        ({'a': 2, 'b': 2}, 4, ([2, 3, 4, 5, 6, 7], {5}))
        """
        for member in self.group(name):
            self.claim(member, local_indices, removes)

    def group_free(self, name: str, local_indices) -> tuple[list[int], set[int]]:
        """For a coupled group: the indices no member has claimed, and those of them that
        some member reserved (they may be kept, never removed)."""
        members = self.group(name)
        taken = set().union(*(self.claimed[m] for m in members))
        reserved = set().union(*(self.reserved[m] for m in members))
        free = [int(i) for i in local_indices if int(i) not in taken]
        return free, {i for i in free if i in reserved}
