"""Plans with very many indices: duplicates are found and reported exactly (the check is linear:
``collections.Counter``, not ``list.count`` per element)."""

from __future__ import annotations

import pytest

from engine.errors import PlanError
from engine.layout import LayerLayout, ModelLayout
from engine.plan import FoldAction, Plan, PruneAction, validate_plan
from engine.plan.validate import validation_problems

N = 200_000


def _layout(width: int) -> ModelLayout:
    return ModelLayout({
        "fc": LayerLayout("fc", "Linear", width, list(range(width))),
        "out": LayerLayout("out", "Linear", 2, [width, width + 1], is_output=True),
    })  # fmt: skip


def test_large_prune_round_trips_and_validates():
    layout = _layout(N + 5)
    plan = Plan.create([PruneAction(layer="fc", local_indices=list(range(N)),
                                    neuron_ids=list(range(N)), reason="dead")], layout)  # fmt: skip
    loaded = Plan.loads(plan.dumps(indent=None))
    assert loaded == plan and len(loaded.prune[0].local_indices) == N
    validate_plan(loaded, layout)


def test_duplicates_in_a_large_prune_are_all_named():
    indices = list(range(N))
    dups = [7, 1234, N - 1]
    indices += [*dups, 1234]  # 1234 three times
    layout = _layout(N + 5)
    data = Plan.create([], layout).to_json()
    data["prune"] = [{"layer": "fc", "local_indices": indices, "neuron_ids": indices,
                      "reason": "dead"}]  # fmt: skip
    with pytest.raises(PlanError, match=r"local_indices lists units \[7, 1234, 199999\] more"):
        Plan.loads(data)


def test_duplicates_in_a_large_fold_are_named():
    remove = [*range(N), 5, 5, 99]
    with pytest.raises(ValueError, match=r"fold: remove lists units \[5, 99\] more than once"):
        FoldAction(layer="fc", keep=[N + 1], remove=remove, keep_ids=[N + 1], remove_ids=remove,
                   coefficients=[[1.0]] * len(remove), mean_keep=[0], mean_remove=[0] * len(remove),
                   ridge=0, reason="redundant")  # fmt: skip


def test_validation_names_units_repeated_in_one_action():
    # the layout-level check (validate.py) reports repeated units of one action, also when the
    # action itself cannot see them (built without validation, as a foreign converter might)
    layout = _layout(N + 5)
    plan = Plan.create([PruneAction(layer="fc", local_indices=list(range(N)),
                                    neuron_ids=list(range(N)), reason="dead")], layout)  # fmt: skip
    action = plan.prune[0].model_construct(
        **{**dict(plan.prune[0]), "local_indices": [*range(N), 3, 3, 42]}
    )
    object.__setattr__(plan, "prune", [action])
    problems = validation_problems(plan, layout)
    assert "prune[0] (layer 'fc'): units [3, 42] appear more than once" in problems
