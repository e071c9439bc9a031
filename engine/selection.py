"""Choosing which modules to track: automatic discovery with include/exclude filters.

A filter is a layer name, an ``fnmatch`` pattern (``"encoder.*"``), a module type, or a list of
those.

>>> import torch.nn as nn
>>> m = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Conv1d(1, 2, 1))
>>> list(discover_layers(m))
['0', '2']
>>> list(discover_layers(m, exclude=nn.Conv1d))
['0']
"""

from __future__ import annotations

from collections.abc import Iterable
from fnmatch import fnmatchcase

from torch import nn

from engine.errors import ConfigurationError
from engine.layers import LayerKind, layer_kind_for

Selector = str | type | Iterable[str | type] | None


def _items(selector: Selector) -> list[str | type]:
    if selector is None:
        return []
    if isinstance(selector, (str, type)):
        return [selector]
    try:
        items = list(selector)
    except TypeError:
        raise ConfigurationError(
            f"layer selector {selector!r} must be a name, a pattern, a module type or a list "
            f"of those"
        ) from None
    for item in items:
        if not isinstance(item, (str, type)):
            raise ConfigurationError(
                f"layer selector item {item!r} must be a name, a pattern or a module type"
            )
    return items


def matches(name: str, module: nn.Module, selector: Selector) -> bool:
    """True if ``name``/``module`` matches any item of ``selector``."""
    for item in _items(selector):
        if isinstance(item, type):
            if isinstance(module, item):
                return True
        elif name == item or fnmatchcase(name, item):
            return True
    return False


def discover_layers(
    model: nn.Module, include: Selector = None, exclude: Selector = None
) -> dict[str, tuple[nn.Module, LayerKind]]:
    """Tracked layers of ``model`` in module order, as ``{name: (module, kind)}``.

    Modules inside a tracked module (the projections of ``nn.MultiheadAttention``) are not
    tracked separately: their parent's forward does not call them as modules.
    """
    found: dict[str, tuple[nn.Module, LayerKind]] = {}
    for name, module in _all_trackable(model):
        kind = layer_kind_for(module)
        if include is not None and not matches(name, module, include):
            continue
        if exclude is not None and matches(name, module, exclude):
            continue
        found[name] = (module, kind)
    check_selector(model, include, "include")
    check_selector(model, exclude, "exclude")
    return found


def _all_trackable(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Every module the engine could track, skipping modules inside a trackable one."""
    out: list[tuple[str, nn.Module]] = []
    for name, module in model.named_modules():
        if not name or any(name.startswith(n + ".") for n, _ in out):
            continue
        if layer_kind_for(module) is not None:
            out.append((name, module))
    return out


def check_selector(model: nn.Module, selector: Selector, what: str) -> None:
    """Refuse names and patterns that match no trackable layer (typos fail loudly)."""
    trackable = _all_trackable(model)
    for item in _items(selector):
        if isinstance(item, str) and not any(
            n == item or fnmatchcase(n, item) for n, _ in trackable
        ):
            shown = ", ".join(repr(n) for n, _ in trackable) or "none"
            raise ConfigurationError(
                f"{what}={item!r} matches no trackable layer; trackable layers are: {shown}"
            )
