"""The plan: versioned JSON listing prune / merge / expand actions for one model layout.

A plan carries the layout (layer names and unit counts) it was made for and its fingerprint,
the policies that proposed it, every action with its reason and evidence, and statistics
derived from the actions (units removed and added, widths before and after per layer).

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
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeInt,
    ValidationError,
    model_validator,
    with_config,
)
from pydantic_core import PydanticSerializationError
from typing_extensions import TypedDict

from engine._version import __version__
from engine.errors import FingerprintMismatchError, PlanError
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
from engine.plan.parsing import format_validation, non_finite_path, parse_json
from engine.plan.statistics import PlanStatistics

FORMAT = "neuron-engine.plan"
VERSION = 1

Layout = list[tuple[str, int]]


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


def _library_version() -> str:
    return __version__


@with_config(ConfigDict(extra="forbid"))
class PolicyRecord(TypedDict):
    """One policy that contributed actions: its registry name and the settings it ran with."""

    name: str
    settings: dict[str, Any]


class PlanMetadata(BaseModel):
    """Where a plan comes from and which layout it was made for."""

    model_config = ConfigDict(extra="forbid")

    created: str = Field(default_factory=_now, min_length=1, description="ISO 8601 time")
    library_version: str = Field(default_factory=_library_version)
    fingerprint: str = Field(min_length=1, description="layout_fingerprint(layout)")
    layout: list[tuple[str, NonNegativeInt]] = Field(
        description="tracked layer names and unit counts the plan was made for, in order"
    )
    policies: list[PolicyRecord] = Field(default_factory=list)
    samples_seen: dict[str, NonNegativeInt] = Field(
        default_factory=dict, description="observations per layer behind the evidence"
    )
    source: str = Field(default="neuron-engine", min_length=1)
    notes: list[str] = Field(default_factory=list)


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
        meta = self.metadata
        names = [name for name, _ in meta.layout]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"metadata.layout: layers {dupes} are listed more than once")
        expected = layout_fingerprint(meta.layout)
        if meta.fingerprint != expected:
            raise ValueError(
                f"metadata.fingerprint = {meta.fingerprint!r} does not match metadata.layout "
                f"(its fingerprint is {expected!r})"
            )
        sizes = dict(meta.layout)
        problems = []
        for section in ("prune", "merge", "expand"):
            for i, action in enumerate(getattr(self, section)):
                if action.layer not in sizes:
                    continue
                for field, values in _index_fields(action):
                    bad = sorted({v for v in values if v >= sizes[action.layer]})
                    if bad:
                        problems.append(
                            f"{section}.{i}.{field}: units {bad} out of range for layer "
                            f"{action.layer!r} ({sizes[action.layer]} units in metadata.layout)"
                        )
        if problems:
            raise ValueError("; ".join(problems))
        computed = PlanStatistics.compute(self.actions(), meta.layout)
        empty = [
            (n, w["after"])
            for n, w in computed.widths.items()
            if w["after"] < 1 and n in computed.layers_changed
        ]
        if empty:
            raise ValueError(
                "; ".join(
                    f"statistics.widths.{n}.after = {after}: the actions would leave layer "
                    f"{n!r} with fewer than 1 unit"
                    for n, after in empty
                )
            )
        if self.statistics is None:
            self.statistics = computed
        elif self.statistics != computed:
            given, want = self.statistics.model_dump(), computed.model_dump()
            pairs = [(k, given[k], want[k]) for k in want if k != "widths"]
            layers = list(dict.fromkeys([*want["widths"], *given["widths"]]))
            pairs += [
                (f"widths.{n}", given["widths"].get(n), want["widths"].get(n)) for n in layers
            ]
            diff = "; ".join(
                f"statistics.{k} = {json.dumps(a)}, the actions give {json.dumps(b)}"
                for k, a, b in pairs
                if a != b
            )
            raise ValueError(
                f"{diff} (statistics are derived: delete the 'statistics' key to recompute them)"
            )
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
        """
        pairs = _layout_pairs(layout)
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
        """Human-readable text (see ``engine.plan.summary.plan_summary``)."""
        from engine.plan.summary import plan_summary

        return plan_summary(self)

    def check_fingerprint(self, layout_or_fingerprint: Any) -> None:
        """Raise ``FingerprintMismatchError`` unless the plan was made for this layout.

        Accepts a fingerprint string, ``[(layer, units), …]``, a ``{layer: units}`` mapping, or
        an object with ``.sizes`` / ``.layout``. With a layout, the message lists the layers
        whose sizes differ, that are missing, or that are in another order.
        """
        mine = self.metadata.fingerprint
        if isinstance(layout_or_fingerprint, str):
            if layout_or_fingerprint != mine:
                raise FingerprintMismatchError(
                    f"plan was made for layout fingerprint {mine!r}, the model has "
                    f"{layout_or_fingerprint!r} (plan layout: {_layout_text(self.layout)})"
                )
            return
        theirs = _layout_pairs(layout_or_fingerprint)
        other = layout_fingerprint(theirs)
        if other == mine:
            return
        planned, actual = dict(self.layout), dict(theirs)
        problems = []
        for name, size in planned.items():
            if name not in actual:
                problems.append(f"layer {name!r}: in the plan, missing from the model")
            elif actual[name] != size:
                problems.append(
                    f"layer {name!r}: {size} units in the plan, {actual[name]} in the model"
                )
        extra = [name for name in actual if name not in planned]
        problems += [f"layer {name!r}: in the model, not in the plan" for name in extra]
        if not problems:
            problems = [f"same layers in another order: plan {list(planned)}, model {list(actual)}"]
        exc = FingerprintMismatchError(
            f"plan was made for layout {mine!r}, the model's layout is {other!r}: "
            + "; ".join(problems)
        )
        exc.plan_fingerprint, exc.model_fingerprint, exc.problems = mine, other, problems
        raise exc

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
        """Read and validate a plan file (or convert a SelfModifyingSLM recommendations file)."""
        p = Path(path)
        if not p.exists():
            raise PlanError(f"{p}: no such file")
        if not p.is_file():
            raise PlanError(f"{p}: not a file")
        try:
            text = p.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise PlanError(f"{p}: not valid JSON (not UTF-8 text: {exc.reason})") from None
        return cls.loads(text, source=str(p))

    @classmethod
    def loads(cls, text_or_data: str | bytes | Mapping[str, Any], *, source: str = "plan") -> Plan:
        """Validate a plan from JSON text or parsed data; ``source`` prefixes error messages.

        Types are checked strictly (``"3"`` or ``true`` is not an index), unknown fields and
        NaN/infinity are refused, and a SelfModifyingSLM recommendations file is converted.
        """
        if isinstance(text_or_data, (str, bytes, bytearray)):
            data = parse_json(text_or_data, source)
        else:
            data = text_or_data
        if not isinstance(data, Mapping):
            raise PlanError(
                f"{source}: expected a JSON object at the top level, got {type(data).__name__}"
            )
        data = dict(data)
        from engine.plan.legacy import convert_selfmodifying_slm, looks_like_selfmodifying_slm

        if looks_like_selfmodifying_slm(data):
            return convert_selfmodifying_slm(data, source=source)
        if "format" in data and "version" not in data:
            raise PlanError(f"{source}: field 'version': missing (expected {VERSION})")
        if "format" not in data:
            raise PlanError(
                f"{source}: not a plan: no 'format' key (expected 'format': {FORMAT!r}, or a "
                f"SelfModifyingSLM recommendations file with 'prune'/'merge'/'expand' lists)"
            )
        bad = non_finite_path(data)
        if bad is not None:
            raise PlanError(f"{source}: field {bad[0]!r} = {bad[1]}: not allowed in a plan")
        try:
            text = json.dumps(data, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise PlanError(f"{source}: not JSON data ({exc})") from None
        try:
            return cls.model_validate_json(text, strict=True)
        except ValidationError as exc:
            raise PlanError(format_validation(exc, source)) from None


# --- helpers -------------------------------------------------------------------------------
def _index_fields(action: Action) -> list[tuple[str, list[int]]]:
    """``(field name, local indices)`` for every index field of an action."""
    if isinstance(action, PruneAction):
        return [("local_indices", list(action.local_indices))]
    if isinstance(action, MergeAction):
        return [("keep", [action.keep]), ("remove", [action.remove])]
    if isinstance(action, FoldAction):
        return [("keep", list(action.keep)), ("remove", list(action.remove))]
    return [("source_indices", list(action.source_indices or ()))]


def _layout_pairs(layout: Any) -> Layout:
    """``[(name, units), …]`` from a list of pairs, a mapping, a ModelLayout or a snapshot."""
    if isinstance(layout, str):
        raise TypeError("expected a layout ([(layer, units), …]), got a string")
    sizes = getattr(layout, "sizes", None)
    if sizes is not None and not callable(sizes):
        layout = sizes
    else:
        inner = getattr(layout, "layout", None)
        if inner is not None and not callable(inner):
            layout = inner
    items = layout.items() if isinstance(layout, Mapping) else layout
    try:
        return [(str(name), int(size)) for name, size in items]
    except (TypeError, ValueError):
        raise TypeError(
            f"expected a layout ([(layer, units), …], a mapping, or an object with .sizes or "
            f".layout), got {type(layout).__name__}"
        ) from None


def _layout_text(layout: Layout, limit: int = 8) -> str:
    shown = ", ".join(f"{name}={size}" for name, size in layout[:limit])
    return shown + (f", … ({len(layout)} layers)" if len(layout) > limit else "")
