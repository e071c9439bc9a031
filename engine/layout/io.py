"""Save and load a ``ModelLayout`` next to a statistics snapshot (JSON + safetensors).

>>> import tempfile, torch
>>> from engine.layout.model import ALL_KINDS, ConsumerSlice, LayerLayout, ModelLayout
>>> fc = LayerLayout("fc", "Linear", 2, [0, 1], params_per_unit=5,
...                  consumers=[ConsumerSlice("out", "Linear", torch.ones(3, 2))])
>>> d = save_layout(ModelLayout({"fc": fc}, 20), tempfile.mkdtemp())
>>> load_layout(d).layers["fc"].consumer_sq_norms().tolist()
[3.0, 3.0]
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from engine.errors import SnapshotError
from engine.io import atomic_write_bytes, atomic_write_json, read_json_model
from engine.layout.model import ALL_KINDS, ConsumerSlice, LayerLayout, ModelLayout

LAYOUT_FILE = "layout.json"
WEIGHTS_FILE = "layout.safetensors"


class _Consumer(BaseModel):
    model_config = ConfigDict(extra="forbid")
    module: str
    module_type: str
    columns_per_unit: NonNegativeInt
    tracked_layer: str | None
    rows: NonNegativeInt


class _Layer(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    module_type: str
    units: NonNegativeInt
    neuron_ids: list[int]
    is_output: bool
    coupled: list[str]
    supports: list[str]
    params_per_unit: NonNegativeInt
    consumers: list[_Consumer]
    width_multiple: int = Field(default=1, ge=1)  # absent in older files: 1


class _Layout(BaseModel):
    model_config = ConfigDict(extra="forbid")
    format: str = "neuron-engine.layout"
    version: int = 1
    total_params: NonNegativeInt
    layers: list[_Layer]


def save_layout(layout: ModelLayout, directory: str | Path) -> Path:
    directory = Path(directory)
    tensors: dict[str, torch.Tensor] = {}
    layers = []
    for name, layer in layout.layers.items():
        consumers = []
        for k, c in enumerate(layer.consumers):
            tensors[f"{name}/{k}"] = c.weight.detach().to(torch.float64).cpu().contiguous()
            consumers.append(
                _Consumer(
                    module=c.module,
                    module_type=c.module_type,
                    columns_per_unit=c.columns_per_unit,
                    tracked_layer=c.tracked_layer,
                    rows=c.weight.shape[0],
                )
            )
        layers.append(
            _Layer(
                name=name,
                module_type=layer.module_type,
                units=layer.units,
                neuron_ids=layer.neuron_ids,
                is_output=layer.is_output,
                coupled=layer.coupled,
                supports=sorted(layer.supports),
                params_per_unit=layer.params_per_unit,
                width_multiple=layer.width_multiple,
                consumers=consumers,
            )
        )
    record = _Layout(total_params=layout.total_params, layers=layers)
    atomic_write_bytes(directory / WEIGHTS_FILE, st_save(tensors) if tensors else st_save({}))
    atomic_write_json(directory / LAYOUT_FILE, record.model_dump(mode="json"))
    return directory


def load_layout(
    directory: str | Path, expected: dict[str, list[int]] | None = None
) -> ModelLayout | None:
    """The layout saved in ``directory``, or None when there is none.

    With ``expected`` (layer name → neuron IDs of the statistics it is saved with), a layout of
    other layers, sizes or neuron IDs is refused: it describes another model.
    """
    directory = Path(directory)
    path = directory / LAYOUT_FILE
    if not path.is_file():
        return None
    record = read_json_model(path, _Layout, SnapshotError)
    try:
        tensors: dict[str, Any] = st_load((directory / WEIGHTS_FILE).read_bytes())
    except (OSError, SafetensorError) as exc:
        raise SnapshotError(f"{directory / WEIGHTS_FILE}: unreadable ({exc})") from None
    _check_records(record, path)
    if expected is not None:
        _check_matches(record, expected, path)
    layers = {}
    for rec in record.layers:
        consumers = []
        for k, c in enumerate(rec.consumers):
            weight = tensors.get(f"{rec.name}/{k}")
            if weight is None or tuple(weight.shape) != (c.rows, rec.units):
                raise SnapshotError(
                    f"{directory / WEIGHTS_FILE}: consumer weights {rec.name}/{k} missing or not "
                    f"of shape ({c.rows}, {rec.units})"
                )
            consumers.append(
                ConsumerSlice(c.module, c.module_type, weight, c.columns_per_unit, c.tracked_layer)
            )
        layers[rec.name] = LayerLayout(
            rec.name, rec.module_type, rec.units, rec.neuron_ids, rec.is_output, rec.coupled,
            frozenset(rec.supports), rec.params_per_unit, consumers, rec.width_multiple,
        )  # fmt: skip
    return ModelLayout(layers, record.total_params)


def _check_records(record: _Layout, path: Path) -> None:
    names = [rec.name for rec in record.layers]
    if len(set(names)) != len(names):
        raise SnapshotError(f"{path}: a layer is listed twice ({names})")
    for rec in record.layers:
        if len(rec.neuron_ids) != rec.units:
            raise SnapshotError(
                f"{path}: layer {rec.name!r} has {rec.units} units but "
                f"{len(rec.neuron_ids)} neuron IDs"
            )
        unknown = set(rec.supports) - ALL_KINDS
        if unknown:
            raise SnapshotError(
                f"{path}: layer {rec.name!r} supports unknown action kinds {sorted(unknown)} "
                f"(known: {sorted(ALL_KINDS)})"
            )
        for c in rec.consumers:
            if c.tracked_layer is not None and c.tracked_layer not in names:
                raise SnapshotError(
                    f"{path}: consumer {c.module!r} of layer {rec.name!r} names tracked layer "
                    f"{c.tracked_layer!r}, which is not in the layout"
                )


def _check_matches(record: _Layout, expected: dict[str, list[int]], path: Path) -> None:
    saved = {rec.name: list(rec.neuron_ids) for rec in record.layers}
    if set(saved) != set(expected):
        raise SnapshotError(
            f"{path}: the saved layout is of layers {sorted(saved)}, the statistics beside it "
            f"of layers {sorted(expected)}; it belongs to another model (save again)"
        )
    for name, ids in expected.items():
        if len(saved[name]) != len(ids):
            raise SnapshotError(
                f"{path}: layer {name!r} has {len(saved[name])} units in the saved layout and "
                f"{len(ids)} in the statistics beside it; it belongs to another model"
            )
        if saved[name] != list(ids):
            raise SnapshotError(
                f"{path}: layer {name!r} has other neuron IDs in the saved layout than in the "
                f"statistics beside it; it belongs to another model (or another surgery step)"
            )


def layout_from_snapshot_sizes(sizes: list[tuple[str, int]], ids: dict[str, list[int]]):
    """A conservative layout when only statistics are known: no consumer weights, and the
    last tracked layer is taken to be the output layer (its units are never removed)."""
    names = [n for n, _ in sizes]
    return ModelLayout(
        {n: LayerLayout(n, "unknown", u, ids[n], is_output=(n == names[-1])) for n, u in sizes}
    )
