"""The surgery change log: one JSON line per applied action, appended as surgery happens.

Each line says when (step, epoch, time), what (kind, layer, reason, policy), which neuron IDs
were removed, merged (survivor → absorbed IDs) or added (with parents), how shapes and the
parameter count changed, the measured output change, and which weight snapshots were taken
around it. A line is written with one ``write`` on a file opened for appending, then synced.

>>> import tempfile, pathlib
>>> from engine.surgery.records import ActionRecord, SurgeryRecord
>>> act = ActionRecord(index=0, label="prune[0]", kind="prune", layer="fc1", removed_ids=[3],
...                    width_before=8, width_after=7, params_before=100, params_after=90)
>>> rec = SurgeryRecord(fingerprint_before="a", fingerprint_after="b", step=5, time=0.0,
...                     params_before=100, params_after=90, widths_before={"fc1": 8},
...                     widths_after={"fc1": 7}, actions=[act])
>>> log = ChangeLog(pathlib.Path(tempfile.mkdtemp()) / "changes.jsonl")
>>> _ = log.append(rec)
>>> [(e.step, e.kind, e.removed_ids, e.params_delta) for e in log.read()]
[(5, 'prune', [3], -10)]
>>> lineage_from_record(rec)
{3: {'event': 'removed', 'layer': 'fc1'}}
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from engine.io import writes_here
from engine.surgery.records import SurgeryRecord
from engine.weights.errors import ChangeLogError
from engine.weights.jsonable import to_jsonable


class ChangeEntry(BaseModel):
    """One line of the change log (one applied action)."""

    model_config = ConfigDict(extra="forbid")

    step: int | None = None
    epoch: int | None = None
    time: float
    plan_fingerprint_before: str
    plan_fingerprint_after: str
    action_index: int
    label: str
    kind: str
    layer: str
    reason: str = ""
    policy: str = "manual"
    removed_ids: list[int] = Field(default_factory=list)
    merged_into: dict[int, list[int]] = Field(default_factory=dict)
    added_ids: list[int] = Field(default_factory=list)
    parents: list[int | None] = Field(default_factory=list)
    width_before: int
    width_after: int
    shapes_before: dict[str, list[int]] = Field(default_factory=dict)
    shapes_after: dict[str, list[int]] = Field(default_factory=dict)
    params_before: int
    params_after: int
    params_delta: int
    max_output_change: float | None = None
    max_output_change_eval: float | None = None
    exact_expected: bool = False
    note: str = ""
    snapshot_before: int | None = Field(default=None, description="seq of the weight snapshot")
    snapshot_after: int | None = None
    trial: str | None = Field(
        default=None, description="'accepted' or 'rolled_back' for a trial surgery, else None"
    )
    trial_loss_before: float | None = Field(default=None, description="held-out loss before")
    trial_loss_after: float | None = Field(default=None, description="held-out loss after")


def _finite(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else None


def entries_from_record(
    record: SurgeryRecord, snapshot_before: int | None = None, snapshot_after: int | None = None
) -> list[ChangeEntry]:
    """One :class:`ChangeEntry` per action of an applied plan."""
    out = []
    for act in record.actions:
        data = act.model_dump(exclude={"index"})
        data |= {
            "step": record.step,
            "epoch": record.epoch,
            "time": record.time,
            "plan_fingerprint_before": record.fingerprint_before,
            "plan_fingerprint_after": record.fingerprint_after,
            "action_index": act.index,
            "params_delta": act.params_delta,
            "snapshot_before": snapshot_before,
            "snapshot_after": snapshot_after,
        }
        trial = record.metadata.get("trial")
        if isinstance(trial, dict):
            data |= {
                "trial": "accepted" if trial.get("accepted") else "rolled_back",
                "trial_loss_before": _finite(trial.get("loss_before")),
                "trial_loss_after": _finite(trial.get("loss_after")),
            }
        out.append(ChangeEntry.model_validate(to_jsonable(data) | {"merged_into": act.merged_into}))
    return out


def lineage_from_record(record: SurgeryRecord) -> dict[int, dict[str, Any]]:
    """Neuron fates recorded by a plan: removed, merged into a survivor, grown from a parent."""
    fates: dict[int, dict[str, Any]] = {}
    for act in record.actions:
        for nid in act.removed_ids:
            fates[int(nid)] = {"event": "removed", "layer": act.layer}
        for into, absorbed in act.merged_into.items():
            for nid in absorbed:
                fates[int(nid)] = {"event": "merged", "layer": act.layer, "into": int(into)}
        parents = list(act.parents) + [None] * (len(act.added_ids) - len(act.parents))
        for nid, parent in zip(act.added_ids, parents):
            fates[int(nid)] = {"event": "grown", "layer": act.layer, "parent": parent}
    return fates


class ChangeLog:
    """An append-only JSON-lines file of :class:`ChangeEntry`."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def append(
        self,
        record: SurgeryRecord,
        snapshot_before: int | None = None,
        snapshot_after: int | None = None,
    ) -> list[ChangeEntry]:
        """Append one line per action of ``record``; returns the entries written."""
        entries = entries_from_record(record, snapshot_before, snapshot_after)
        if not entries or not writes_here():  # under torch.distributed: rank 0 writes
            return entries
        text = "".join(e.model_dump_json() + "\n" for e in entries).encode("utf-8")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        try:
            os.write(fd, text)
            os.fsync(fd)
        finally:
            os.close(fd)
        return entries

    def read(self) -> list[ChangeEntry]:
        """Every entry, in the order written (an absent file is an empty log)."""
        if not self.path.is_file():
            return []
        out = []
        lines = self.path.read_text(encoding="utf-8").splitlines()
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                out.append(ChangeEntry.model_validate(json.loads(line)))
            except (json.JSONDecodeError, ValidationError) as exc:
                detail = str(exc).splitlines()[0]
                raise ChangeLogError(
                    f"{self.path}:{number}: not a change-log entry ({detail})"
                ) from None
        return out
