"""The plan: versioned JSON listing prune / merge / expand actions for one model layout.

A plan carries the layout (layer names and unit counts) it was made for and its fingerprint,
the policies that proposed it, every action with its reason and evidence, and statistics
derived from the actions (units removed and added, widths before and after per layer).

This module is the schema only: it imports none of the readers and printers of plans. Other
file formats are read through ``register_plan_format`` (``engine.plan.legacy`` registers the
SelfModifyingSLM format) and ``Plan.summary`` prints with the formatter that
``engine.plan.summary`` registers; importing ``engine.plan`` puts both in place.

>>> from engine.plan.actions import ExpandAction, PruneAction
>>> plan = Plan.create(
...     [PruneAction(layer="fc1", local_indices=[1, 3], neuron_ids=[1, 3], reason="dead"),
...      ExpandAction(layer="fc2", count=2, init="zero_outgoing", reason="saturated")],
...     layout=[("fc1", 8), ("fc2", 4)], created="2025-01-01T00:00:00+00:00")
>>> plan.statistics.widths["fc1"], plan.statistics.widths["fc2"]
({'before': 8, 'after': 6}, {'before': 4, 'after': 6})
>>> Plan.loads(plan.dumps()) == plan
True
>>> plan.check_fingerprint([("fc1", 8), ("fc2", 5)])
Traceback (most recent call last):
...
engine.errors.FingerprintMismatchError: plan was made for layout ... layer 'fc2': 4 units in ...
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import PydanticSerializationError

from engine.errors import ConfigurationError, PlanError
from engine.io import atomic_write_text
from engine.layout.model import layout_fingerprint
from engine.plan.actions import (
    Action,
    ExpandAction,
    FoldAction,
    MergeAction,
    MergeLike,
    PruneAction,
)
from engine.plan.consistency import check_consistency
from engine.plan.fingerprint import check_layout, layout_pairs
from engine.plan.formats import detect_plan_format, plan_formats
from engine.plan.metadata import FORMAT, VERSION, Layout, PlanMetadata, PolicyRecord
from engine.plan.parsing import (
    format_validation,
    json_object,
    non_finite_path,
    read_plan_text,
    strict_json_text,
)
from engine.plan.statistics import PlanStatistics

# FORMAT, VERSION, PlanMetadata and PolicyRecord live in engine.plan.metadata; they are
# importable from here too.
__all__ = [
    "FORMAT",
    "VERSION",
    "Plan",
    "PlanMetadata",
    "PolicyRecord",
    "SummaryFormatter",
    "register_summary_formatter",
]

SummaryFormatter = Callable[["Plan"], str]
_SUMMARY_FORMATTER: list[SummaryFormatter] = []  # the registered one, when there is one


def register_summary_formatter(formatter: SummaryFormatter) -> None:
    """Make ``Plan.summary()`` return ``formatter(plan)``, replacing the formatter before.

    ``engine.plan.summary`` registers ``plan_summary`` when it is imported (``engine.plan``
    imports it).

    >>> from engine.plan.summary import plan_summary
    >>> register_summary_formatter(lambda plan: f"{len(plan.layout)} layer")
    >>> Plan.create([], [("fc", 4)]).summary()
    '1 layer'
    >>> register_summary_formatter(plan_summary)
    """
    if not callable(formatter):
        raise ConfigurationError(
            f"a summary formatter must be callable, got {type(formatter).__name__}"
        )
    _SUMMARY_FORMATTER[:] = [formatter]


def _plan_schema_extra(schema: dict[str, Any]) -> None:
    # Python callers may omit format/version (defaults); files must carry them.
    schema["required"] = ["format", "version", "metadata"]


class Plan(BaseModel):
    """A versioned, validated plan (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_plan_schema_extra)

    format: Literal["neuron-engine.plan"] = FORMAT
    version: Literal[1] = VERSION
    metadata: PlanMetadata
    prune: list[PruneAction] = Field(default_factory=list)
    merge: list[MergeLike] = Field(default_factory=list)
    expand: list[ExpandAction] = Field(default_factory=list)
    statistics: PlanStatistics = Field(  # type: ignore[assignment]
        default=None,
        description="derived from the actions; computed when omitted",
        json_schema_extra=lambda schema: schema.pop("default", None),
    )

    @model_validator(mode="after")
    def _consistent(self) -> Plan:
        sections = {"prune": self.prune, "merge": self.merge, "expand": self.expand}
        self.statistics = check_consistency(self.metadata, sections, self.statistics)
        return self

    # --- construction -----------------------------------------------------------------------
    @classmethod
    def create(
        cls,
        actions: Iterable[Action],
        layout: Any,
        *,
        policies: Iterable[Mapping[str, Any] | str] | None = None,
        samples_seen: Mapping[str, int] | None = None,
        notes: Iterable[str] | None = None,
        source: str = "neuron-engine",
        created: str | None = None,
    ) -> Plan:
        """A plan of ``actions`` for ``layout``: sorted into the prune / merge / expand lists
        (order kept within each), statistics computed, evidence normalised to JSON values.

        ``layout`` is ``[(layer, units), …]``, a ``{layer: units}`` mapping, or an object with
        ``.sizes`` (``ModelLayout``) or ``.layout`` (``StatsSnapshot``; its ``samples_seen`` is
        used when none is given). ``policies`` are ``{"name", "settings"}`` dicts or names.

        >>> Plan.create([], {"fc": 4}, policies=["dead"]).metadata.policies
        [{'name': 'dead', 'settings': {}}]
        """
        pairs = layout_pairs(layout)
        if samples_seen is None:
            seen = getattr(layout, "samples_seen", None)
            samples_seen = seen if isinstance(seen, Mapping) else {}
        prune: list[PruneAction] = []
        merge: list[MergeAction | FoldAction] = []
        expand: list[ExpandAction] = []
        for action in actions:
            if isinstance(action, PruneAction):
                prune.append(action)
            elif isinstance(action, (MergeAction, FoldAction)):
                merge.append(action)
            elif isinstance(action, ExpandAction):
                expand.append(action)
            else:
                raise TypeError(f"not a plan action: {action!r}")
        records = [
            {"name": p, "settings": {}} if isinstance(p, str) else dict(p) for p in policies or ()
        ]
        meta: dict[str, Any] = {
            "fingerprint": layout_fingerprint(pairs),
            "layout": pairs,
            "policies": records,
            "samples_seen": {str(k): int(v) for k, v in samples_seen.items()},
            "source": source,
            "notes": list(notes or ()),
        }
        if created is not None:
            meta["created"] = created
        try:
            plan = cls(metadata=PlanMetadata(**meta), prune=prune, merge=merge, expand=expand)
            # Normalise evidence (tuples → lists, …) so that a JSON round trip compares equal.
            return cls.model_validate(plan.to_json())
        except ValidationError as exc:
            raise PlanError(format_validation(exc, "plan")) from None

    # --- access -----------------------------------------------------------------------------
    def actions(self) -> Iterator[Action]:
        """All actions: prune, then merge/fold, then expand (each list in its own order)."""
        yield from self.prune
        yield from self.merge
        yield from self.expand

    @property
    def layout(self) -> Layout:
        return list(self.metadata.layout)

    @property
    def fingerprint(self) -> str:
        return self.metadata.fingerprint

    def summary(self) -> str:
        """Human-readable text, by the registered formatter (``engine.plan.summary``'s
        ``plan_summary``); ``ConfigurationError`` when none is registered."""
        if not _SUMMARY_FORMATTER:
            raise ConfigurationError(
                "Plan.summary: no summary formatter is registered (importing engine.plan or "
                "engine.plan.summary registers plan_summary)"
            )
        return _SUMMARY_FORMATTER[0](self)

    def check_fingerprint(self, layout_or_fingerprint: Any) -> None:
        """Raise ``FingerprintMismatchError`` unless the plan was made for this layout.

        Accepts a fingerprint string, ``[(layer, units), …]``, a ``{layer: units}`` mapping, or
        an object with ``.sizes`` / ``.layout``. With a layout, the message lists the layers
        whose sizes differ, that are missing, or that are in another order.
        """
        check_layout(self.fingerprint, self.layout, layout_or_fingerprint)

    # --- serialisation ----------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        """The plan as JSON-ready data; ``PlanError`` names a field holding NaN or infinity."""
        bad = non_finite_path(self.model_dump())
        if bad is not None:
            raise PlanError(
                f"plan: field {bad[0]!r} = {bad[1]}: not allowed in strict JSON "
                f"(replace non-finite evidence with null or leave it out)"
            )
        try:
            return self.model_dump(mode="json")
        except PydanticSerializationError as exc:
            raise PlanError(f"plan: evidence is not JSON data ({exc})") from None

    def dumps(self, indent: int | None = 2) -> str:
        """Strict JSON text (see ``to_json``)."""
        text = json.dumps(self.to_json(), indent=indent, allow_nan=False)
        return text + "\n" if indent is not None else text

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the plan atomically as strict JSON; returns the path."""
        try:
            text = self.dumps()
        except PlanError as exc:
            raise PlanError(f"{path}: {str(exc).removeprefix('plan: ')}") from None
        return atomic_write_text(path, text)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Plan:
        """Read and validate a plan file (or convert a file of a registered foreign format)."""
        return cls.loads(read_plan_text(path), source=str(Path(path)))

    @classmethod
    def loads(cls, text_or_data: str | bytes | Mapping[str, Any], *, source: str = "plan") -> Plan:
        """Validate a plan from JSON text or parsed data; ``source`` prefixes error messages.

        Types are checked strictly (``"3"`` or ``true`` is not an index), unknown fields and
        NaN/infinity are refused, and data of a registered foreign format (a SelfModifyingSLM
        recommendations file) is converted.
        """
        data = json_object(text_or_data, source)
        foreign = detect_plan_format(data)
        if foreign is not None:
            plan = foreign.convert(data, source=source)
            if not isinstance(plan, Plan):
                raise PlanError(
                    f"{source}: the {foreign.name!r} format converted to "
                    f"{type(plan).__name__}, not a Plan"
                )
            return plan
        if "format" in data and "version" not in data:
            raise PlanError(f"{source}: field 'version': missing (expected {VERSION})")
        if "format" not in data:
            others = "".join(f", or {f.description}" for f in plan_formats())
            raise PlanError(
                f"{source}: not a plan: no 'format' key (expected 'format': {FORMAT!r}{others})"
            )
        try:
            return cls.model_validate_json(strict_json_text(data, source), strict=True)
        except ValidationError as exc:
            raise PlanError(format_validation(exc, source)) from None
