"""Carrying out a plan on a live model, its optimizer and its engine, as a transaction.

``apply_plan(model, plan, optimizer, example_inputs)`` (or ``engine.apply(plan, optimizer)``)
validates, resolves coupled groups with Torch-Pruning's dependency graph, applies every
action on new tensors, measures the probe's output change, remaps the optimizer and the
statistics, and rolls everything back on any error. See ``engine.surgery.transaction``.
Surgery takes data and never imports the engine that calls it.
"""

from engine.surgery.batchnorm import recalibrate_batchnorm
from engine.surgery.gradmax import gradmax_gradient
from engine.surgery.heldout import held_out_loss, recovery_steps
from engine.surgery.optimizer import (
    DimRemap,
    OptimizerRemapError,
    OptimizerSnapshot,
    ParamChange,
    optimizer_snapshot,
    remap_optimizer,
    remap_tensor,
    restore_optimizer,
)
from engine.surgery.records import ActionRecord, SurgeryListener, SurgeryRecord, TrialRecord
from engine.surgery.resizers import AxisSpec, Resizer, register_resizer
from engine.surgery.training_state import TrainingState
from engine.surgery.transaction import ProbeInputs, SurgeryOptions, Transaction, apply_plan
from engine.surgery.trial import run_trial

__all__ = [
    "ActionRecord",
    "AxisSpec",
    "DimRemap",
    "OptimizerRemapError",
    "OptimizerSnapshot",
    "ParamChange",
    "ProbeInputs",
    "Resizer",
    "SurgeryListener",
    "SurgeryOptions",
    "SurgeryRecord",
    "TrainingState",
    "Transaction",
    "TrialRecord",
    "apply_plan",
    "gradmax_gradient",
    "held_out_loss",
    "optimizer_snapshot",
    "recalibrate_batchnorm",
    "recovery_steps",
    "register_resizer",
    "remap_optimizer",
    "remap_tensor",
    "restore_optimizer",
    "run_trial",
]
