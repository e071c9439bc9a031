"""Trial surgery: apply a plan, judge it on held-out data, keep it or roll it back bitwise.

1. Measure the held-out loss of the unmodified model (``baseline="before"``), or of the
   unmodified model after the same recovery steps (``baseline="recovered"``: a fair judge when
   recovery trains; the model is then put back exactly).
2. Capture a ``TrainingState`` (values, gradients, optimizer state, statistics, RNG), then
   apply the plan as one transaction (``apply_plan``'s checks, probe and rollback hold).
3. Run ``recover(model, optimizer)`` (e.g. K training steps) when given, then measure the
   held-out loss again.
4. Keep the plan when the loss rose by at most ``max(abs_tolerance, tolerance·|loss_before|)``
   (a negative ``tolerance``: when it *fell* by at least ``−tolerance·|loss_before|``, the test
   for growth that must pay for its units) and is finite; otherwise undo the transaction and
   restore the captured state: the model, its optimizer, the statistics and the RNG are
   bitwise as before the trial, so a refused trial leaves the run as if it had never been
   tried.

No peer can do this: it needs an exact rollback after a commit.

>>> import torch, torch.nn as nn
>>> from engine.plan import Plan, PruneAction
>>> torch.manual_seed(0)
<torch._C.Generator object at ...>
>>> model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 1))
>>> x = torch.randn(64, 4); y = model(x).detach()
>>> plan = Plan.create([PruneAction(layer="0", local_indices=[0, 1, 2], neuron_ids=[0, 1, 2],
...                                 reason="try")], [("0", 6), ("2", 1)])
>>> trial = run_trial(model, plan, None, x[:8], evaluate=held_out_loss((x, y), nn.MSELoss()))
>>> trial.accepted, model[0].out_features  # removing half the units hurt: rolled back
(False, 6)
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch
from torch import nn

from engine.errors import ConfigurationError, TrialError
from engine.neurons import NeuronRegistry
from engine.plan import Plan
from engine.stats.accumulator import NeuronAccumulator
from engine.surgery.heldout import Evaluate, held_out_loss
from engine.surgery.records import TrialRecord
from engine.surgery.training_state import TrainingState
from engine.surgery.transaction import ProbeInputs, SurgeryOptions, Transaction

__all__ = ["Recover", "held_out_loss", "run_trial"]

Recover = Callable[[nn.Module, "torch.optim.Optimizer | None"], Any]


def _measure_samples(
    evaluate: Evaluate, model: nn.Module, quiet: Callable[[], Any], what: str
) -> tuple[float, torch.Tensor | None]:
    """The held-out loss, and the per-sample losses when ``evaluate`` returns a vector."""
    with quiet():
        value = evaluate(model)
    if isinstance(value, torch.Tensor) and value.dim() == 1 and value.numel() > 0:
        samples = value.detach().double().cpu()
        return float(samples.mean()), samples
    try:
        return float(value), None
    except (TypeError, ValueError):
        raise ConfigurationError(
            f"evaluate must return a number (the held-out loss) or a vector of per-sample "
            f"losses; {what} it returned {type(value).__name__}"
        ) from None


def _paired_error(before: torch.Tensor | None, after: torch.Tensor | None) -> float | None:
    """Standard error of the mean paired change ``after − before`` (None without samples)."""
    if before is None or after is None or before.shape != after.shape or before.numel() < 2:
        return None
    diff = after - before
    return float(diff.std(unbiased=True) / math.sqrt(diff.numel()))


def run_trial(
    model: nn.Module,
    plan: Plan,
    optimizer: torch.optim.Optimizer | None = None,
    example_inputs: Any = None,
    *,
    evaluate: Evaluate,
    recover: Recover | None = None,
    tolerance: float = 0.0,
    abs_tolerance: float = 1e-6,
    baseline: str = "before",
    reference_loss: float | None = None,
    significance: float | None = None,
    registry: NeuronRegistry | None = None,
    accumulators: Mapping[str, NeuronAccumulator] | None = None,
    quiet: Callable[[], AbstractContextManager[Any]] = nullcontext,
    **surgery_options: Any,
) -> TrialRecord:
    """Apply ``plan`` as a trial (see the module docstring); returns the ``TrialRecord``.

    Args:
        evaluate: ``evaluate(model) -> float``, the held-out loss (``held_out_loss(data,
            loss_fn)`` builds one from a validation batch or loader).
        recover: ``recover(model, optimizer)``, run after surgery and before the evaluation
            (e.g. K training steps); the unmodified model runs it too with
            ``baseline="recovered"``.
        tolerance, abs_tolerance: the loss may rise by ``max(abs_tolerance,
            tolerance·|loss_before|)``; with ``tolerance < 0`` it must fall by at least
            ``−tolerance·|loss_before|`` (``abs_tolerance`` is then not used).
        significance: with a negative ``tolerance`` (a plan that must lower the loss), it is
            kept only if the mean paired improvement also exceeds ``significance`` standard
            errors (``evaluate`` must return per-sample losses: ``held_out_loss(...,
            per_sample=True)``; not with ``reference_loss``). Guards growth against the noise
            of two short trajectories when the loss is small.
        reference_loss: the baseline, already measured (it is not measured again): e.g.
            ``loss_before`` of a refused trial from this same state, whose rollback restored
            everything, so the baseline's recovery steps are not paid twice.
        registry, accumulators: as for ``apply_plan``; on acceptance
            ``trial.record.neurons_after`` is the registry's new state.
        quiet: a context manager factory the surgery, the recovery steps and the evaluations
            run under (the engine passes its ``paused``, so neither held-out batches nor trial
            steps reach its statistics or its growth signal).
        surgery_options: ``apply_plan``'s keyword options (``tolerance`` is named
            ``output_tolerance`` here).
    """
    if baseline not in ("before", "recovered"):
        raise ConfigurationError(f"baseline must be 'before' or 'recovered', got {baseline!r}")
    if baseline == "recovered" and recover is None:
        raise ConfigurationError("baseline='recovered' needs a recover function")
    if not (-1 < tolerance < math.inf and 0 <= abs_tolerance < math.inf):
        raise ConfigurationError(
            f"tolerance must be > -1 and abs_tolerance ≥ 0, got tolerance={tolerance}, "
            f"abs_tolerance={abs_tolerance}"
        )
    if example_inputs is None:
        raise ConfigurationError("a trial needs a probe batch: pass example_inputs=…")
    if significance is not None and (not math.isfinite(significance) or significance < 0):
        raise ConfigurationError(f"significance must be a finite number ≥ 0, got {significance}")
    if significance is not None and reference_loss is not None:
        raise ConfigurationError("significance pairs per-sample losses: not with reference_loss")
    started = time.perf_counter()
    accumulators = dict(accumulators or {})
    if "output_tolerance" in surgery_options:
        surgery_options["tolerance"] = surgery_options.pop("output_tolerance")
    options = SurgeryOptions(**surgery_options)
    if reference_loss is not None:
        if not math.isfinite(reference_loss):
            raise ConfigurationError(f"reference_loss must be finite, got {reference_loss}")
        loss_before, samples_before = float(reference_loss), None
    elif baseline == "recovered":
        state = TrainingState.capture(model, optimizer, accumulators)
        try:
            with quiet():  # trial steps are not the run's: its statistics never see them
                recover(model, optimizer)
            loss_before, samples_before = _measure_samples(
                evaluate, model, quiet, "on the unmodified model"
            )
        finally:
            state.restore()
    else:
        loss_before, samples_before = _measure_samples(
            evaluate, model, quiet, "on the unmodified model"
        )

    if significance is not None and samples_before is None:
        raise ConfigurationError(
            "significance needs per-sample losses: evaluate=held_out_loss(..., per_sample=True)"
        )
    state = TrainingState.capture(model, optimizer, accumulators)
    transaction = Transaction(
        model, plan, optimizer, ProbeInputs.of(example_inputs), options, registry, accumulators
    )
    with quiet():
        record = transaction.run()  # a failure here rolls itself back
    try:
        if recover is not None:
            with quiet():
                recover(model, optimizer)
        loss_after, samples_after = _measure_samples(evaluate, model, quiet, "after surgery")
    except BaseException as exc:  # an interrupt mid-recovery rolls back too, then goes on up
        transaction.rollback()
        state.restore()
        if not isinstance(exc, Exception):
            raise
        raise TrialError(f"trial: {type(exc).__name__}: {exc} (the plan was rolled back)") from exc
    allowed, error = 0.0, None
    if math.isfinite(loss_before):
        relative = tolerance * abs(loss_before)
        allowed = relative if tolerance < 0 else max(abs_tolerance, relative)
    if not math.isfinite(loss_after):
        accepted, reason = False, f"held-out loss after surgery is {loss_after}"
    elif not math.isfinite(loss_before):
        accepted, reason = True, f"held-out loss before surgery was {loss_before}"
    else:
        accepted = loss_after <= loss_before + allowed
        verb = "within" if accepted else "above"
        reason = (
            f"held-out loss {loss_before:.6g} → {loss_after:.6g} "
            f"({loss_after - loss_before:+.3g}, {verb} the allowed {allowed:+.3g})"
        )
        error = _paired_error(samples_before, samples_after)
        if accepted and significance is not None and tolerance < 0:
            if error is None:  # evaluate stopped returning per-sample losses: refuse
                accepted, reason = False, reason + ", but no per-sample losses to test it"
            elif loss_after - loss_before + significance * error > 0:
                accepted = False
                reason += f", but not significant ({significance:g} × SE {error:.3g})"
    if not accepted:
        transaction.rollback()
        state.restore()
        record = record.model_copy(update={"neurons_after": None})
    outcome = {"accepted": accepted, "loss_before": loss_before, "loss_after": loss_after}
    record.metadata["trial"] = outcome
    return TrialRecord(
        accepted=accepted,
        loss_before=loss_before if math.isfinite(loss_before) else None,
        loss_after=loss_after if math.isfinite(loss_after) else None,
        allowed_increase=allowed, standard_error=error, baseline=baseline,
        recovered=recover is not None,
        reason=reason, record=record, seconds=time.perf_counter() - started,
    )  # fmt: skip
