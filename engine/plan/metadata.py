"""The plan's header records: format name and version, provenance metadata, policy records.

``PlanMetadata`` says where a plan comes from (time, library version, source, the policies that
proposed it, samples behind the evidence) and which layout it was made for (layer names and
unit counts, and their fingerprint).

>>> from engine.layout.model import layout_fingerprint
>>> meta = PlanMetadata(fingerprint=layout_fingerprint([("fc", 4)]), layout=[("fc", 4)],
...                     policies=[PolicyRecord(name="dead", settings={"threshold": 0.0})])
>>> meta.source, meta.layout, meta.policies[0]["name"]
('neuron-engine', [('fc', 4)], 'dead')
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, with_config
from typing_extensions import TypedDict

from engine._version import __version__

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
