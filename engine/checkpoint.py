"""Apply a saved plan to a checkpoint, and rebuild a modified model without pickle.

Input checkpoints load safely: safetensors files, or PyTorch files through
``torch.load(weights_only=True)`` (a state dict, or a dict holding one under ``state_dict`` /
``model``); a file holding pickled objects is refused. The input is never modified.

The output is one safetensors file (written atomically) with the modified weights and, in its
header, the **model spec** (the factory's *name* and JSON keyword arguments), the probe
input's shape and dtype, every **applied plan** in order, and the model's current **neuron
IDs** per layer (bounded by its width). :func:`load` builds the model with the factory the user
provides for that name, replays the plans' structure (shapes only) and loads the weights.

**A plan applies once, to the state it was made for.** :func:`apply_to_checkpoint` refuses
(:class:`~engine.errors.StalePlanError`, nothing written) a plan equal to one applied already,
and a plan whose neuron IDs disagree with the checkpoint's (one made before an earlier surgery
that kept the widths), as ``NeuronEngine.apply`` does; files without recorded IDs get them by
replaying their plans. :func:`load_neurons` gives the IDs, for an engine on the loaded model.

**A file never chooses code.** The factory name in a header is only looked up among the
factories the user's code registered (:func:`register_model_factory`) or passes
(``factory=``, ``--model``); nothing is imported or called because a file says so (see
``engine.checkpoint_factories``). An unknown name raises
:class:`~engine.errors.ModelFactoryError` naming it.

>>> import tempfile, os, torch
>>> from torch import nn
>>> spec = ModelSpec(factory="doc_linear", kwargs={"in_features": 3, "out_features": 2})
>>> d = tempfile.mkdtemp()
>>> save(os.path.join(d, "m.safetensors"), nn.Linear(3, 2), spec, [], input_shape=[2, 3])
PosixPath('.../m.safetensors')
>>> load(os.path.join(d, "m.safetensors"), factory=nn.Linear).weight.shape
torch.Size([2, 3])
>>> try:
...     load(os.path.join(d, "m.safetensors"))  # "doc_linear" is not registered
... except ModelFactoryError as e:
...     print(e.name)
doc_linear
"""

from __future__ import annotations

import json
import os
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file
from safetensors.torch import save as save_bytes
from torch import nn

from engine.checkpoint_factories import (
    ModelSpec,
    register_model_factory,
    registered_model_factories,
    spec_for,
    unregister_model_factory,
)
from engine.errors import ConfigurationError, EngineError, ModelFactoryError
from engine.io import atomic_write_bytes
from engine.neurons import NeuronRegistry
from engine.plan import Plan, lineage
from engine.plan.actions import ExpandAction
from engine.plan.lineage import NeuronState
from engine.surgery import SurgeryRecord, apply_plan

__all__ = [
    "CheckpointError",
    "ModelFactoryError",
    "ModelSpec",
    "apply_to_checkpoint",
    "checkpoint_summary",
    "load",
    "load_neurons",
    "load_probe",
    "load_state",
    "register_model_factory",
    "registered_model_factories",
    "save",
    "unregister_model_factory",
]

FORMAT = "neuron-engine.checkpoint"


class CheckpointError(EngineError, ValueError):
    """A checkpoint cannot be read safely, or does not fit the model spec."""


class _Header(BaseModel):
    model_config = ConfigDict(extra="forbid")

    format: str = FORMAT
    version: int = 2  # 2: neuron IDs recorded (1: absent, replayed from the plans)
    model: ModelSpec
    input_shape: list[int]
    input_dtype: str = "float32"
    plans: list[dict[str, Any]] = Field(default_factory=list)
    neurons: NeuronState | None = None


def _example(shape: list[int], dtype: str) -> torch.Tensor:
    dt = getattr(torch, dtype, None)
    if not isinstance(dt, torch.dtype):
        raise CheckpointError(f"unknown input dtype {dtype!r}")
    if dt.is_floating_point:
        return torch.randn(shape, generator=torch.Generator().manual_seed(0), dtype=dt)
    return torch.zeros(shape, dtype=dt)


