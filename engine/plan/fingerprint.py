"""Matching a plan's layout against a model's: layouts in any accepted shape, and the
``FingerprintMismatchError`` that names each layer that differs.

>>> layout_pairs({"fc1": 8, "fc2": 4})
[('fc1', 8), ('fc2', 4)]
>>> from engine.layout.model import layout_fingerprint
>>> check_layout(layout_fingerprint([("fc", 4)]), [("fc", 4)], {"fc": 5})
Traceback (most recent call last):
...
engine.errors.FingerprintMismatchError: plan was made for layout ... layer 'fc': 4 units in ...
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from engine.errors import FingerprintMismatchError
from engine.layout.model import layout_fingerprint
from engine.plan.metadata import Layout


def layout_pairs(layout: Any) -> Layout:
    """``[(name, units), …]`` from a list of pairs, a mapping, a ModelLayout or a snapshot.

    An object with ``.sizes`` (``ModelLayout``) or ``.layout`` (``StatsSnapshot``) gives that
    attribute; anything else that is not pairs raises ``TypeError``.

    >>> layout_pairs([("fc", 3)]), layout_pairs({"fc": 3})
    ([('fc', 3)], [('fc', 3)])
    >>> layout_pairs("fc")
    Traceback (most recent call last):
    ...
    TypeError: expected a layout ([(layer, units), …]), got a string
    """
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


def layout_text(layout: Layout, limit: int = 8) -> str:
    """Short text of a layout: the first ``limit`` layers as ``name=units``.

    >>> layout_text([("a", 1), ("b", 2), ("c", 3)], limit=2)
    'a=1, b=2, … (3 layers)'
    """
    shown = ", ".join(f"{name}={size}" for name, size in layout[:limit])
    return shown + (f", … ({len(layout)} layers)" if len(layout) > limit else "")


def check_layout(fingerprint: str, planned: Layout, layout_or_fingerprint: Any) -> None:
    """Raise ``FingerprintMismatchError`` unless a plan made for ``planned`` (whose fingerprint
    is ``fingerprint``) fits ``layout_or_fingerprint``.

    Accepts a fingerprint string or any layout ``layout_pairs`` accepts. With a layout, the
    message (and the error's ``problems``) lists the layers whose sizes differ, that are
    missing, or that are in another order.

    >>> check_layout(layout_fingerprint([("fc", 4)]), [("fc", 4)], [("fc", 4)]) is None
    True
    """
    if isinstance(layout_or_fingerprint, str):
        if layout_or_fingerprint != fingerprint:
            raise FingerprintMismatchError(
                f"plan was made for layout fingerprint {fingerprint!r}, the model has "
                f"{layout_or_fingerprint!r} (plan layout: {layout_text(planned)})"
            )
        return
    theirs = layout_pairs(layout_or_fingerprint)
    other = layout_fingerprint(theirs)
    if other == fingerprint:
        return
    mine, actual = dict(planned), dict(theirs)
    problems = []
    for name, size in mine.items():
        if name not in actual:
            problems.append(f"layer {name!r}: in the plan, missing from the model")
        elif actual[name] != size:
            problems.append(
                f"layer {name!r}: {size} units in the plan, {actual[name]} in the model"
            )
    extra = [name for name in actual if name not in mine]
    problems += [f"layer {name!r}: in the model, not in the plan" for name in extra]
    if not problems:
        problems = [f"same layers in another order: plan {list(mine)}, model {list(actual)}"]
    exc = FingerprintMismatchError(
        f"plan was made for layout {fingerprint!r}, the model's layout is {other!r}: "
        + "; ".join(problems)
    )
    exc.plan_fingerprint, exc.model_fingerprint, exc.problems = fingerprint, other, problems
    raise exc
