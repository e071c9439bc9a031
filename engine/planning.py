"""From statistics and a layout to a plan, through a planner the engine is handed.

The engine decides *how* a plan is made (snapshot and layout in, a versioned ``Plan`` out);
*what* goes in it is a planner's business. A planner is any object with a ``decide`` method
(the :class:`Planner` protocol). The ``policies`` package provides the default one: it
registers itself when imported and is also declared as the ``neuron_engine.planners`` entry
point ``default``, so ``engine.propose()`` finds it without the caller importing it. The
engine never imports ``policies``: the design has policies import engine, not the reverse.

>>> from engine.layout import ModelLayout
>>> from engine.stats.snapshot import StatsSnapshot
>>> class KeepAll:
...     def decide(self, snapshot, layout, config=None, *, ages=None):
...         return Decision(actions=[], policies=[{"name": "keep_all", "settings": {}}])
>>> plan = make_plan(StatsSnapshot({}), ModelLayout({}), planner=KeepAll())
>>> plan.metadata.policies[0]["name"], plan.actions() is not None
('keep_all', True)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, Protocol, runtime_checkable

from engine.errors import ConfigurationError
from engine.layout.model import ModelLayout
from engine.plan import Plan
from engine.plan.actions import Action
from engine.stats.snapshot import StatsSnapshot

__all__ = [
    "ENTRY_POINT_GROUP",
    "Decision",
    "Planner",
    "get_planner",
    "make_plan",
    "register_planner",
]

ENTRY_POINT_GROUP = "neuron_engine.planners"
DEFAULT = "default"


@dataclass
class Decision:
    """What a planner decided: the actions, the policies that ran (``{"name", "settings"}``
    each, recorded in the plan's metadata) and notes for the reader of the plan."""

    actions: list[Action]
    policies: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@runtime_checkable
class Planner(Protocol):
    """Turns statistics and a layout into actions; never touches modules."""

    def decide(
        self,
        snapshot: StatsSnapshot,
        layout: ModelLayout,
        config: Any = None,
        *,
        ages: Mapping[int, int] | None = None,
    ) -> Decision:
        """``config`` is the planner's own (for ``policies``: a YAML path, a mapping, a
        ``PolicyConfig`` or a list of policies; None: its defaults). ``ages`` maps neuron ID →
        epochs since it was grown."""


_PLANNERS: dict[str, Planner] = {}


def register_planner(planner: Planner, name: str = DEFAULT) -> Planner:
    """Make ``planner`` available by ``name`` (``"default"``: the one ``propose`` uses).

    >>> class Nothing:
    ...     def decide(self, snapshot, layout, config=None, *, ages=None):
    ...         return Decision([])
    >>> _ = register_planner(Nothing(), "nothing"); type(get_planner("nothing")).__name__
    'Nothing'
    """
    if not isinstance(planner, Planner):
        raise ConfigurationError(
            f"{type(planner).__name__} is not a planner: it needs a "
            f"decide(snapshot, layout, config=None, *, ages=None) method"
        )
    _PLANNERS[name] = planner
    return planner


def get_planner(name: str = DEFAULT) -> Planner:
    """The planner registered as ``name``; if none is, the installed entry point of that name
    in the ``neuron_engine.planners`` group (package metadata, never a user's file)."""
    if name not in _PLANNERS:
        found = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == name]
        if found:
            loaded = found[0].load()
            if name not in _PLANNERS:  # importing the package may have registered it
                register_planner(loaded() if isinstance(loaded, type) else loaded, name)
    try:
        return _PLANNERS[name]
    except KeyError:
        known = sorted(_PLANNERS)
        raise ConfigurationError(
            f"no planner named {name!r} (registered: {known or 'none'}): install the "
            f"project with its policies package, import policies, or pass planner=…"
        ) from None


def make_plan(
    snapshot: StatsSnapshot,
    layout: ModelLayout,
    config: Any = None,
    *,
    planner: Planner | None = None,
    ages: Mapping[int, int] | None = None,
    notes: list[str] | None = None,
) -> Plan:
    """A plan for ``layout`` from ``snapshot``: the planner's decision, dated with the layout's
    fingerprint, the policies that ran and the samples each layer had seen."""
    planner = get_planner() if planner is None else planner
    decision = planner.decide(snapshot, layout, config, ages=ages)
    return Plan.create(
        decision.actions,
        layout,
        policies=decision.policies,
        samples_seen=snapshot.samples_seen,
        notes=[*(notes or []), *decision.notes],
    )
