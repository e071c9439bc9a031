"""Strict JSON for plan files and readable validation errors (used by ``engine.plan.plan``).

Reading a plan file (``read_plan_text``), parsing it to a top-level object (``json_object``),
and turning parsed data back into strict JSON text for validation (``strict_json_text``); each
error is a ``PlanError`` that starts with the file name (``source``).

>>> parse_json('{"a": 1}', "plan.json")
{'a': 1}
>>> json_object('[1]', "plan.json")
Traceback (most recent call last):
...
engine.errors.PlanError: plan.json: expected a JSON object at the top level, got list
>>> non_finite_path({"x": [1.0, float("nan")]})
('x.1', nan)
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from engine.errors import PlanError

# kinds of the discriminated ``merge`` list (pydantic puts the tag into error paths)
KINDS = ("merge", "fold")
# values that cannot hold a NaN/inf (floats and containers are walked)
_SCALARS = frozenset({int, bool, str, type(None)})


def read_plan_text(path: str | os.PathLike[str]) -> str:
    """The text of a plan file; ``PlanError`` when it is missing, a directory or not UTF-8.

    >>> read_plan_text("no/such/plan.json")
    Traceback (most recent call last):
    ...
    engine.errors.PlanError: no/such/plan.json: no such file
    """
    p = Path(path)
    if not p.exists():
        raise PlanError(f"{p}: no such file")
    if not p.is_file():
        raise PlanError(f"{p}: not a file")
    try:
        return p.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise PlanError(f"{p}: not valid JSON (not UTF-8 text: {exc.reason})") from None


def json_object(text_or_data: object, source: str) -> dict[str, Any]:
    """A copy of the top-level JSON object of strict JSON text, or of already parsed data.

    >>> json_object(b'{"format": "x"}', "plan.json")
    {'format': 'x'}
    """
    if isinstance(text_or_data, (str, bytes, bytearray)):
        data = parse_json(text_or_data, source)
    else:
        data = text_or_data
    if not isinstance(data, Mapping):
        raise PlanError(
            f"{source}: expected a JSON object at the top level, got {type(data).__name__}"
        )
    return dict(data)


def strict_json_text(data: Any, source: str) -> str:
    """Strict JSON text of parsed data; ``PlanError`` names a NaN/infinity or non-JSON value.

    >>> strict_json_text({"a": [1, 2.5]}, "plan")
    '{"a": [1, 2.5]}'
    >>> strict_json_text({"a": float("inf")}, "plan")
    Traceback (most recent call last):
    ...
    engine.errors.PlanError: plan: field 'a' = inf: not allowed in a plan
    """
    try:  # the encoder refuses NaN/inf itself; the (slower) walk below only names the field
        return json.dumps(data, allow_nan=False)
    except (TypeError, ValueError) as exc:
        bad = non_finite_path(data)
        if bad is not None:
            where = f"field {bad[0]!r} = {bad[1]}"
            raise PlanError(f"{source}: {where}: not allowed in a plan") from None
        raise PlanError(f"{source}: not JSON data ({exc})") from None


def parse_json(text: str | bytes | bytearray, source: str) -> Any:
    """Parsed strict JSON: no NaN/Infinity constants, no duplicate keys (``PlanError``)."""

    def no_constant(name: str) -> Any:
        raise ValueError(f"{name} is not allowed (strict JSON)")

    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in pairs:
            if key in out:
                raise ValueError(f"duplicate key {key!r}")
            out[key] = value
        return out

    try:
        return json.loads(text, parse_constant=no_constant, object_pairs_hook=no_duplicates)
    except json.JSONDecodeError as exc:
        raise PlanError(
            f"{source}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})"
        ) from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise PlanError(f"{source}: not valid JSON ({exc})") from None
    except RecursionError:
        raise PlanError(f"{source}: not valid JSON (nested too deeply)") from None


def non_finite_path(data: Any, prefix: str = "") -> tuple[str, float] | None:
    """Dotted path and value of the first NaN/±inf float in nested JSON data, or None."""
    if isinstance(data, float) and not math.isfinite(data):
        return prefix, data
    if isinstance(data, Mapping):
        items: Iterable[tuple[Any, Any]] = data.items()
    elif isinstance(data, (list, tuple)):
        items = enumerate(data)
    else:
        return None
    for key, value in items:
        if type(value) in _SCALARS:  # skip a million plain indices without a call each
            continue
        found = non_finite_path(value, f"{prefix}.{key}" if prefix else str(key))
        if found is not None:
            return found
    return None


def _short(value: Any, limit: int = 60) -> str:
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def format_validation(exc: ValidationError, source: str, limit: int = 5) -> str:
    """``source: field 'a.0.b' = value: message`` per error (first ``limit`` errors)."""
    lines = []
    errors = exc.errors()
    for err in errors[:limit]:
        loc = list(err["loc"])
        # a discriminated union puts the tag into the path: merge.0.fold.keep → merge.0.keep
        if len(loc) >= 3 and loc[0] == "merge" and isinstance(loc[1], int) and loc[2] in KINDS:
            del loc[2]
        where = ".".join(str(part) for part in loc)
        msg = err["msg"].removeprefix("Value error, ")
        value = err.get("input")
        show_value = err["type"] not in ("missing", "value_error") and not isinstance(
            value, Mapping
        )
        line = f"{source}:"
        if where:
            line += f" field {where!r}"
            if show_value:
                line += f" = {_short(value)}"
            line += ":"
        lines.append(f"{line} {msg}")
    if len(errors) > limit:
        lines.append(f"{source}: … and {len(errors) - limit} more errors")
    return "\n".join(lines)