def load_state(path: str | os.PathLike[str]) -> tuple[dict[str, torch.Tensor], _Header | None]:
    """The tensors of a checkpoint file, and its header when it is one of ours."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        tensors = load_file(str(path))
        header = None
        if meta.get("format") == FORMAT:
            header = _Header.model_validate_json(meta["neuron_engine"])
        return tensors, header
    except SafetensorError:
        pass  # not safetensors: try PyTorch's format, without pickle
    except (KeyError, ValueError) as exc:
        raise CheckpointError(f"{path}: malformed neuron-engine header ({exc})") from None
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).splitlines()[0] if str(exc) else "pickled objects"
        raise CheckpointError(
            f"{path}: refused: the file holds pickled Python objects, which are never loaded "
            f"(weights_only=True said: {first}); save a state_dict or use safetensors"
        ) from None
    except Exception as exc:  # zip/format errors from torch.load
        raise CheckpointError(f"{path}: not a safetensors or PyTorch checkpoint ({exc})") from None
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(data, dict) and isinstance(data.get(key), dict):
            data = data[key]
    if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise CheckpointError(f"{path}: expected a state dict of tensors")
    return dict(data), None


def _replay(
    model: nn.Module, plans: list[Plan], example: torch.Tensor, *, ids: bool = False
) -> NeuronState | None:
    """Replay the plans' structure (values are loaded afterwards); with ``ids``, also their
    neuron IDs (``None`` when the plans disagree on them: a file from before the check)."""
    state: NeuronState | None = None
    for plan in plans:
        structural = [
            a.model_copy(update={"init": "zero_outgoing"})
            if isinstance(a, ExpandAction) and a.init == "gradmax"
            else a
            for a in plan.actions()
        ]
        replayed = Plan.create(structural, plan.layout)
        registry = lineage.registry_for(plan, state) if ids else None
        if registry is not None and lineage.stale_problems(plan, registry):
            ids, registry, state = False, None, None  # an old file's history: IDs unknown
        record = apply_plan(model, replayed, example_inputs=example, measure="none",
                            allow_output_changes=True, registry=registry)  # fmt: skip
        if registry is not None:
            state = NeuronState.of(record.neurons_after)
    return state


def save(
    path: str | os.PathLike[str],
    model: nn.Module,
    spec: ModelSpec,
    plans: list[Plan],
    *,
    input_shape: list[int],
    input_dtype: str = "float32",
    neurons: NeuronRegistry | NeuronState | None = None,
) -> Path:
    """Write ``model``'s weights with the spec and applied plans (atomically). ``neurons``:
    the model's current neuron IDs (``engine.neurons``); without them, a later
    :func:`apply_to_checkpoint` replays them from the plans."""
    if isinstance(neurons, NeuronRegistry):
        neurons = NeuronState.of(neurons.state_dict())
    header = _Header(
        model=spec, input_shape=list(input_shape), input_dtype=input_dtype,
        plans=[p.to_json() for p in plans], neurons=neurons,
    )  # fmt: skip
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    meta = {"format": FORMAT, "neuron_engine": header.model_dump_json()}
    data = save_bytes(tensors, metadata=meta)
    return atomic_write_bytes(path, data)


def load(
    path: str | os.PathLike[str], *, factory: Callable[..., nn.Module] | None = None
) -> nn.Module:
    """Rebuild a model written by :func:`save` / :func:`apply_to_checkpoint`: build it with
    ``factory`` (your code) or the factory registered under the header's name, called with
    the header's keyword arguments; replay the applied plans' structure; load the weights
    (strictly). Nothing is imported because the file names it.

    >>> import tempfile, torch.nn as nn
    >>> @register_model_factory("doc_head")
    ... def doc_head(width=2):
    ...     return nn.Linear(3, width)
    >>> f = save(tempfile.mkdtemp() + "/m.safetensors", doc_head(4),
    ...          ModelSpec(factory="doc_head", kwargs={"width": 4}), [], input_shape=[2, 3])
    >>> load(f).out_features
    4
    >>> _ = unregister_model_factory("doc_head")
    """
    tensors, header = load_state(path)
    if header is None:
        raise CheckpointError(f"{path}: not a neuron-engine checkpoint (no model spec inside)")
    model = header.model.build(factory, source=path)
    _replay(model, [Plan.loads(p) for p in header.plans],
            _example(header.input_shape, header.input_dtype))  # fmt: skip
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not fit the rebuilt model: {exc}") from None
    return model


def apply_to_checkpoint(
    plan: Plan | str | os.PathLike[str],
    checkpoint: str | os.PathLike[str],
    spec: ModelSpec | None = None,
    out: str | os.PathLike[str] | None = None,
    *,
    factory: Callable[..., nn.Module] | None = None,
    kwargs: dict[str, Any] | None = None,
    input_shape: list[int] | None = None,
    input_dtype: str = "float32",
    dry_run: bool = False,
    probe: torch.Tensor | None = None,
) -> tuple[nn.Module, SurgeryRecord]:
    """Apply ``plan`` to the model in ``checkpoint`` and write the result to ``out``.

    The model is built by your code, never by the file's: ``factory`` (a callable returning
    the unmodified model), else the factory registered under the name in ``spec``, else the
    one registered under the name in the checkpoint's header (our files carry a spec and the
    plans applied so far). A plain state dict names no model: give ``factory`` or ``spec``.
    ``kwargs``: the factory's keyword arguments (default: the spec's, or the header's).
    ``input_shape``: the probe batch's shape (default: one taken from the checkpoint, or
    ``[2, in_features]`` for a model starting with a Linear). ``probe``: real inputs to
    measure the output change on (see :func:`load_probe`); by default a seeded N(0, 1) batch
    of ``input_shape``, a worst case for inputs in another range. With ``dry_run`` nothing is
    written. Returns the modified model and the record.

    >>> import tempfile, torch
    >>> from pathlib import Path
    >>> from engine.plan import Plan, PruneAction
    >>> d = Path(tempfile.mkdtemp())
    >>> make = lambda: nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    >>> torch.save(make().state_dict(), d / "model.pt")
    >>> plan = Plan.create([PruneAction(layer="0", local_indices=[1], neuron_ids=[1],
    ...                                 reason="dead")], [("0", 4), ("2", 2)])
    >>> spec = ModelSpec(factory="doc_small")
    >>> model, record = apply_to_checkpoint(plan, d / "model.pt", spec, d / "out.safetensors",
    ...                                     factory=make)
    >>> model[0].out_features, load(d / "out.safetensors", factory=make)[0].out_features
    (3, 3)
    """
    if out is not None and Path(out).resolve() == Path(checkpoint).resolve():
        raise CheckpointError(f"{out}: the output must not overwrite the input checkpoint")
    plan = plan if isinstance(plan, Plan) else Plan.load(plan)
    tensors, header = load_state(checkpoint)
    earlier: list[Plan] = []
    if header is not None:
        earlier = [Plan.loads(p) for p in header.plans]
        lineage.check_not_applied(plan, earlier, checkpoint)
        input_shape = input_shape or header.input_shape
        input_dtype = header.input_dtype if input_shape == header.input_shape else input_dtype
    spec = spec_for(checkpoint, spec, header and header.model, factory, kwargs)
    model = spec.build(factory, source=checkpoint)
    if probe is not None:
        input_shape = [2, *probe.shape[1:]]
        input_dtype = str(probe.dtype).removeprefix("torch.")
    shape = input_shape or _default_shape(model)
    example = _example(shape, input_dtype)
    known = header.neurons if header is not None else None
    replayed = _replay(model, earlier, example, ids=known is None)
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        first = " ".join(str(exc).split())[:300]
        raise CheckpointError(f"{checkpoint}: weights do not fit {spec.factory}: {first}") from None
    registry = lineage.registry_for(plan, known or replayed)
    lineage.check_not_stale(plan, registry, checkpoint, applied=len(earlier))
    record = apply_plan(model, plan, example_inputs=example if probe is None else probe,
                        registry=registry)  # fmt: skip
    if not dry_run and out is not None:
        save(out, model, spec, [*earlier, plan], input_shape=shape, input_dtype=input_dtype,
             neurons=NeuronState.of(record.neurons_after))  # fmt: skip
    return model, record


def load_neurons(path: str | os.PathLike[str]) -> NeuronRegistry | None:
    """The neuron IDs a checkpoint records (``None``: a plain state dict, or a file from
    before they were recorded). Give them to an engine on the loaded model so that its plans
    name the checkpoint's units: ``engine.neurons.load_state_dict(ids.state_dict())``.

    >>> import tempfile, torch.nn as nn
    >>> f = save(tempfile.mkdtemp() + "/m.safetensors", nn.Linear(3, 2), ModelSpec(factory="x"),
    ...          [], input_shape=[2, 3], neurons=NeuronState(layers={"": [4, 7]}, next_id=9))
    >>> load_neurons(f).ids("")
    [4, 7]
    """
    _, header = load_state(path)
    if header is None or header.neurons is None:
        return None
    return NeuronRegistry.from_state_dict(header.neurons.model_dump())


def load_probe(path: str | os.PathLike[str]) -> torch.Tensor:
    """A probe batch from a file: safetensors holding one tensor (or one named ``inputs``), or a
    ``.npy`` array (read without pickle). The batch axis comes first.

    >>> import tempfile
    >>> from safetensors.torch import save_file
    >>> f = Path(tempfile.mkdtemp()) / "probe.safetensors"
    >>> save_file({"inputs": torch.rand(16, 64)}, f)
    >>> load_probe(f).shape
    torch.Size([16, 64])
    """
    path = Path(path)
    if path.suffix == ".npy":
        import numpy as np

        try:
            array = np.load(path, allow_pickle=False)
        except ValueError as exc:  # object arrays need pickle: refused
            raise CheckpointError(f"{path}: not a plain numeric .npy array ({exc})") from None
        probe = torch.from_numpy(np.ascontiguousarray(array))
    else:
        try:
            tensors = load_file(path)
        except (SafetensorError, OSError) as exc:
            raise CheckpointError(f"{path}: not a safetensors file ({exc})") from None
        if len(tensors) != 1 and "inputs" not in tensors:
            raise CheckpointError(
                f"{path}: holds {sorted(tensors)[:8]}; a probe file needs one tensor, or one "
                f"named 'inputs'"
            )
        probe = tensors["inputs"] if "inputs" in tensors else next(iter(tensors.values()))
    if probe.dim() < 1 or probe.shape[0] < 1:
        raise CheckpointError(
            f"{path}: a probe needs a batch axis with samples, got {list(probe.shape)}"
        )
    return probe


def _default_shape(model: nn.Module) -> list[int]:
    first = next((m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d,
                                                                nn.Embedding))), None)  # fmt: skip
    if isinstance(first, nn.Linear):
        return [2, first.in_features]
    raise ConfigurationError(
        "cannot guess the model's input shape: pass --input-shape (e.g. 2,3,32,32)"
    )


def checkpoint_summary(path: str | os.PathLike[str]) -> str:
    """What a checkpoint holds, as text (``python -m engine inspect CKPT`` prints it): the model
    spec and the plans applied so far (our safetensors files), then every tensor's shape.

    >>> import tempfile, torch
    >>> from safetensors.torch import save_file
    >>> f = Path(tempfile.mkdtemp()) / "m.safetensors"
    >>> save_file({"fc.weight": torch.zeros(3, 4), "fc.bias": torch.zeros(3)}, f)
    >>> print(checkpoint_summary(f))  # doctest: +ELLIPSIS
    checkpoint .../m.safetensors: 2 tensors, 15 values
    no engine header (a plain state dict)
      fc.bias    [3]
      fc.weight  [3, 4]
    """
    state, header = load_state(path)
    lines = [f"checkpoint {path}: {len(state)} tensors, {sum(t.numel() for t in state.values())} "
             f"values"]  # fmt: skip
    if header is None:
        lines.append("no engine header (a plain state dict)")
    else:
        kwargs = json.dumps(header.model.kwargs) if header.model.kwargs else ""
        lines.append(f"model {header.model.factory} {kwargs}".rstrip())
        lines.append(f"input {header.input_dtype} {header.input_shape}")
        ids = "recorded" if header.neurons else "not recorded (replayed from the plans)"
        lines.append(f"plans applied: {len(header.plans)}; neuron IDs {ids}")
    width = max((len(name) for name in state), default=0)
    lines += [f"  {name:<{width}}  {list(t.shape)}" for name, t in sorted(state.items())]
    return "\n".join(lines)
