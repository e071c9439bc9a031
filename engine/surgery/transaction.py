"""Apply a plan to a live model (and optimizer, and engine) as one transaction.

1. **Validate** the whole plan against the model's layout (``engine.plan.validate_plan``:
   names, ranges, duplicates, conflicts, emptied layers, output layers, unsupported kinds,
   fingerprint) and against the modules themselves (attention-head and group divisibility,
   growth through a concat, GradMax inputs). Nothing is touched before this passes.
2. **Resolve** each layer's coupled group on one Torch-Pruning dependency graph.
3. **Apply** the actions in plan order (prune, merge/fold, expand), each on new tensors, and
   measure the probe batch's max output change after each.
4. **Commit**: re-point the optimizer with one composed change per parameter, then slice and
   extend the engine's statistics and neuron IDs.

Any error on the way restores every module's parameters, buffers and attributes, the
optimizer and the engine exactly, and raises a :class:`~engine.errors.SurgeryError` naming the
action (or a :class:`~engine.errors.PlanValidationError` listing every problem).

>>> import torch, torch.nn as nn
>>> from engine.plan import Plan, PruneAction
>>> model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 2))
>>> plan = Plan.create([PruneAction(layer="0", local_indices=[1, 4], neuron_ids=[1, 4],
...                                 reason="dead")], [("0", 6), ("2", 2)])
>>> record = apply_plan(model, plan, example_inputs=torch.randn(8, 4))
>>> model[0].weight.shape, model[2].weight.shape, record.params_after
(torch.Size([4, 4]), torch.Size([2, 4]), 30)
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from contextlib import nullcontext
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from engine.errors import ConfigurationError, PlanValidationError, SurgeryError
from engine.layers import layer_kind_for
from engine.layout.build import build_layout_and_graph
from engine.plan import Plan, validate_plan
from engine.plan.actions import ExpandAction, FoldAction, MergeAction, PruneAction
from engine.surgery.checks import module_problems
from engine.surgery.gradmax import gradmax_outgoing
from engine.surgery.groups import GroupMember, unit_group
from engine.surgery.operations import expand_units, fold_units, remove_units
from engine.surgery.optimizer import optimizer_snapshot, remap_optimizer, restore_optimizer
from engine.surgery.probe import Probe
from engine.surgery.records import ActionRecord, SurgeryRecord
from engine.surgery.units import UnitBook
from engine.surgery.workspace import Workspace

if TYPE_CHECKING:  # pragma: no cover
    from engine.core import NeuronEngine

__all__ = ["apply_plan"]


def _split_inputs(example_inputs: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
    if isinstance(example_inputs, Mapping):
        return (), dict(example_inputs)
    if isinstance(example_inputs, tuple):
        return example_inputs, {}
    if isinstance(example_inputs, list):
        return tuple(example_inputs), {}
    return (example_inputs,), {}


def _labelled(plan: Plan) -> list[tuple[str, Any]]:
    out = []
    for section in ("prune", "merge", "expand"):
        out += [(f"{section}[{i}]", a) for i, a in enumerate(getattr(plan, section))]
    return out


def _plan_ids(plan: Plan) -> dict[str, list[int]]:
    """Without an engine: IDs numbered in layout order, overridden by the plan's own IDs."""
    ids, start = {}, 0
    for name, units in plan.layout:
        ids[name] = list(range(start, start + units))
        start += units
    for action in plan.actions():
        layer = ids.get(action.layer)
        if layer is None:
            continue
        pairs = []
        if isinstance(action, PruneAction):
            pairs = list(zip(action.local_indices, action.neuron_ids))
        elif isinstance(action, MergeAction):
            pairs = [(action.keep, action.keep_id), (action.remove, action.remove_id)]
        elif isinstance(action, FoldAction):
            pairs = list(zip(action.keep + action.remove, action.keep_ids + action.remove_ids))
        elif action.source_indices and action.source_ids:
            pairs = list(zip(action.source_indices, action.source_ids))
        for i, nid in pairs:
            if 0 <= i < len(layer):
                layer[i] = int(nid)
    return ids


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _shapes(ws: Workspace, members: list[GroupMember]) -> dict[str, list[int]]:
    out = {}
    for m in members:
        for name, t in list(m.module.named_parameters()) + list(m.module.named_buffers()):
            if t.dim():
                out[f"{m.name}.{name}" if m.name else name] = list(t.shape)
    return out


