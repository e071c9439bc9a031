"""The unit spaces a budget plan may shrink, and how many units each one gives up.

A *space* is a tracked layer, or a residual-coupled group of them (``LayerLayout.coupled``:
outputs added into one stream, so unit ``i`` of every member is one channel). A group is
shrunk by one action on its *representative* (its first member in layout order): surgery
removes the units from every member, and ``ModelLayout.params_after`` counts the group's
parameters once when the representative alone is listed (:func:`collapsed`).

Allocation (``counts_uniform``, ``counts_by_cost``) turns a parameter target into a count of
units per space: one common fraction of every space (bisection), or the globally cheapest
removal steps first, each step's cost being its greedy loss increase relative to the space's
output energy, per parameter saved.

>>> from engine.layout import LayerLayout, ModelLayout
>>> layout = ModelLayout({"a": LayerLayout("a", "Linear", 4, [0, 1, 2, 3], coupled=["b"]),
...                       "b": LayerLayout("b", "Linear", 4, [4, 5, 6, 7], coupled=["a"]),
...                       "c": LayerLayout("c", "Linear", 4, [8, 9, 10, 11])})
>>> collapsed(layout, {"a": 2, "b": 2, "c": 1})
{'a': 2, 'c': 1}
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch
from torch import Tensor

from engine.layout import ModelLayout

__all__ = ["Space", "collapsed", "counts_by_cost", "counts_uniform", "scaled_counts"]


@dataclass
class Space:
    """One layer, or one coupled group, as the budget sees it.

    ``free``: the local indices no earlier action claimed; ``fixed``: positions in ``free``
    that must stay (reserved by an earlier action or too young); ``cap``: how many units may
    go; ``fraction``: the share asked for in the fraction modes. Scoring fills ``cov``
    (ridge-regularised, fold spaces), ``gram`` (``VᵀV``), ``energy`` (``G ∘ Σ`` summed over
    the members, prune spaces), ``total`` (output energy) and ``ridge``.
    """

    rep: str
    members: list[str]
    units: int
    free: list[int]
    fixed: list[int]
    cap: int
    params_per_unit: int
    fraction: float = 0.0
    cov: Tensor | None = None
    raw_cov: Tensor | None = None
    gram: Tensor | None = None
    energy: Tensor | None = None
    total: float = 0.0
    ridge: float = 0.0
    order: list[int] = field(default_factory=list)
    steps: Tensor | None = None

    @property
    def coupled(self) -> bool:
        return len(self.members) > 1


def collapsed(layout: ModelLayout, removed: Mapping[str, int]) -> dict[str, int]:
    """``removed`` with one entry per coupled group (on its first member in layout order,
    the largest count of the group): what ``ModelLayout.params_after`` expects."""
    out: dict[str, int] = {}
    seen: set[str] = set()
    for name, layer in layout.layers.items():
        if name in seen:
            continue
        group = [n for n in layout.layers if n == name or n in layer.coupled]
        seen.update(group)
        k = max((removed.get(n, 0) for n in group), default=0)
        if k or name in removed:
            out[name] = k
    return out


def _params(layout: ModelLayout, base: Mapping[str, int], spaces, counts) -> int:
    removed = dict(base)
    for space, k in zip(spaces, counts):
        removed[space.rep] = removed.get(space.rep, 0) + int(k)
    return layout.params_after(removed)


def counts_uniform(
    spaces: list[Space],
    layout: ModelLayout,
    base: Mapping[str, int],
    done: Mapping[str, int],
    target: int,
    bound: bool = False,
) -> list[int]:
    """One common fraction ``f`` of every space (bisection): ``round(f·units)`` minus what
    ``done[rep]`` already removed, within each space's cap, the smallest with
    ``params_after ≤ target`` (all caps when even that is not enough). With ``bound`` the
    target is a floor not to cross: the largest ``f`` with ``params_after ≥ target``.

    >>> from engine.layout import LayerLayout, ModelLayout
    >>> layout = ModelLayout({"a": LayerLayout("a", "Linear", 10, list(range(10)),
    ...                                        params_per_unit=5)}, total_params=100)
    >>> space = Space("a", ["a"], 10, list(range(10)), [], 8, 5)
    >>> counts_uniform([space], layout, {}, {}, 80), counts_uniform([space], layout, {}, {}, 82)
    ([4], [4])
    >>> counts_uniform([space], layout, {}, {}, 82, bound=True)
    [3]
    """

    def at(f: float) -> list[int]:
        return [max(0, min(s.cap, round(f * s.units) - done.get(s.rep, 0))) for s in spaces]

    lo, hi = 0.0, 1.0
    for _ in range(40):
        mid = (lo + hi) / 2
        params = _params(layout, base, spaces, at(mid))
        if params < target or (params == target and not bound):
            hi = mid
        else:
            lo = mid
    return at(lo if bound else hi)


def scaled_counts(
    spaces: list[Space],
    layout: ModelLayout,
    base: Mapping[str, int],
    wanted: list[int],
    floor: int,
) -> list[int]:
    """``wanted`` scaled down by one common factor until ``params_after ≥ floor`` (the
    bounded step of the fraction modes).

    >>> from engine.layout import LayerLayout, ModelLayout
    >>> layout = ModelLayout({"a": LayerLayout("a", "Linear", 10, list(range(10)),
    ...                                        params_per_unit=5)}, total_params=100)
    >>> space = Space("a", ["a"], 10, list(range(10)), [], 8, 5)
    >>> scaled_counts([space], layout, {}, [8], 0), scaled_counts([space], layout, {}, [8], 75)
    ([8], [5])
    """

    def at(s: float) -> list[int]:
        return [int(s * k + 0.5) for k in wanted]

    if _params(layout, base, spaces, wanted) >= floor:
        return wanted
    lo, hi = 0.0, 1.0
    for _ in range(40):
        mid = (lo + hi) / 2
        if _params(layout, base, spaces, at(mid)) >= floor:
            lo = mid
        else:
            hi = mid
    return at(lo)


def counts_by_cost(
    spaces: list[Space],
    layout: ModelLayout,
    base: Mapping[str, int],
    target: int,
    order_of: Callable[[list[Space]], None],
    bound: bool = False,
) -> list[int]:
    """The cheapest removal steps across spaces until ``params_after ≤ target`` (with
    ``bound``: as many as keep ``params_after ≥ target``, a floor not to cross).

    ``order_of(spaces)`` fills each space's greedy ``order`` and ``steps`` up to its cap.
    A step's key is ``cost / total / params_per_unit`` (relative loss increase per parameter
    saved); a space's keys are made non-decreasing (running maximum), so merging them keeps
    each space's greedy order, and the shortest merged prefix that meets the target wins
    (``params_after`` is exact, pairs of shrinking layers included).

    >>> from engine.layout import LayerLayout, ModelLayout
    >>> layout = ModelLayout({n: LayerLayout(n, "Linear", 4, [0, 1, 2, 3], params_per_unit=10)
    ...                       for n in ("a", "b")}, total_params=80)
    >>> a, b = (Space(n, [n], 4, [0, 1, 2, 3], [], 3, 10, total=1.0) for n in ("a", "b"))
    >>> def orders(spaces):  # steps of "a" cost 1, 2, 3; of "b" 1.5 each
    ...     a.steps, b.steps = torch.tensor([1.0, 2.0, 3.0]), torch.full((3,), 1.5)
    >>> counts_by_cost([a, b], layout, {}, 50, orders)
    [1, 2]
    """
    usable = [s for s in spaces if s.params_per_unit > 0 and s.cap > 0]
    order_of(usable)
    keys, owner = [], []
    for k, s in enumerate(usable):
        if s.steps is None or not len(s.steps):
            continue
        scale = s.total * s.params_per_unit
        rel = s.steps.clamp_min(0) / scale if scale > 0 else s.steps.clamp_min(0)
        keys.append(torch.cummax(rel, 0).values)
        owner.append(torch.full((len(rel),), k, dtype=torch.long))
    counts = {id(s): 0 for s in spaces}
    if keys:
        key, who = torch.cat(keys), torch.cat(owner)
        rank = torch.sort(key, stable=True).indices
        who = who[rank]

        def prefix(n: int) -> list[int]:
            per = torch.bincount(who[:n], minlength=len(usable)).tolist()
            return per

        lo, hi = 0, len(who)
        if bound:  # the longest prefix that stays at or above the floor
            while lo < hi:
                mid = (lo + hi + 1) // 2
                if _params(layout, base, usable, prefix(mid)) >= target:
                    lo = mid
                else:
                    hi = mid - 1
        elif _params(layout, base, usable, prefix(hi)) <= target:
            while lo < hi:  # the shortest prefix that meets the target
                mid = (lo + hi) // 2
                if _params(layout, base, usable, prefix(mid)) <= target:
                    hi = mid
                else:
                    lo = mid + 1
        for s, k in zip(usable, prefix(hi)):
            counts[id(s)] = k
    return [counts[id(s)] for s in spaces]
