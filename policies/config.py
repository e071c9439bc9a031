"""Policy configuration: YAML (``safe_load``) validated into policies and guard settings.

>>> config = load_config(DEFAULT_CONFIG)
>>> [p.name for p in config.policies], config.guards.min_width
(['dead', 'low_activity', 'redundancy', 'saturation'], 4)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from engine.errors import ConfigurationError
from policies.base import POLICIES, Policy
from policies.guards import GuardSettings

DEFAULT_CONFIG = Path(__file__).with_name("default.yaml")


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key given twice in one mapping (the last one would
    silently win)."""

    def construct_mapping(self, node, deep=False):
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                first = seen.get(key)
            except TypeError:  # an unhashable key: the base class reports it
                continue
            if first is not None:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (first given at line {first})",
                    key_node.start_mark,
                )  # fmt: skip
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    name: str
    enabled: bool = True
    settings: dict[str, Any] = Field(default_factory=dict)


class _ConfigFile(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    version: Literal[1] = 1
    guards: GuardSettings = Field(default_factory=GuardSettings)
    policies: list[_Entry] = Field(default_factory=list)


@dataclass
class PolicyConfig:
    """Validated configuration: the policies to run, in order, and the shared guard settings."""

    policies: list[Policy]
    guards: GuardSettings

    def describe(self) -> list[dict[str, Any]]:
        guards = {"name": "guards", "settings": self.guards.model_dump(mode="json")}
        return [p.describe() for p in self.policies] + [guards]


def _first_error(exc: ValidationError, where: str, prefix: str = "") -> ConfigurationError:
    err = exc.errors()[0]
    path = ".".join(str(p) for p in (*([prefix] if prefix else []), *err["loc"]))
    value = err.get("input")
    shown = "" if isinstance(value, dict) else f" = {value!r}"
    return ConfigurationError(f"{where}: {path}{shown}: {err['msg']}")


def parse_config(data: Any, where: str = "config") -> PolicyConfig:
    """Validate an already-parsed mapping (e.g. from YAML or built in code)."""
    if not isinstance(data, Mapping):
        raise ConfigurationError(f"{where}: expected a mapping at the top level, got {data!r}")
    try:
        raw = _ConfigFile.model_validate(dict(data))
    except ValidationError as exc:
        raise _first_error(exc, where) from None
    policies: list[Policy] = []
    for i, entry in enumerate(raw.policies):
        cls = POLICIES.get(entry.name)
        if cls is None:
            raise ConfigurationError(
                f"{where}: policies.{i}.name = {entry.name!r}: unknown policy; known policies "
                f"are {sorted(POLICIES)}"
            )
        if not entry.enabled:
            continue
        try:
            settings = cls.Settings.model_validate(entry.settings)
        except ValidationError as exc:
            raise _first_error(exc, where, f"policies.{i}.settings ({entry.name})") from None
        policies.append(cls(settings))
    return PolicyConfig(policies, raw.guards)


def load_config(path: str | Path | None = None) -> PolicyConfig:
    """Load and validate a YAML policy file (``policies/default.yaml`` when None)."""
    path = Path(path) if path is not None else DEFAULT_CONFIG
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigurationError(f"{path}: no such policy configuration file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigurationError(f"{path}: cannot read ({exc})") from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader subclass: safe
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or ""
        detail = f": {problem}" if problem.startswith("duplicate key") else ""
        raise ConfigurationError(f"{path}: not valid YAML{where}{detail}") from None
    return parse_config(data, str(path))
