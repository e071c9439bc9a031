"""Carrying out a plan on a live model and its optimizer (see ``engine.surgery.optimizer``)."""

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

__all__ = [
    "DimRemap",
    "OptimizerRemapError",
    "OptimizerSnapshot",
    "ParamChange",
    "optimizer_snapshot",
    "remap_optimizer",
    "remap_tensor",
    "restore_optimizer",
]
