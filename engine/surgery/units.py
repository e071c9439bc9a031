"""Which tracked units survive, merge or appear during one plan, and their neuron IDs.

The book follows every tracked layer of the plan's layout through the actions: removing a
unit of a layer removes it from every residual-coupled tracked layer too (one unit space), a
merged unit records the unit it was folded into, and a grown unit its source. It never
changes what it is given: ``registry_after`` returns a new neuron registry and
``prepare_accumulators`` the statistics' remaps, which the transaction commits last.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from engine.layout.model import ModelLayout, layout_fingerprint
from engine.neurons import NeuronRegistry
from engine.stats.accumulator import NeuronAccumulator
from engine.stats.remap import PreparedRemap, prepare_remap


class UnitBook:
    """Unit bookkeeping of one transaction (see the module docstring)."""

    def __init__(
        self, layout: ModelLayout, ids: dict[str, list[int]], registry: NeuronRegistry | None
    ) -> None:
        self.layout = layout
        self.ids = {n: list(v) for n, v in ids.items()}
        self.maps: dict[str, list[int]] = {n: list(range(len(v))) for n, v in ids.items()}
        self.into: dict[str, dict[int, int]] = {n: {} for n in ids}
        self.grow_ops: list[tuple[str, int, list[int] | None]] = []
        self.next_id = (
            registry.next_id
            if registry is not None
            else 1 + max((i for v in ids.values() for i in v), default=-1)
        )
        self._actions: list[dict[str, Any]] = []

    def group(self, layer: str) -> list[str]:
        info = self.layout.layers.get(layer)
        coupled = [] if info is None else [c for c in info.coupled if c in self.maps]
        return [layer, *coupled]

    def _action(self) -> dict[str, Any]:
        entry = {"removed_ids": [], "merged_into": {}, "added_ids": [], "parents": []}
        self._actions.append(entry)
        return entry

    def remove(self, layer: str, units: list[int], into: list[int] | None = None) -> None:
        entry = self._action()
        for name in self.group(layer):
            ids = self.ids[name]
            gone = set(units)
            self.maps[name] = [i for i in self.maps[name] if i not in gone]
            for k, unit in enumerate(units):
                target = -1 if into is None else into[k]
                self.into[name][unit] = target
                entry["removed_ids"].append(ids[unit])
                if target >= 0:
                    entry["merged_into"].setdefault(ids[target], []).append(ids[unit])

    def grow(self, layer: str, count: int, sources: list[int] | None) -> None:
        entry = self._action()
        for name in self.group(layer):
            self.maps[name] += [-1] * count
            self.grow_ops.append((name, count, sources))
            new = list(range(self.next_id, self.next_id + count))
            self.next_id += count
            entry["added_ids"] += new
            entry["parents"] += (
                [None] * count if sources is None else [self.ids[name][s] for s in sources]
            )

    def ids_of(self, index: int) -> dict[str, Any]:
        return self._actions[index]

    def width(self, layer: str) -> int:
        return len(self.maps[layer])

    def widths(self) -> dict[str, int]:
        return {n: len(m) for n, m in self.maps.items()}

    def fingerprint(self) -> str:
        return layout_fingerprint(list(self.widths().items()))

    # --- results ------------------------------------------------------------------------------
    def changed_layers(self) -> list[str]:
        """Tracked layers whose units were removed, reordered or grown."""
        return [n for n, m in self.maps.items() if m != list(range(len(self.ids[n])))]

    def registry_after(self, registry: NeuronRegistry, epoch: int | None = None) -> NeuronRegistry:
        """A new registry: ``registry`` after the plan (removed and merged units in the
        lineage, grown units with their parents, born at ``epoch``). ``registry`` itself is
        not changed."""
        after = NeuronRegistry.from_state_dict(registry.state_dict())
        for name in self.changed_layers():
            ids = self.ids[name]
            kept = {i for i in self.maps[name] if i >= 0}
            removed = [i for i in range(len(ids)) if i not in kept]
            if removed:
                targets = [self.into[name].get(i, -1) for i in removed]
                after.remove(name, removed, merged_into=[ids[t] if t >= 0 else -1
                                                         for t in targets])  # fmt: skip
        for name, count, sources in self.grow_ops:
            parents = None if sources is None else [self.ids[name][s] for s in sources]
            after.grow(name, count=count, parents=parents, epoch=epoch)
        return after

    def prepare_accumulators(
        self, accumulators: Mapping[str, NeuronAccumulator]
    ) -> list[PreparedRemap]:
        """Every changed layer's statistics, remapped on new tensors but not yet committed
        (bounds such as ``max_correlation_units`` are checked here, before anything moves)."""
        prepared = []
        for name in self.changed_layers():
            if name in accumulators:
                keep = [i for i in self.maps[name] if i >= 0]
                added = self.maps[name].count(-1)
                prepared.append(prepare_remap(accumulators[name], keep, added))
        return prepared
