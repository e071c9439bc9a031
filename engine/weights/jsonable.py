"""Turn user metadata into strict JSON: numpy scalars, 0-d tensors and arrays become numbers
and lists, NaN/inf become None, anything else unknown becomes its ``str``. Never raises, so a
snapshot never fails to save (or later to load) because of what a caller attached to it.

>>> import numpy as np, torch
>>> to_jsonable({"lr": np.float32(0.5), "acc": torch.tensor(0.25), "bad": float("nan"),
...              "ids": np.arange(3), 7: (1, 2)})
{'lr': 0.5, 'acc': 0.25, 'bad': None, 'ids': [0, 1, 2], '7': [1, 2]}
"""

from __future__ import annotations

import enum
import math
import numbers
from collections.abc import Mapping
from datetime import date, datetime
from pathlib import PurePath
from typing import Any

import numpy as np
import torch

_MAX_ARRAY = 100_000  # larger arrays are summarised, not embedded in the JSON index


def _number(value: Any) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    f = float(value)
    return f if math.isfinite(f) else None


def _array(value: np.ndarray) -> Any:
    if value.size > _MAX_ARRAY:
        return f"<array shape={list(value.shape)} dtype={value.dtype}>"
    return to_jsonable(value.tolist())


def to_jsonable(value: Any) -> Any:
    """A strict-JSON copy of ``value`` (see the module docstring for the rules)."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (numbers.Number, np.number)) and not isinstance(value, complex):
        return _number(value)
    if isinstance(value, torch.Tensor):
        t = value.detach().cpu()
        if t.dim() == 0:
            return to_jsonable(t.item())
        return _array(t.numpy() if t.dtype != torch.bfloat16 else t.float().numpy())
    if isinstance(value, np.ndarray):
        return _array(value)
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        items = sorted(value, key=repr) if isinstance(value, (set, frozenset)) else value
        return [to_jsonable(v) for v in items]
    if isinstance(value, enum.Enum):
        return to_jsonable(value.value)
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, PurePath):
        return str(value)
    if hasattr(value, "item"):  # other scalar-like objects
        try:
            return to_jsonable(value.item())
        except (TypeError, ValueError, RuntimeError):
            pass
    return str(value)