def apply_plan(
    model: nn.Module,
    plan: Plan,
    optimizer: torch.optim.Optimizer | None = None,
    example_inputs: Any = None,
    *,
    engine: NeuronEngine | None = None,
    gradients: Mapping[str, torch.Tensor] | None = None,
    gradmax_epsilon: float = 1e-4,
    allow_output_changes: bool = False,
    tolerance: float | None = None,
    measure: str = "action",
    step: int | None = None,
    epoch: int | None = None,
    on_validated: Callable[[], None] | None = None,
) -> SurgeryRecord:
    """Carry out ``plan`` on ``model`` (see the module docstring); returns what was done.

    Args:
        optimizer: re-pointed and remapped in place (same object keeps training).
        example_inputs: the probe batch (a tensor, a tuple of positional arguments or a dict
            of keyword arguments); with an engine, its captured samples by default.
        engine: the ``NeuronEngine`` watching ``model`` (``engine.apply`` passes itself):
            its statistics, neuron IDs and lineage follow the surgery.
        gradients: for ``gradmax`` growth, per layer, the consumer's gradient matrix
            ``Σ δ·xᵀ`` (``engine.surgery.gradmax_gradient`` computes it).
        tolerance: refuse (and roll back) when an action marked exact changes the probe's
            outputs by more than this.
        measure: ``"action"`` (probe after each action), ``"plan"`` (once) or ``"none"``.
        on_validated: called once the plan passed every check, before anything changes.
    """
    if measure not in ("action", "plan", "none"):
        raise ConfigurationError(f"measure must be 'action', 'plan' or 'none', got {measure!r}")
    started = time.perf_counter()
    if engine is not None:
        from engine.proposal import hooks_paused

        if example_inputs is None and engine.example_inputs is not None:
            example_inputs = (*engine.example_inputs, engine.example_kwargs)
        pause = hooks_paused(engine)
        ids = {name: engine.neurons.ids(name) for name in engine.layers}
    else:
        pause = nullcontext()
        ids = _plan_ids(plan)
    if example_inputs is None:
        raise ConfigurationError(
            "surgery needs a probe batch: pass example_inputs=…, or run one tracked forward "
            "before engine.apply"
        )
    if (
        engine is not None
        and isinstance(example_inputs, tuple)
        and example_inputs
        and (isinstance(example_inputs[-1], dict))
    ):
        args, kwargs = tuple(example_inputs[:-1]), dict(example_inputs[-1])
    else:
        args, kwargs = _split_inputs(example_inputs)
    with pause:
        return _transaction(
            model, plan, optimizer, args, kwargs, ids, engine, gradients or {},
            gradmax_epsilon, allow_output_changes, tolerance, measure, step, epoch, started,
            on_validated,
        )  # fmt: skip


