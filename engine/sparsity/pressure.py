"""``SparsityPressure``: a loss term, off unless added, that makes units removable.

Two kinds:

* ``"group_lasso"``: ``strength · Σ_layers √(group size) · Σ_units ‖group‖₂`` where a unit's
  group is its incoming row (Linear) or filter (Conv) and its bias, and with
  ``outgoing=True`` also its column in the Linear that reads it (Scardapane et al. 2017).
  A unit driven to a zero group outputs a constant (``act(0)``), so the ``dead`` policy
  removes it exactly (its constant folded into the consumer's bias); with ``outgoing=True``
  nothing downstream reads it any more.
* ``"bn_l1"``: ``strength · Σ |γ|`` over BatchNorm layers (network slimming, Liu et al. 2017).
  Use this for Conv → BatchNorm layers: BatchNorm undoes any scale of the filter, so a group
  lasso on the filter alone shrinks weights without making the channel removable.

Layers are looked up by name on every call and every shape is read from the live modules,
so the penalty stays right after surgery resizes, grows or prunes the layers. No hooks, no
host sync; the result is a 0-d tensor on the parameters' device.

>>> import torch, torch.nn as nn
>>> model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
>>> pressure = SparsityPressure(model, strength=1e-3)
>>> [(g.layer, g.units, g.group_size) for g in pressure.groups]  # the output layer is left out
[('0', 8, 5)]
>>> loss = nn.functional.cross_entropy(model(torch.randn(16, 4)), torch.randint(0, 3, (16,)))
>>> (loss + pressure()).backward()
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from fnmatch import fnmatchcase

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from engine.errors import ConfigurationError
from engine.layout import ModelLayout
from engine.observe import plan_observations
from engine.selection import Selector, check_selector, discover_layers, matches
from engine.sparsity.norms import (
    GROUP_TYPES,
    _check_strength,
    bn_l1_penalty,
    group_lasso_penalty,
    group_size,
    incoming_rows,
    unit_group_norms,
)

__all__ = ["KINDS", "PenaltyGroup", "SparsityPressure", "sparsity_penalty"]

KINDS = ("group_lasso", "bn_l1")


@dataclass(frozen=True)
class PenaltyGroup:
    """One penalised layer, as it is now: ``units`` groups of ``group_size`` parameters each,
    every group's norm weighted by ``weight`` (√group size; 1 for γ). ``consumer`` is the
    Linear whose column joins each group (``outgoing=True``), or None."""

    layer: str
    kind: str
    module_type: str
    units: int
    group_size: int
    weight: float
    consumer: str | None = None


def _exact(item: object, layers: Selector) -> bool:
    """True if ``item`` (a layer name) is named as such, not only matched by a pattern/type."""
    if layers is None:
        return False
    items = [layers] if isinstance(layers, (str, type)) else list(layers)
    return item in [i for i in items if isinstance(i, str)]


class SparsityPressure:
    """A sparsity penalty over chosen layers: call it to get the term to add to the loss.

    Args:
        model: the model whose layers are penalised.
        kind: ``"group_lasso"`` (default) or ``"bn_l1"``.
        strength: the factor in front (≥ 0, finite). 0 gives an exact zero; it can be
            changed later (``pressure.strength = 1e-3``), e.g. for a warm-up.
        layers: names, ``fnmatch`` patterns or module types. Default for group lasso: every
            Linear, Bilinear and Conv/ConvTranspose layer ``engine.layers`` tracks, except
            output layers; for bn_l1: every affine BatchNorm.
        outputs: group lasso only: the layers never penalised (their units are the model's
            outputs). A selector, or a ``ModelLayout`` (``engine.model_layout()``) whose
            ``is_output`` layers are taken. Default: the last tracked layer in module order
            (the engine's conservative rule when no layout is known). ``()`` for none.
        bias: group lasso: the bias of a unit joins its group (default True).
        outgoing: group lasso: the unit's column in the one Linear that reads it directly
            (``Observation.consumer``, found by tracing: Linear → activation → Linear) joins
            its group; layers without such a consumer keep incoming groups.

    Raises ``ConfigurationError`` naming the bad item: an unknown kind or layer, a layer of a
    type the kind cannot act on, an output layer named explicitly, a model without an affine
    BatchNorm for ``bn_l1``, a negative or NaN strength, nothing left to penalise.

    >>> import torch.nn as nn
    >>> cnn = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
    ...                     nn.Linear(4 * 36, 10))
    >>> SparsityPressure(cnn, "bn_l1", strength=1e-4).layers
    ('1',)
    >>> SparsityPressure(cnn, layers=["conv9"])  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    engine.errors.ConfigurationError: layers='conv9' matches no trackable layer; ...
    """

    def __init__(
        self,
        model: nn.Module,
        kind: str = "group_lasso",
        strength: float = 1e-4,
        layers: Selector = None,
        *,
        outputs: Selector | ModelLayout = None,
        bias: bool = True,
        outgoing: bool = False,
    ) -> None:
        if layers is not None and not isinstance(layers, (str, type)):
            layers = list(layers) if isinstance(layers, Iterable) else layers  # read it once
        if kind not in KINDS:
            raise ConfigurationError(f"kind={kind!r} is not one of {', '.join(KINDS)}")
        if not isinstance(model, nn.Module):
            raise ConfigurationError(f"model must be an nn.Module, got {type(model).__name__}")
        for flag, value in (("bias", bias), ("outgoing", outgoing)):
            if not isinstance(value, bool):
                raise ConfigurationError(f"{flag} must be True or False, got {value!r}")
        if kind == "bn_l1" and outgoing:
            raise ConfigurationError("outgoing=True is for kind='group_lasso' (bn_l1 penalises γ)")
        self.model = model
        self.kind = kind
        self.strength = strength
        self.bias = bias
        self.outgoing = outgoing
        self.skipped: dict[str, str] = {}
        bn = kind == "bn_l1"
        names = self._batchnorms(layers) if bn else self._group_layers(layers, outputs)
        if not names:
            raise ConfigurationError(
                f"{kind}: nothing to penalise in {type(model).__name__} with layers={layers!r}"
                f" (skipped: {self.skipped or 'none'})"
            )
        self.layers: tuple[str, ...] = tuple(names)
        self.consumers: dict[str, str | None] = dict.fromkeys(names)
        if outgoing:
            self._find_consumers()

    # --- the strength ----------------------------------------------------------------------
    @property
    def strength(self) -> float:
        return self._strength

    @strength.setter
    def strength(self, value: float) -> None:
        self._strength = _check_strength(value)

    # --- choosing layers -------------------------------------------------------------------
    def _group_layers(self, layers: Selector, outputs: Selector | ModelLayout) -> list[str]:
        check_selector(self.model, layers, "layers")
        found = discover_layers(self.model)
        if isinstance(outputs, ModelLayout):
            out = {n for n, layer in outputs.layers.items() if layer.is_output}
        elif outputs is None:
            out = {list(found)[-1]} if found else set()
        else:
            check_selector(self.model, outputs, "outputs")
            out = {n for n, (m, _) in found.items() if matches(n, m, outputs)}
        chosen = []
        for name, (module, _) in found.items():
            if layers is not None and not matches(name, module, layers):
                continue
            reason = None
            if not isinstance(module, GROUP_TYPES):
                reason = f"{type(module).__name__}: group lasso acts on Linear/Bilinear/Conv"
            elif name in out:
                reason = "output layer (pass outputs=() to penalise it)"
            if reason is None:
                chosen.append(name)
            elif _exact(name, layers):
                raise ConfigurationError(f"layers: {name!r} cannot be penalised: {reason}")
            else:
                self.skipped[name] = reason
        return chosen

    def _batchnorms(self, layers: Selector) -> list[str]:
        norms = [(n, m) for n, m in self.model.named_modules() if isinstance(m, _BatchNorm)]
        if not norms:
            raise ConfigurationError(
                f"bn_l1: {type(self.model).__name__} has no BatchNorm layer (use "
                f"kind='group_lasso' for Linear/Conv units)"
            )
        items = [] if layers is None else [layers] if isinstance(layers, (str, type)) else layers
        for item in items:
            if not isinstance(item, str):
                continue
            if not any(n == item or fnmatchcase(n, item) for n, _ in norms):
                shown = ", ".join(repr(n) for n, _ in norms)
                raise ConfigurationError(
                    f"layers={item!r} matches no BatchNorm layer; BatchNorm layers are: {shown}"
                )
        chosen = []
        for name, module in norms:
            if layers is not None and not matches(name, module, layers):
                continue
            if isinstance(module.weight, torch.Tensor):
                chosen.append(name)
            elif _exact(name, layers):
                raise ConfigurationError(f"layers: BatchNorm {name!r} has affine=False (no γ)")
            else:
                self.skipped[name] = "affine=False: no γ"
        return chosen

    def _find_consumers(self) -> None:
        found = discover_layers(self.model)
        observations = plan_observations(self.model, {n: k for n, (_, k) in found.items()})
        for name in self.layers:
            self.consumers[name] = observations[name].consumer

    # --- the live modules ------------------------------------------------------------------
    def _module(self, name: str) -> nn.Module:
        try:
            return self.model.get_submodule(name)
        except AttributeError:
            raise ConfigurationError(
                f"layer {name!r} is no longer in the model (SparsityPressure finds layers by "
                f"name; build a new one after replacing modules)"
            ) from None

    def _modules(self) -> tuple[list[nn.Module], list[nn.Module | None]]:
        modules = [self._module(n) for n in self.layers]
        consumers = [self._module(c) if c else None for c in self.consumers.values()]
        return modules, consumers

    # --- public ----------------------------------------------------------------------------
    def __call__(self) -> torch.Tensor:
        """The penalty now: a differentiable 0-d tensor on the parameters' device (an exact
        zero when ``strength`` is 0). Computed from the live parameters; no host sync."""
        modules, consumers = self._modules()
        if self.kind == "bn_l1":
            return bn_l1_penalty(modules, self._strength)
        return group_lasso_penalty(modules, self._strength, bias=self.bias, consumers=consumers)

    @property
    def groups(self) -> list[PenaltyGroup]:
        """What is penalised, read from the live modules (sizes follow surgery)."""
        out = []
        for (name, consumer), module in zip(self.consumers.items(), self._modules()[0]):
            if self.kind == "bn_l1":
                out.append(PenaltyGroup(name, self.kind, type(module).__name__,
                                        module.weight.shape[0], 1, 1.0))  # fmt: skip
                continue
            reader = self._module(consumer) if consumer else None
            size = group_size(module, bias=self.bias, consumer=reader)
            units = incoming_rows(module).shape[0]
            out.append(PenaltyGroup(name, self.kind, type(module).__name__, units, size,
                                    size**0.5, consumer))  # fmt: skip
        return out

    @torch.no_grad()
    def group_norms(self) -> dict[str, torch.Tensor]:
        """Per layer, the norm of every unit's group (|γ| for bn_l1), detached, on the device."""
        modules, consumers = self._modules()
        if self.kind == "bn_l1":
            return {n: m.weight.detach().abs() for n, m in zip(self.layers, modules)}
        return {
            n: unit_group_norms(m, bias=self.bias, consumer=c).detach()
            for n, m, c in zip(self.layers, modules, consumers)
        }

    def removable(self, relative: float = 1e-3) -> dict[str, list[int]]:
        """Per layer, the local indices of units whose group norm is below ``relative`` × the
        layer's median group norm (a diagnostic: this one reads values to the host)."""
        if not relative >= 0.0:
            raise ConfigurationError(f"relative must be ≥ 0, got {relative!r}")
        out = {}
        for name, norms in self.group_norms().items():
            bar = relative * norms.float().median()
            out[name] = torch.nonzero(norms < bar).flatten().tolist()
        return out

    def __repr__(self) -> str:
        return (
            f"SparsityPressure(kind={self.kind!r}, strength={self._strength!r}, "
            f"layers={list(self.layers)!r})"
        )


def sparsity_penalty(
    model: nn.Module,
    kind: str = "group_lasso",
    strength: float = 1e-4,
    layers: Selector = None,
    **options: object,
) -> torch.Tensor:
    """The functional form: ``SparsityPressure(model, kind, strength, layers, **options)()``.
    Resolves the layers on every call; keep a ``SparsityPressure`` in a training loop.

    >>> import torch.nn as nn
    >>> m = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))
    >>> float(sparsity_penalty(m, strength=0.0))  # an exact zero, computed from nothing
    0.0
    """
    return SparsityPressure(model, kind, strength, layers, **options)()  # type: ignore[arg-type]
