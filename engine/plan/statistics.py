"""Figures a plan carries about itself: units per action kind and widths before → after."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, with_config
from typing_extensions import TypedDict

from engine.plan.actions import Action, ExpandAction, FoldAction, MergeAction, PruneAction


@with_config(ConfigDict(extra="forbid"))
class LayerWidth(TypedDict):
    """Unit count of one layer before and after the plan."""

    before: int
    after: int


class PlanStatistics(BaseModel):
    """Figures derived from the actions and the layout (checked on load, never trusted)."""

    model_config = ConfigDict(extra="forbid")

    prune_units: NonNegativeInt
    merged_units: NonNegativeInt = Field(description="pairwise merges plus units removed by folds")
    expand_units: NonNegativeInt
    layers_changed: list[str]
    widths: dict[str, LayerWidth] = Field(description="every layout layer: units before, after")

    @classmethod
    def compute(
        cls, actions: Iterable[Action], layout: Sequence[tuple[str, int]]
    ) -> PlanStatistics:
        """Statistics of ``actions`` applied to ``layout``.

        Layers an action names that are not in the layout count as changed but get no width
        (their size is unknown; surgery rejects such actions against the live model).

        >>> from engine.plan.actions import PruneAction
        >>> s = PlanStatistics.compute(
        ...     [PruneAction(layer="a", local_indices=[0], neuron_ids=[0], reason="dead")],
        ...     [("a", 3), ("b", 2)])
        >>> s.prune_units, s.layers_changed, s.widths["b"]
        (1, ['a'], {'before': 2, 'after': 2})
        """
        sizes = {name: int(size) for name, size in layout}
        delta = dict.fromkeys(sizes, 0)
        touched: list[str] = []
        pruned = merged = expanded = 0
        for action in actions:
            if isinstance(action, PruneAction):
                change = -len(action.local_indices)
                pruned += len(action.local_indices)
            elif isinstance(action, MergeAction):
                change = -1
                merged += 1
            elif isinstance(action, FoldAction):
                change = -len(action.remove)
                merged += len(action.remove)
            elif isinstance(action, ExpandAction):
                change = action.count
                expanded += action.count
            else:
                raise TypeError(f"not a plan action: {action!r}")
            if action.layer not in touched:
                touched.append(action.layer)
            if action.layer in delta:
                delta[action.layer] += change
        order = {name: i for i, name in enumerate(sizes)}
        touched.sort(key=lambda name: order.get(name, len(order)))  # stable: unknown last
        return cls(
            prune_units=pruned,
            merged_units=merged,
            expand_units=expanded,
            layers_changed=touched,
            widths={n: {"before": s, "after": s + delta[n]} for n, s in sizes.items()},
        )
