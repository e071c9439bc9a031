"""Which code builds a checkpoint's model: always the user's choice, never the file's.

A checkpoint written by :func:`engine.checkpoint.save` records its model factory by **name**
(``"mlp"``, or ``"mypkg.models:make_mlp"`` in files written before this registry existed)
with JSON keyword arguments. The name is only a key: nothing is imported or called because a
file says so. The factory comes from the user, in one of two ways:

* a **registry** that the user's own code fills: ``register_model_factory("mlp", make_mlp)``,
  or ``@register_model_factory("mlp")`` on the function. A checkpoint naming ``"mlp"`` is
  then built with ``make_mlp(**kwargs)``; one naming anything else is refused.
* an **explicit factory**: ``engine.checkpoint.load(path, factory=make_mlp)``, or
  ``--model MODULE:FUNCTION`` on the command line (imported because the user typed it; see
  :func:`resolve_factory`).

Without either, loading raises :class:`~engine.errors.ModelFactoryError` naming the factory
the file asked for and how to provide it.

>>> import torch.nn as nn
>>> @register_model_factory("doc_mlp")
... def doc_mlp(width: int = 4) -> nn.Module:
...     return nn.Sequential(nn.Linear(3, width), nn.ReLU(), nn.Linear(width, 2))
>>> get_model_factory("doc_mlp") is doc_mlp, "doc_mlp" in registered_model_factories()
(True, True)
>>> try:
...     get_model_factory("subprocess:run")
... except ModelFactoryError as e:
...     print(e.name)
subprocess:run
>>> unregister_model_factory("doc_mlp") is doc_mlp
True
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from engine.errors import ConfigurationError, ModelFactoryError

__all__ = [
    "FACTORY_NAME_PATTERN",
    "ModelSpec",
    "build_model",
    "check_factory_name",
    "factory_name",
    "get_model_factory",
    "register_model_factory",
    "registered_model_factories",
    "resolve_factory",
    "spec_for",
    "unregister_model_factory",
]

#: A factory name: dotted identifiers, optionally ``left:right`` (the old ``module:function``
#: spelling, kept so that old checkpoints' names can be registered and looked up as they are).
FACTORY_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_.]*(:[A-Za-z_][A-Za-z0-9_.]*)?$"
_NAME = re.compile(FACTORY_NAME_PATTERN)
_MAX_NAME = 200

Factory = Callable[..., nn.Module]
F = TypeVar("F", bound=Callable[..., Any])

_FACTORIES: dict[str, Factory] = {}


def check_factory_name(name: object) -> str:
    """``name`` if it is a valid factory name, else :class:`ConfigurationError` naming it.

    >>> check_factory_name("mypkg.models:make_mlp")
    'mypkg.models:make_mlp'
    >>> try:
    ...     check_factory_name("os.system('rm -rf /')")
    ... except ConfigurationError as e:
    ...     print(str(e)[:60])
    invalid model factory name "os.system('rm -rf /')": expected
    """
    if not isinstance(name, str) or len(name) > _MAX_NAME or not _NAME.match(name):
        raise ConfigurationError(
            f"invalid model factory name {name!r}: expected dotted identifiers, optionally "
            f"'left:right' (e.g. 'mlp' or 'mypkg.models:make_mlp'), at most {_MAX_NAME} "
            f"characters"
        )
    return name


def _same_function(a: Any, b: Any) -> bool:
    """The same object, or the same definition met again (a re-run script, a reload)."""
    if a is b:
        return True
    keys = ("__module__", "__qualname__")
    return all(getattr(a, k, None) is not None for k in keys) and all(
        getattr(a, k) == getattr(b, k, None) for k in keys
    )


def register_model_factory(
    name: str, factory: Factory | None = None, *, replace: bool = False
) -> Any:
    """Register ``factory`` (a callable returning the unmodified ``nn.Module``) under ``name``,
    so that checkpoints naming ``name`` can be built. Used as a call, it returns ``factory``;
    without ``factory``, as a decorator. A name already taken by another function is refused
    unless ``replace=True`` (the same definition again, e.g. a re-run script, replaces it).

    To load checkpoints written before the registry, register the factory under the name
    their header holds (``python -m engine inspect CKPT`` prints it), e.g.
    ``register_model_factory("mypkg.models:make_mlp", make_mlp)``.

    >>> import torch.nn as nn
    >>> register_model_factory("doc_linear", nn.Linear) is nn.Linear
    True
    >>> @register_model_factory("doc_net")
    ... def doc_net(width=8):
    ...     return nn.Linear(4, width)
    >>> sorted(n for n in registered_model_factories() if n.startswith("doc_"))
    ['doc_linear', 'doc_net']
    >>> _ = unregister_model_factory("doc_linear"), unregister_model_factory("doc_net")
    """
    check_factory_name(name)

    def add(fn: F) -> F:
        if not callable(fn):
            raise ConfigurationError(
                f"model factory {name!r}: expected a callable returning an nn.Module, got "
                f"{type(fn).__name__}"
            )
        old = _FACTORIES.get(name)
        if old is not None and not replace and not _same_function(old, fn):
            raise ConfigurationError(
                f"model factory name {name!r} is already registered to {_describe(old)}; "
                f"pass replace=True to register {_describe(fn)} instead"
            )
        _FACTORIES[name] = fn
        return fn

    return add if factory is None else add(factory)


def unregister_model_factory(name: str) -> Factory | None:
    """Remove ``name`` from the registry; returns the factory it held (None if none)."""
    return _FACTORIES.pop(name, None)


def registered_model_factories() -> list[str]:
    """The registered factory names, sorted."""
    return sorted(_FACTORIES)


def get_model_factory(name: str, *, source: object = None) -> Factory:
    """The factory registered under ``name``: a plain lookup, nothing is imported.

    Raises :class:`ModelFactoryError` naming ``name`` (and ``source``, the file that asked
    for it, when given) and how to provide the factory."""
    factory = _FACTORIES.get(name)
    if factory is not None:
        return factory
    where = f"{source}: " if source is not None else ""
    known = ", ".join(repr(n) for n in registered_model_factories()[:12]) or "none"
    raise ModelFactoryError(
        name,
        f"{where}model factory {name!r} is not registered (registered: {known}); a file "
        f"never chooses code, so nothing was imported or called for it. "
        f"Provide it: on the command line with --model MODULE:FUNCTION (or --import MODULE, a "
        f"module of yours that registers it); in Python with "
        f"engine.checkpoint.register_model_factory({name!r}, fn) before loading, or factory=fn",
    )


def resolve_factory(text: str) -> Factory:
    """The factory the **user** typed (``--model``): a registered name, else
    ``MODULE:FUNCTION``, imported. Never call this with a string read from a file.

    >>> resolve_factory("torch.nn:Linear").__name__
    'Linear'
    """
    check_factory_name(text)
    if text in _FACTORIES:
        return _FACTORIES[text]
    module_name, colon, attr = text.partition(":")
    if not colon:
        known = ", ".join(repr(n) for n in registered_model_factories()[:12]) or "none"
        raise ConfigurationError(
            f"model factory {text!r} is not registered (registered: {known}); give "
            f"MODULE:FUNCTION, or --import a module of yours that registers it"
        )
    try:
        obj: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise ConfigurationError(f"model factory {text!r}: {exc}") from None
    if not callable(obj):
        raise ConfigurationError(f"model factory {text!r} is a {type(obj).__name__}, not callable")
    return obj


def factory_name(factory: Factory, default: str | None = None) -> str:
    """The name a checkpoint records for ``factory``: its registered name, else
    ``module:qualname`` when that is a valid name, else ``default``.

    >>> import torch.nn as nn
    >>> factory_name(nn.Linear)
    'torch.nn.modules.linear:Linear'
    """
    for name, registered in _FACTORIES.items():
        if registered is factory:
            return name
    module, qualname = getattr(factory, "__module__", None), getattr(factory, "__qualname__", None)
    candidate = f"{module}:{qualname}"
    if isinstance(module, str) and isinstance(qualname, str) and _NAME.match(candidate):
        return candidate
    if default is not None:
        return default
    raise ConfigurationError(
        f"cannot name the model factory {_describe(factory)} in the checkpoint: register it "
        f"with engine.checkpoint.register_model_factory(name, fn), or pass a ModelSpec"
    )


def build_model(factory: Factory, kwargs: Mapping[str, Any], name: str) -> nn.Module:
    """``factory(**kwargs)``, checked to be an ``nn.Module`` (errors name ``name``)."""
    try:
        model = factory(**kwargs)
    except TypeError as exc:
        shown = repr(dict(kwargs))
        shown = shown if len(shown) <= 200 else shown[:200] + "…"
        raise ConfigurationError(f"model factory {name!r} with {shown}: {exc}") from None
    if not isinstance(model, nn.Module):
        raise ConfigurationError(
            f"model factory {name!r} returned {type(model).__name__}, not nn.Module"
        )
    return model


class ModelSpec(BaseModel):
    """How to build the unmodified model: the factory's registered ``factory`` name and its
    JSON keyword arguments. The name is a key, never imported (``"mlp"``; files written
    before the registry hold ``"package.module:callable"``, a name like any other).

    >>> import torch.nn as nn
    >>> ModelSpec(factory="linear", kwargs={"in_features": 3, "out_features": 2}).build(
    ...     nn.Linear).out_features
    2
    """

    model_config = ConfigDict(extra="forbid")

    factory: str = Field(pattern=FACTORY_NAME_PATTERN, max_length=200)
    kwargs: dict[str, Any] = Field(default_factory=dict)

    def build(self, factory: Callable[..., nn.Module] | None = None, *, source: object = None
              ) -> nn.Module:  # fmt: skip
        """``factory(**kwargs)``: the given factory (the user's choice), else the one
        registered under ``self.factory``; :class:`ModelFactoryError` when there is none
        (``source``, the file that asked, is named in the message)."""
        if factory is None:
            factory = get_model_factory(self.factory, source=source)
        return build_model(factory, self.kwargs, self.factory)


def spec_for(
    checkpoint: object,
    spec: ModelSpec | None,
    recorded: ModelSpec | None,
    factory: Callable[..., nn.Module] | None,
    kwargs: dict[str, Any] | None,
) -> ModelSpec:
    """The spec to build ``checkpoint``'s model with and record in the output: ``spec``, else
    the ``recorded`` one of its header (renamed after the ``factory`` given, when that has a
    name), else one named after ``factory``; ``kwargs`` replace the spec's when given."""
    if spec is None:
        if recorded is not None:
            name = recorded.factory
            name = name if factory is None else factory_name(factory, default=name)
            spec = ModelSpec(factory=name, kwargs=recorded.kwargs)
        elif factory is not None:
            spec = ModelSpec(factory=factory_name(factory))
        else:
            raise ConfigurationError(
                f"{checkpoint}: a plain state dict names no model; give the factory that builds "
                f"the unmodified model: --model MODULE:FUNCTION (command line), or factory=fn "
                f"or a ModelSpec of a registered factory (Python)"
            )
    if kwargs is not None:
        spec = spec.model_copy(update={"kwargs": dict(kwargs)})
    return spec


def _describe(fn: Any) -> str:
    module, qualname = getattr(fn, "__module__", "?"), getattr(fn, "__qualname__", repr(fn))
    return f"{module}.{qualname}"