def _transaction(
    model, plan, optimizer, args, kwargs, ids, engine, gradients, epsilon,
    allow_output_changes, tolerance, measure, step, epoch, started, on_validated,
) -> SurgeryRecord:  # fmt: skip
    named = dict(model.named_modules())
    problems = [f"layer {n!r} is not a sub-module of the model" for n in ids if n not in named]
    for name, layer_ids in ids.items():
        kind = layer_kind_for(named[name]) if name in named else None
        width = None if kind is None else kind.units(named[name])
        if name in named and width != len(layer_ids):
            problems.append(
                f"plan was made for layer {name!r} with {len(layer_ids)} units; the model's "
                f"has {width} (a plan for another model, or one already applied?)"
            )
    if problems:
        raise PlanValidationError(problems)
    layout, graph = build_layout_and_graph(
        model, ids, (args, kwargs), forward_fn=lambda m, inp: m(*inp[0], **inp[1])
    )
    validate_plan(plan, layout, allow_output_changes=allow_output_changes)
    labelled = _labelled(plan)
    groups: dict[str, list[GroupMember]] = {}
    problems: list[str] = []
    for label, action in labelled:
        if action.layer not in groups:
            try:
                groups[action.layer] = unit_group(model, graph, action.layer)
            except SurgeryError as exc:
                problems.append(f"{label} (layer {action.layer!r}): {exc}")
                groups[action.layer] = []
    problems += module_problems(labelled, groups, gradients)
    if problems:
        raise PlanValidationError(problems)
    if on_validated is not None:
        on_validated()

    probe = Probe(model, args, kwargs) if measure != "none" else None
    book = UnitBook(layout, ids, engine.neurons if engine is not None else None)
    ws = Workspace(model)
    token = optimizer_snapshot(optimizer) if optimizer is not None else None
    params_before = _params(model)
    widths_before = {n: len(v) for n, v in ids.items()}
    records: list[ActionRecord] = []
    current = ""
    try:
        for index, (label, action) in enumerate(labelled):
            current = label
            members = groups[action.layer]
            before = _shapes(ws, members)
            p0, w0 = _params(model), book.width(action.layer)
            notes, exact = _apply_one(ws, members, action, book, gradients, epsilon)
            if any(isinstance(m.module, nn.LayerNorm) for m in members):
                exact = False  # the unit axis is normalised over: every removal or copy moves it
                notes.append("LayerNorm over the units: approximate, read the measured change")
            change = probe.max_change() if probe is not None and measure == "action" else {}
            if tolerance is not None and exact and (change.get("eval") or 0.0) > tolerance:
                raise SurgeryError(
                    f"changed the probe's outputs by {change['eval']:.3g} > tolerance {tolerance}"
                )
            records.append(
                ActionRecord(
                    index=index, label=label, kind=action.kind, layer=action.layer,
                    reason=action.reason, policy=action.policy,
                    width_before=w0, width_after=book.width(action.layer),
                    params_before=p0, params_after=_params(model),
                    shapes_before=before, shapes_after=_shapes(ws, members),
                    max_output_change=change.get("eval"),
                    max_output_change_eval=change.get("eval"),
                    exact_expected=exact, note="; ".join(notes),
                    **book.ids_of(index),
                )
            )  # fmt: skip
            if "batch" in change:
                records[-1].max_output_change = change["batch"]
        current = "commit"
        total = probe.max_change() if probe is not None else {}
        if optimizer is not None:
            remap_optimizer(optimizer, ws.param_changes())
        book.commit(engine, epoch)
    except Exception as exc:
        ws.rollback()
        if token is not None:
            restore_optimizer(optimizer, token)
        if isinstance(exc, SurgeryError | PlanValidationError):
            raise type(exc)(f"{current}: {exc}") from exc
        raise SurgeryError(f"{current}: {type(exc).__name__}: {exc}") from exc
    return SurgeryRecord(
        fingerprint_before=plan.fingerprint,
        fingerprint_after=book.fingerprint(),
        step=step, epoch=epoch, time=time.time(),
        params_before=params_before, params_after=_params(model),
        widths_before=widths_before, widths_after=book.widths(),
        actions=records,
        max_output_change=total.get("batch", total.get("eval")),
        max_output_change_eval=total.get("eval"),
        seconds=time.perf_counter() - started, graph_builds=1,
    )  # fmt: skip


def _apply_one(ws, members, action, book, gradients, epsilon) -> tuple[list[str], bool]:
    """One action; returns (notes, whether it is expected to preserve the function)."""
    if isinstance(action, PruneAction):
        values = action.constant_values
        offsets = torch.tensor(values, dtype=torch.float64) if values else None
        notes = fold_units(ws, members, [], list(action.local_indices), None, offsets)
        remove_units(ws, members, list(action.local_indices))
        book.remove(action.layer, list(action.local_indices))
        return notes, values is not None and not notes
    if isinstance(action, MergeAction):
        coef = torch.tensor([[action.alpha]], dtype=torch.float64)
        offsets = torch.tensor([action.beta], dtype=torch.float64)
        notes = fold_units(ws, members, [action.keep], [action.remove], coef, offsets)
        remove_units(ws, members, [action.remove])
        book.remove(action.layer, [action.remove], into=[action.keep])
        exact = abs(action.correlation) >= 1 - 1e-9 and not notes
        return notes, exact
    if isinstance(action, FoldAction):
        coef = torch.tensor(action.coefficients, dtype=torch.float64)
        mu_k = torch.tensor(action.mean_keep, dtype=torch.float64)
        mu_r = torch.tensor(action.mean_remove, dtype=torch.float64)
        notes = fold_units(ws, members, list(action.keep), list(action.remove), coef,
                           mu_r - coef @ mu_k)  # fmt: skip
        remove_units(ws, members, list(action.remove))
        targets = [action.keep[int(row.abs().argmax())] for row in coef]
        book.remove(action.layer, list(action.remove), into=targets)
        return notes, False
    if isinstance(action, ExpandAction):
        outgoing = None
        if action.init == "gradmax":
            outgoing = gradmax_outgoing(ws, members, gradients[action.layer], action.count)
        notes = expand_units(
            ws, members, action.count, action.init,
            list(action.source_indices or []) or None, action.noise, outgoing,
            epsilon if action.init == "gradmax" else 0.0,
        )  # fmt: skip
        book.grow(action.layer, action.count, action.source_indices if action.init == "net2net"
                  else None)  # fmt: skip
        return notes, action.init in ("net2net", "zero_outgoing") and not action.noise
    raise SurgeryError(f"unknown action {action!r}")  # pragma: no cover
