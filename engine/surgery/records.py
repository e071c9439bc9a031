"""What an applied plan did: one record per action, one per plan, as plain JSON-able data.

Surgery returns a :class:`SurgeryRecord`; each of its :class:`ActionRecord` entries says which
layer changed, which neuron IDs were removed, merged or added, the shapes and parameter counts
before and after, and the measured max output change on the probe batch after that action (in
train mode, and in eval mode where the model holds running statistics). Listeners attached to a
:class:`~engine.NeuronEngine` (weight trackers, change logs) get both hooks of
:class:`SurgeryListener` around every applied plan.

>>> rec = ActionRecord(index=0, label="prune[0]", kind="prune", layer="fc1", reason="dead",
...                    removed_ids=[3], width_before=8, width_after=7,
...                    params_before=100, params_after=90,
...                    shapes_before={"fc1.weight": [8, 4]}, shapes_after={"fc1.weight": [7, 4]},
...                    max_output_change=0.0, exact_expected=True)
>>> rec.params_delta, rec.model_dump(mode="json")["removed_ids"]
(-10, [3])
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field


class ActionRecord(BaseModel):
    """One applied action (indices are the plan's; IDs are global neuron IDs)."""

    model_config = ConfigDict(extra="forbid")

    index: int = Field(description="position of the action in the plan's application order")
    label: str = Field(description="the action's name in errors and logs, e.g. 'merge[2]'")
    kind: str = Field(description="prune, merge, fold or expand")
    layer: str
    reason: str = ""
    policy: str = "manual"
    removed_ids: list[int] = Field(default_factory=list)
    merged_into: dict[int, list[int]] = Field(
        default_factory=dict, description="surviving ID → IDs folded into it"
    )
    added_ids: list[int] = Field(default_factory=list)
    parents: list[int | None] = Field(
        default_factory=list, description="per added ID, the unit it was grown from"
    )
    width_before: int
    width_after: int
    params_before: int = Field(description="trainable + frozen parameters of the whole model")
    params_after: int
    shapes_before: dict[str, list[int]] = Field(
        default_factory=dict, description="every parameter/buffer the action changed"
    )
    shapes_after: dict[str, list[int]] = Field(default_factory=dict)
    max_output_change: float | None = Field(
        default=None, description="max |Δoutput| on the probe batch after this action (train mode)"
    )
    max_output_change_eval: float | None = Field(
        default=None, description="the same in eval mode, where running statistics matter"
    )
    exact_expected: bool = Field(
        default=False, description="whether the action preserves the function up to float error"
    )
    note: str = ""

    @property
    def params_delta(self) -> int:
        return self.params_after - self.params_before


class SurgeryRecord(BaseModel):
    """One applied plan."""

    model_config = ConfigDict(extra="forbid")

    fingerprint_before: str
    fingerprint_after: str
    step: int | None = None
    epoch: int | None = None
    time: float = Field(description="UNIX time when the plan was applied")
    params_before: int
    params_after: int
    widths_before: dict[str, int]
    widths_after: dict[str, int]
    actions: list[ActionRecord]
    max_output_change: float | None = Field(
        default=None, description="max |Δoutput| of the whole plan on the probe batch (train)"
    )
    max_output_change_eval: float | None = None
    seconds: float = Field(default=0.0, description="wall time, graph build included")
    graph_builds: int = Field(default=0, description="dependency graphs built for this plan")
    dry_run: bool = False
    metadata: dict[str, Any] = Field(default_factory=dict)
    neurons_after: dict[str, Any] | None = Field(
        default=None,
        exclude=True,
        description="state of the neuron registry after the plan (NeuronRegistry.state_dict), "
        "for its owner to load; not written to logs",
    )


@runtime_checkable
class SurgeryListener(Protocol):
    """Something told about every plan a :class:`~engine.NeuronEngine` applies.

    ``before_surgery`` runs after validation, before anything is modified; ``after_surgery``
    runs after the plan was committed. Neither runs for a rejected or rolled-back plan.
    """

    def before_surgery(self, model: Any, plan: Any, *, step: int | None, epoch: int | None) -> None:
        """Called with the unmodified model and the plan about to be applied."""

    def after_surgery(self, model: Any, record: SurgeryRecord) -> None:
        """Called with the modified model and what was done."""


class TrialRecord(BaseModel):
    """One trial surgery: the plan applied, held-out loss measured (after ``recovery`` steps
    when given) and the transaction kept or rolled back bitwise."""

    model_config = ConfigDict(extra="forbid")

    accepted: bool
    loss_before: float | None = Field(description="held-out loss of the unmodified model")
    loss_after: float | None = Field(description="held-out loss after surgery (and recovery)")
    allowed_increase: float = Field(description="the loss increase the tolerances allowed")
    standard_error: float | None = Field(
        default=None, description="of the mean paired change (per-sample judges only)"
    )
    baseline: str = Field(description="'before': loss before surgery; 'recovered': the "
                          "unmodified model after the same recovery steps")  # fmt: skip
    recovered: bool = Field(description="whether recovery steps ran before the evaluation")
    reason: str = Field(description="why the trial was kept or rolled back")
    record: SurgeryRecord = Field(description="what the plan did (undone when not accepted)")
    seconds: float = 0.0

    @property
    def loss_change(self) -> float | None:
        if self.loss_before is None or self.loss_after is None:
            return None
        return self.loss_after - self.loss_before
