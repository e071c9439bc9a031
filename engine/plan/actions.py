"""Plan actions: what to prune, merge (pairwise or multi-unit fold) and expand, with evidence.

Indices are *local indices in the layout the plan was made for*, even when several actions touch
one layer; neuron IDs are given alongside so a human (and the surgery) can cross-check them.

>>> a = PruneAction(layer="fc1", local_indices=[3], neuron_ids=[3], reason="dead",
...                 policy="dead", evidence={"firing_rate": [0.0]})
>>> a.kind, a.model_dump(mode="json")["local_indices"]
('prune', [3])
"""

from __future__ import annotations

from collections import Counter
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, PositiveInt, model_validator

Evidence = dict[str, Any]


class _Action(BaseModel):
    # NaN/inf would poison weights in surgery and cannot be written as strict JSON.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    layer: str = Field(min_length=1, description="tracked layer name")
    reason: str = Field(min_length=1, description="why (dead, constant, low_activity, …)")
    policy: str = Field(default="manual", description="policy that proposed the action")
    evidence: Evidence = Field(default_factory=dict, description="statistics that triggered it")


def _no_duplicates(owner: str, **lists: list[int]) -> None:
    for field, values in lists.items():
        if len(set(values)) == len(values):
            continue
        dup = sorted(i for i, n in Counter(values).items() if n > 1)  # linear, not list.count
        if dup:
            raise ValueError(f"{owner}: {field} lists units {dup} more than once")


def _same_length(owner: str, **lists: list) -> None:
    sizes = {k: len(v) for k, v in lists.items() if v is not None}
    if len(set(sizes.values())) > 1:
        raise ValueError(f"{owner}: lengths differ: {sizes}")


class PruneAction(_Action):
    """Remove units. ``constant_values`` (one per unit) are folded into the consumer's bias by
    surgery, which makes removing a constant unit exact (a dead ReLU unit has value 0)."""

    kind: Literal["prune"] = "prune"
    local_indices: list[NonNegativeInt] = Field(min_length=1)
    neuron_ids: list[int]
    constant_values: list[float] | None = None

    @model_validator(mode="after")
    def _lengths(self) -> PruneAction:
        _same_length(
            "prune", local_indices=self.local_indices, neuron_ids=self.neuron_ids,
            constant_values=self.constant_values,
        )  # fmt: skip
        _no_duplicates("prune", local_indices=self.local_indices)
        return self


class MergeAction(_Action):
    """Fold unit ``remove`` into unit ``keep``: ``a_remove ≈ alpha·a_keep + beta``, so every
    consumer gets ``V[:, keep] += alpha·V[:, remove]`` and ``c += beta·V[:, remove]``."""

    kind: Literal["merge"] = "merge"
    keep: NonNegativeInt
    remove: NonNegativeInt
    keep_id: int
    remove_id: int
    alpha: float
    beta: float
    correlation: float = Field(ge=-1.0, le=1.0)
    expected_cost: float | None = Field(default=None, ge=0.0)

    @model_validator(mode="after")
    def _distinct(self) -> MergeAction:
        if self.keep == self.remove:
            raise ValueError(f"merge: keep and remove are the same unit ({self.keep})")
        return self


class FoldAction(_Action):
    """Multi-unit compensated removal: remove the units ``remove`` (R) and fold them onto
    ``keep`` (K) with least-squares coefficients ``coefficients[r][k]`` (|R|×|K|):
    ``V_K += V_R·coef``, ``c += V_R·(μ_R − coef·μ_K)``."""

    kind: Literal["fold"] = "fold"
    keep: list[NonNegativeInt] = Field(min_length=1)
    remove: list[NonNegativeInt] = Field(min_length=1)
    keep_ids: list[int]
    remove_ids: list[int]
    coefficients: list[list[float]]
    mean_keep: list[float]
    mean_remove: list[float]
    ridge: float = Field(ge=0.0)
    expected_cost: float | None = Field(default=None, ge=0.0)

    @model_validator(mode="after")
    def _shapes(self) -> FoldAction:
        _same_length("fold keep", keep=self.keep, keep_ids=self.keep_ids, mean_keep=self.mean_keep)
        _same_length(
            "fold remove", remove=self.remove, remove_ids=self.remove_ids,
            mean_remove=self.mean_remove, coefficients=self.coefficients,
        )  # fmt: skip
        _no_duplicates("fold", keep=self.keep, remove=self.remove)
        bad = [i for i, row in enumerate(self.coefficients) if len(row) != len(self.keep)]
        if bad:
            raise ValueError(f"fold: coefficient rows {bad} do not have {len(self.keep)} entries")
        overlap = sorted(set(self.keep) & set(self.remove))
        if overlap:
            raise ValueError(f"fold: units {overlap} are both kept and removed")
        return self


InitMethod = Literal["net2net", "zero_outgoing", "gradmax", "random"]


class ExpandAction(_Action):
    """Add ``count`` units. ``net2net`` copies ``source_indices`` (one per new unit) and splits
    their outgoing weights; ``zero_outgoing`` and ``gradmax`` leave the function unchanged at
    first; ``random`` initialises like the layer's own init."""

    kind: Literal["expand"] = "expand"
    count: PositiveInt
    init: InitMethod = "net2net"
    source_indices: list[NonNegativeInt] | None = None
    source_ids: list[int] | None = None
    noise: float = Field(default=0.0, ge=0.0)

    @model_validator(mode="after")
    def _sources(self) -> ExpandAction:
        _same_length("expand sources", source_indices=self.source_indices,
                     source_ids=self.source_ids)  # fmt: skip
        if self.init == "net2net":
            if not self.source_indices:
                raise ValueError("expand with init 'net2net' needs source_indices")
            if len(self.source_indices) != self.count:
                raise ValueError(
                    f"expand: {len(self.source_indices)} source units for {self.count} new units"
                )
        return self


MergeLike = Annotated[MergeAction | FoldAction, Field(discriminator="kind")]
Action = PruneAction | MergeAction | FoldAction | ExpandAction
