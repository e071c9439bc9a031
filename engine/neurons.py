"""Stable neuron identities: layer ↔ global ID ↔ local index, and lineage across surgery.

IDs are handed out in module order when the engine is built (the first layer's units get
0..N-1, the next layer continues), never reused, and survive surgery: a removed unit keeps its
ID in the lineage, a merged unit records the survivor it was folded into, a grown unit records
its parent (and the epoch it was grown at, when known: ``ages`` gives how old each grown unit
is, so policies can leave young units alone).

>>> reg = NeuronRegistry()
>>> reg.add_layer("fc1", 3), reg.add_layer("fc2", 2)
([0, 1, 2], [3, 4])
>>> reg.ids("fc2"), reg.locate(4)
([3, 4], ('fc2', 1))
>>> reg.remove("fc1", [1]), reg.ids("fc1")
([1], [0, 2])
>>> reg.grow("fc1", parents=[0]), reg.ids("fc1"), reg.lineage[5]
([5], [0, 2, 5], {'event': 'grown', 'layer': 'fc1', 'parent': 0})
>>> reg.grow("fc2", 1, epoch=4), reg.ages(epoch=6)
([6], {6: 2})
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from engine.errors import ConfigurationError, LayerNotFoundError, NeuronNotFoundError


class NeuronRegistry:
    """Maps every tracked layer's units to global integer IDs."""

    def __init__(self) -> None:
        self._ids: dict[str, list[int]] = {}
        self._where: dict[int, tuple[str, int]] = {}
        self._next_id = 0
        self.lineage: dict[int, dict[str, Any]] = {}

    # --- building -------------------------------------------------------------------------
    def add_layer(self, name: str, units: int) -> list[int]:
        if name in self._ids:
            raise ConfigurationError(f"layer {name!r} is already registered")
        if units < 0:
            raise ConfigurationError(f"layer {name!r}: unit count must be ≥ 0, got {units}")
        ids = list(range(self._next_id, self._next_id + units))
        self._next_id += units
        self._ids[name] = ids
        self._reindex(name)
        return list(ids)

    def _reindex(self, name: str) -> None:
        for local, nid in enumerate(self._ids[name]):
            self._where[nid] = (name, local)

    # --- queries --------------------------------------------------------------------------
    @property
    def layer_names(self) -> list[str]:
        return list(self._ids)

    @property
    def total(self) -> int:
        """Number of live neurons over all tracked layers."""
        return sum(len(v) for v in self._ids.values())

    @property
    def next_id(self) -> int:
        return self._next_id

    def _layer(self, name: str) -> list[int]:
        try:
            return self._ids[name]
        except KeyError:
            raise LayerNotFoundError(name, self.layer_names) from None

    def ids(self, layer: str) -> list[int]:
        """Global IDs of ``layer``'s units, in local-index order."""
        return list(self._layer(layer))

    def size(self, layer: str) -> int:
        return len(self._layer(layer))

    def locate(self, neuron_id: int) -> tuple[str, int]:
        """``(layer, local_index)`` of a live neuron (SelfModifyingSLM's ``get_neuron_info``)."""
        try:
            return self._where[int(neuron_id)]
        except KeyError:
            fate = self.lineage.get(int(neuron_id))
            detail = ""
            if fate and fate.get("event") == "merged" and fate.get("into") is not None:
                detail = f" (it was merged into neuron {fate['into']} in layer {fate['layer']!r})"
            elif fate:
                detail = f" (it was {fate['event']} from layer {fate['layer']!r})"
            raise NeuronNotFoundError(
                f"neuron {neuron_id} is not a live neuron{detail}; IDs run 0..{self._next_id - 1}"
            ) from None

    def id_of(self, layer: str, local_index: int) -> int:
        ids = self._layer(layer)
        if not 0 <= local_index < len(ids):
            raise NeuronNotFoundError(
                f"layer {layer!r} has {len(ids)} units; local index {local_index} is out of range"
            )
        return ids[local_index]

    def as_dict(self) -> dict[str, list[int]]:
        """``{layer: [ids…]}``, the shape of SelfModifyingSLM's ``track_model`` result."""
        return {k: list(v) for k, v in self._ids.items()}

    # --- surgery bookkeeping --------------------------------------------------------------
    def _check_locals(self, layer: str, local_indices: Iterable[int]) -> list[int]:
        ids = self._layer(layer)
        idx = [int(i) for i in local_indices]
        bad = [i for i in idx if not 0 <= i < len(ids)]
        if bad:
            raise NeuronNotFoundError(
                f"layer {layer!r} has {len(ids)} units; local indices {bad} are out of range"
            )
        if len(set(idx)) != len(idx):
            raise ConfigurationError(f"layer {layer!r}: duplicate local indices in {idx}")
        return idx

    def remove(
        self, layer: str, local_indices: Sequence[int], merged_into: Sequence[int] | None = None
    ) -> list[int]:
        """Drop units by local index; returns their IDs. ``merged_into`` gives, per removed unit,
        the surviving neuron ID it was folded into (or -1 for a plain removal)."""
        idx = self._check_locals(layer, local_indices)
        ids = self._ids[layer]
        removed = [ids[i] for i in idx]
        targets = list(merged_into) if merged_into is not None else [-1] * len(idx)
        if len(targets) != len(idx):
            raise ConfigurationError("merged_into must give one target per removed unit")
        for nid, into in zip(removed, targets):
            self._where.pop(nid, None)
            if into is None or into < 0:
                self.lineage[nid] = {"event": "removed", "layer": layer}
            else:
                self.lineage[nid] = {"event": "merged", "layer": layer, "into": int(into)}
        drop = set(idx)
        self._ids[layer] = [nid for i, nid in enumerate(ids) if i not in drop]
        self._reindex(layer)
        return removed

    def grow(
        self,
        layer: str,
        count: int | None = None,
        parents: Sequence[int] | None = None,
        *,
        epoch: int | None = None,
    ):
        """Append new units to ``layer`` with fresh IDs; ``parents`` (IDs) records their origin
        and ``epoch`` when they were grown."""
        self._layer(layer)
        if parents is not None:
            count = len(parents) if count is None else count
            if len(parents) != count:
                raise ConfigurationError("parents must give one parent ID per grown unit")
        if count is None or count < 0:
            raise ConfigurationError(f"grow needs a count ≥ 0, got {count}")
        new = list(range(self._next_id, self._next_id + count))
        self._next_id += count
        self._ids[layer].extend(new)
        self._reindex(layer)
        for k, nid in enumerate(new):
            parent = None if parents is None else int(parents[k])
            self.lineage[nid] = {"event": "grown", "layer": layer, "parent": parent}
            if epoch is not None:
                self.lineage[nid]["epoch"] = int(epoch)
        return new

    def ages(self, epoch: int) -> dict[int, int]:
        """``ID → epoch − the epoch it was grown at`` for every live unit grown at a known
        epoch (units present from the start, or grown without an epoch, are absent)."""
        live = {i for ids in self._ids.values() for i in ids}
        return {
            nid: int(epoch) - fate["epoch"]
            for nid, fate in self.lineage.items()
            if fate.get("event") == "grown" and "epoch" in fate and nid in live
        }

    # --- persistence ----------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "layers": self.as_dict(),
            "next_id": self._next_id,
            "lineage": {str(k): v for k, v in self.lineage.items()},
        }

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> NeuronRegistry:
        reg = cls()
        for name, ids in state["layers"].items():
            reg._ids[name] = [int(i) for i in ids]
            reg._reindex(name)
        reg._next_id = int(state["next_id"])
        reg.lineage = {int(k): dict(v) for k, v in state.get("lineage", {}).items()}
        return reg

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Replace this registry's IDs, lineage and next ID with ``state`` (in place: every
        holder of this registry sees the change). ``state`` is read in full before anything
        is replaced, so a malformed one leaves the registry as it was.

        >>> reg, other = NeuronRegistry(), NeuronRegistry()
        >>> _ = reg.add_layer("fc", 2); _ = other.add_layer("fc", 3)
        >>> reg.load_state_dict(other.state_dict()); reg.ids("fc"), reg.next_id
        ([0, 1, 2], 3)
        """
        new = NeuronRegistry.from_state_dict(state)
        self._ids, self._where = new._ids, new._where
        self._next_id, self.lineage = new._next_id, new.lineage
