"""Registry of foreign plan formats: files of other tools that ``Plan.load`` / ``Plan.loads``
recognise and convert to a ``Plan``.

A format is a name, a ``detect(data)`` test on the parsed top-level JSON object and a
``convert(data, source=...)`` function that returns the ``Plan`` (``source``, usually the file
name, prefixes its error messages). ``Plan.loads`` asks the formats in registration order and
converts with the first whose ``detect`` is true; data no format claims is read as a native
plan. Readers register themselves when imported (``engine.plan.legacy`` registers
``"selfmodifying-slm"``), and ``engine.plan`` imports them, so the registry is always filled
before a plan is read. This module imports no other part of ``engine.plan``.

>>> [f.name for f in plan_formats()]
['selfmodifying-slm']
>>> detect_plan_format({"format": "neuron-engine.plan"}) is None
True
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from pydantic import BaseModel

from engine.errors import ConfigurationError

PlanDetector = Callable[[Mapping[str, Any]], bool]


class PlanConverter(Protocol):
    """``convert(data, source=...)``: the ``Plan`` for ``data``; ``PlanError`` (prefixed with
    ``source``) when it is malformed. ``Plan.loads`` checks that the result is a ``Plan``."""

    def __call__(self, data: Mapping[str, Any], *, source: str) -> BaseModel: ...


@dataclass(frozen=True)
class PlanFormat:
    """One registered foreign format; ``description`` completes the error for data that is no
    plan ("expected 'format': 'neuron-engine.plan', or <description>")."""

    name: str
    detect: PlanDetector
    convert: PlanConverter
    description: str


_FORMATS: dict[str, PlanFormat] = {}


def register_plan_format(
    name: str, detect: PlanDetector, convert: PlanConverter, *, description: str | None = None
) -> PlanFormat:
    """Make ``Plan.loads`` convert data for which ``detect(data)`` is true with ``convert``.

    Registering a name again replaces that format in its place (re-importing a reader is
    harmless). ``description`` defaults to ``"a <name> file"``.

    >>> from engine.plan.plan import Plan
    >>> def detect(data):
    ...     return data.get("tool") == "toy"
    >>> def convert(data, *, source):
    ...     return Plan.create([], data["layers"], source="toy")
    >>> register_plan_format("toy", detect, convert).description
    'a toy file'
    >>> Plan.loads('{"tool": "toy", "layers": {"fc": 4}}').metadata.source
    'toy'
    >>> unregister_plan_format("toy").name
    'toy'
    """
    if not isinstance(name, str) or not name:
        raise ConfigurationError(f"plan format name must be a non-empty string, got {name!r}")
    for role, function in (("detect", detect), ("convert", convert)):
        if not callable(function):
            raise ConfigurationError(
                f"plan format {name!r}: {role} must be callable, got {type(function).__name__}"
            )
    text = f"a {name} file" if description is None else description
    fmt = PlanFormat(name=name, detect=detect, convert=convert, description=text)
    _FORMATS[name] = fmt
    return fmt


def unregister_plan_format(name: str) -> PlanFormat:
    """Remove a registered format and return it; ``ConfigurationError`` for an unknown name.

    >>> unregister_plan_format("no-such-format")
    Traceback (most recent call last):
    ...
    engine.errors.ConfigurationError: no plan format 'no-such-format' is registered ...
    """
    if name not in _FORMATS:
        raise ConfigurationError(
            f"no plan format {name!r} is registered (registered: {sorted(_FORMATS)})"
        )
    return _FORMATS.pop(name)


def plan_formats() -> tuple[PlanFormat, ...]:
    """The registered foreign formats, in the order ``Plan.loads`` tries them."""
    return tuple(_FORMATS.values())


def detect_plan_format(data: Mapping[str, Any]) -> PlanFormat | None:
    """The first registered format whose ``detect`` claims ``data``, or None (a native plan,
    or no plan at all).

    >>> detect_plan_format({"metadata": {"model_info": {}}, "prune": []}).name
    'selfmodifying-slm'
    """
    for fmt in _FORMATS.values():
        if fmt.detect(data):
            return fmt
    return None
