"""Lightning checkpoints that carry the architecture, and loading them back safely.

The callback writes the record of ``engine.integrations.architecture`` (applied plans,
neuron IDs, a small probe batch: JSON text and tensors) under ``checkpoint["neuron_engine"]``.
Lightning restores a fit in this order (``_CheckpointConnector._restore_modules_and_callbacks``
in Lightning 2.6): the *module's* ``on_load_checkpoint``, then ``load_state_dict`` on the
module, then the callbacks' ``on_load_checkpoint`` / ``load_state_dict``, then (in
``restore_training_state``, after ``configure_optimizers``) the optimizer and LR-scheduler
states. A callback's own hook comes too late to resize the module, so the callback installs
:func:`resize_before_load` in front of the module's ``on_load_checkpoint`` (in ``setup``;
removed in ``teardown``): the fresh module is resized by replaying the plans before
Lightning loads the weights, and the optimizer Lightning then builds has the new shapes.

**Loading is ``weights_only=True``.** :func:`load_checkpoint` reads the file with
``torch.load(weights_only=True)`` only; a file holding pickled objects is refused. Lightning's
own ``trainer.fit(ckpt_path=...)`` passes ``weights_only=None`` to ``torch.load`` for a local
path (Lightning 2.6, ``lightning.fabric.utilities.cloud_io._load``), so PyTorch's default
applies: ``True`` since PyTorch 2.6 (remote ``http`` paths default to ``False`` in
Lightning). Pass ``trainer.fit(..., weights_only=True)`` to make it explicit.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import torch
from torch import nn

from engine.errors import ConfigurationError
from engine.integrations.architecture import restore_architecture

__all__ = ["CHECKPOINT_KEY", "load_checkpoint", "read_checkpoint", "resize_before_load"]

CHECKPOINT_KEY = "neuron_engine"
_ORIGINAL = "_neuron_engine_on_load_checkpoint"


def read_checkpoint(path: str | os.PathLike[str], map_location: Any = "cpu") -> dict[str, Any]:
    """A Lightning checkpoint file as a dict, read with ``torch.load(weights_only=True)``."""
    path = Path(path)
    if not path.is_file():
        raise ConfigurationError(f"{path}: no such checkpoint file")
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).splitlines()[0] if str(exc) else "pickled objects"
        raise ConfigurationError(
            f"{path}: refused: the checkpoint holds pickled Python objects, which are never "
            f"loaded (weights_only=True said: {first})"
        ) from None
    if not isinstance(data, dict) or "state_dict" not in data:
        raise ConfigurationError(f"{path}: not a Lightning checkpoint (no 'state_dict' inside)")
    return data


def resize_before_load(module: nn.Module, checkpoint: dict[str, Any]) -> None:
    """Resize ``module`` to the architecture ``checkpoint`` records (nothing without one)."""
    record = checkpoint.get(CHECKPOINT_KEY)
    if record is not None:
        restore_architecture(module, record)


def install_resize_hook(module: nn.Module) -> None:
    """Put :func:`resize_before_load` in front of ``module.on_load_checkpoint`` (once)."""
    if _ORIGINAL in module.__dict__:
        return
    original = module.on_load_checkpoint

    def on_load_checkpoint(checkpoint: dict[str, Any]) -> None:
        resize_before_load(module, checkpoint)
        original(checkpoint)

    module.__dict__[_ORIGINAL] = original
    module.__dict__["on_load_checkpoint"] = on_load_checkpoint


def remove_resize_hook(module: nn.Module) -> None:
    if module.__dict__.pop(_ORIGINAL, None) is not None:
        module.__dict__.pop("on_load_checkpoint", None)


def load_checkpoint(
    module_class: type[nn.Module],
    path: str | os.PathLike[str],
    *args: Any,
    map_location: Any = "cpu",
    example_inputs: Any = None,
    strict: bool = True,
    **kwargs: Any,
) -> nn.Module:
    """A fresh ``module_class`` with the checkpoint's shapes and weights, in eval mode.

    The module is built by your class: with ``*args, **kwargs`` when given, else with the
    checkpoint's ``hyper_parameters`` (``save_hyperparameters()``), else without arguments;
    then resized by replaying the recorded plans (``example_inputs`` overrides the recorded
    probe) and loaded with ``load_state_dict(strict=strict)``. The file is read with
    ``torch.load(weights_only=True)``.
    """
    data = read_checkpoint(path, map_location=map_location)
    if not args and not kwargs:
        hparams = data.get("hyper_parameters") or {}
        kwargs = dict(hparams) if isinstance(hparams, dict) else {}
    module = module_class(*args, **kwargs)
    record = data.get(CHECKPOINT_KEY)
    if record is not None:
        restore_architecture(module, record, example_inputs)
    try:
        module.load_state_dict(data["state_dict"], strict=strict)
    except RuntimeError as exc:
        first = " ".join(str(exc).split())[:300]
        raise ConfigurationError(
            f"{path}: the weights do not fit {module_class.__name__} (resized to the recorded "
            f"architecture): {first}"
        ) from None
    return module.eval()
