"""Re-point a live optimizer at resized parameters, slicing and extending its state.

Surgery (Torch-Pruning for removal, the engine's own code for growth) replaces ``nn.Parameter``
objects by new, resized ones. The optimizer still holds the old objects in its param groups and
keys its per-parameter state by them, so after surgery it must be told what happened. A
:class:`ParamChange` says it for one parameter: which old parameter became which new one, and,
for each resized dim, a :class:`DimRemap` — the new parameter's slices along ``dim`` are the old
slices ``keep`` (in that order) followed by ``added`` new slices.

:func:`remap_optimizer` then, for every change whose old parameter the optimizer holds:

* puts the new parameter at the old one's position in its param group (the group's list object,
  its other keys and every other parameter stay as they are);
* builds a new state dict for it: every tensor shaped like the old parameter (momentum buffers,
  Adam's ``exp_avg``/``exp_avg_sq``/``max_exp_avg_sq``, RMSprop's ``square_avg``, ``grad_avg``,
  Adagrad's ``sum``…) is ``index_select``-ed on the kept slices and extended with zero slices;
  every other value (``step`` counters, scalars, flags) is copied unchanged. Tensors keep their
  dtype and device. A parameter without state (never stepped, or frozen) gets none.

It never writes into the old state tensors, dicts or parameters: everything it installs is new.
So a surgery transaction can take an :func:`optimizer_snapshot` first and, if anything fails
later, :func:`restore_optimizer` puts back the same parameter objects and the same (bitwise
unchanged) state tensors. A change that cannot be applied raises :class:`OptimizerRemapError`
before the optimizer is touched.

>>> import torch
>>> from torch import nn
>>> old = nn.Parameter(torch.randn(4, 3))
>>> opt = torch.optim.Adam([old], lr=0.1)
>>> old.grad = torch.ones(4, 3)
>>> opt.step()
>>> new = nn.Parameter(torch.cat([old.detach()[[0, 2]], torch.zeros(1, 3)]))  # keep 0, 2; add 1
>>> token = optimizer_snapshot(opt)
>>> remap_optimizer(opt, [ParamChange.along(old, new, dim=0, keep=[0, 2], added=1)])
>>> opt.param_groups[0]["params"][0] is new
True
>>> m, m_old = opt.state[new]["exp_avg"], token.state[old]["exp_avg"]
>>> torch.equal(m[:2], m_old[[0, 2]]), torch.count_nonzero(m[2]).item()
(True, 0)
>>> int(opt.state[new]["step"])
1
>>> restore_optimizer(opt, token)
>>> opt.param_groups[0]["params"][0] is old, new in opt.state
(True, False)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from engine.errors import OptimizerRemapError

__all__ = [
    "DimRemap",
    "OptimizerRemapError",
    "OptimizerSnapshot",
    "ParamChange",
    "optimizer_snapshot",
    "remap_optimizer",
    "remap_tensor",
    "restore_optimizer",
]


def _shape(shape: Iterable[int]) -> str:
    return str(tuple(int(s) for s in shape))


# --- the description of a change ------------------------------------------------------------


@dataclass(frozen=True)
class DimRemap:
    """Along ``dim``: new slices = old slices ``keep`` (in that order), then ``added`` new slices.

    ``keep`` is stored as a 1-D ``torch.long`` tensor on the CPU (any integer sequence, range,
    array or tensor is accepted). ``dim`` may be negative until it is bound to a parameter by
    :class:`ParamChange`, which normalises it. Indices must be distinct and non-negative; the
    upper bound is checked against the parameter's size by :class:`ParamChange`.

    >>> DimRemap(0, [0, 2, 5], added=2).new_size
    5
    """

    dim: int
    keep: Tensor
    added: int = 0

    def __post_init__(self) -> None:
        keep = self.keep
        if isinstance(keep, Tensor):
            keep = keep.detach()
        else:
            keep = torch.as_tensor(list(keep) if isinstance(keep, range) else keep)
            if keep.numel() == 0:
                keep = keep.to(torch.long)
        if keep.dtype == torch.bool or keep.is_floating_point() or keep.is_complex():
            raise OptimizerRemapError(
                f"dim {self.dim}: keep indices must be integers, got dtype {keep.dtype}"
            )
        if keep.dim() != 1:
            raise OptimizerRemapError(
                f"dim {self.dim}: keep indices must be 1-D, got shape {_shape(keep.shape)}"
            )
        keep = keep.to(device="cpu", dtype=torch.long).contiguous()
        if keep.numel() and int(keep.min()) < 0:
            raise OptimizerRemapError(f"dim {self.dim}: keep index {int(keep.min())} is negative")
        if torch.unique(keep).numel() != keep.numel():
            raise OptimizerRemapError(
                f"dim {self.dim}: keep indices repeat a slice; new slices are `added`, "
                "not copies of kept ones"
            )
        if isinstance(self.added, bool) or not isinstance(self.added, int) or self.added < 0:
            raise OptimizerRemapError(
                f"dim {self.dim}: added must be a non-negative int, got {self.added!r}"
            )
        if isinstance(self.dim, bool) or not isinstance(self.dim, int):
            raise OptimizerRemapError(f"dim must be an int, got {self.dim!r}")
        object.__setattr__(self, "keep", keep)

    @property
    def new_size(self) -> int:
        """Size of the new parameter along ``dim``."""
        return self.keep.numel() + self.added

    def is_identity(self, old_size: int) -> bool:
        """Whether this remap keeps all ``old_size`` slices in order and adds none."""
        return (
            self.added == 0
            and self.keep.numel() == old_size
            and torch.equal(self.keep, torch.arange(old_size))
        )


@dataclass(frozen=True)
class ParamChange:
    """Parameter ``old`` was replaced by ``new``; ``remaps`` say how, one per resized dim.

    Dims are normalised (``-1`` becomes ``old.dim() - 1``) and must be distinct; every kept
    index must be below ``old``'s size along its dim; ``new.shape`` must equal
    :attr:`expected_shape` (``old.shape`` with each remapped dim resized). Checked on
    construction, so a wrong change fails before anything is touched.

    A Linear between two resized layers changes both dims of its weight:

    >>> from torch import nn
    >>> w = nn.Parameter(torch.zeros(6, 4))
    >>> w2 = nn.Parameter(torch.zeros(3, 5))
    >>> ParamChange(w, w2, [DimRemap(0, [0, 2, 5]), DimRemap(1, [1, 3], added=3)]).expected_shape
    torch.Size([3, 5])
    >>> try:
    ...     ParamChange(w, nn.Parameter(torch.zeros(3, 4)), [DimRemap(0, [0, 2])])
    ... except OptimizerRemapError as e:
    ...     print(e)
    parameter of shape (6, 4): the new one has shape (3, 4), expected (2, 4) (dim 0: keep 2, add 0)
    """

    old: Tensor
    new: Tensor
    remaps: Sequence[DimRemap] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.old, Tensor) or not isinstance(self.new, Tensor):
            raise OptimizerRemapError("old and new must be tensors (nn.Parameter)")
        remaps = (self.remaps,) if isinstance(self.remaps, DimRemap) else tuple(self.remaps)
        old_shape = tuple(self.old.shape)
        where = f"parameter of shape {_shape(old_shape)}"
        if self.old is self.new and remaps:
            raise OptimizerRemapError(
                f"{where}: old and new are the same object; a resized parameter must be a new "
                "nn.Parameter (the optimizer keys its state by object)"
            )
        normalised: list[DimRemap] = []
        seen: set[int] = set()
        for r in remaps:
            if not isinstance(r, DimRemap):
                raise OptimizerRemapError(f"{where}: remaps must be DimRemap, got {r!r}")
            ndim = len(old_shape)
            if not -ndim <= r.dim < ndim:
                raise OptimizerRemapError(
                    f"{where}: dim {r.dim} is out of range for a {ndim}-D parameter"
                )
            dim = r.dim % ndim
            if dim in seen:
                raise OptimizerRemapError(f"{where}: dim {dim} is remapped twice")
            seen.add(dim)
            size = old_shape[dim]
            if r.keep.numel() and int(r.keep.max()) >= size:
                raise OptimizerRemapError(
                    f"{where}: dim {dim}: keep index {int(r.keep.max())} is out of range "
                    f"for size {size}"
                )
            normalised.append(r if dim == r.dim else DimRemap(dim, r.keep, r.added))
        object.__setattr__(self, "remaps", tuple(normalised))
        expected = self.expected_shape
        if tuple(self.new.shape) != tuple(expected):
            detail = ", ".join(
                f"dim {r.dim}: keep {r.keep.numel()}, add {r.added}" for r in self.remaps
            )
            raise OptimizerRemapError(
                f"{where}: the new one has shape {_shape(self.new.shape)}, expected "
                f"{_shape(expected)} ({detail or 'no remaps'})"
            )

    @classmethod
    def along(
        cls,
        old: Tensor,
        new: Tensor,
        dim: int,
        keep: Sequence[int] | Tensor,
        added: int = 0,
    ) -> ParamChange:
        """The common one-dim change: ``ParamChange(old, new, [DimRemap(dim, keep, added)])``."""
        return cls(old, new, (DimRemap(dim, keep, added),))

    @property
    def expected_shape(self) -> torch.Size:
        """``old.shape`` with every remapped dim resized to ``len(keep) + added``."""
        shape = list(self.old.shape)
        for r in self.remaps:
            shape[r.dim] = r.new_size
        return torch.Size(shape)


def remap_tensor(
    tensor: Tensor,
    remaps: Sequence[DimRemap],
    *,
    fill: float = 0.0,
) -> Tensor:
    """A new tensor: ``tensor`` sliced on ``keep`` and extended by ``added`` slices of ``fill``
    along each remap's dim (dims must be non-negative and in range). Same dtype and device;
    never writes into ``tensor``, never returns it (with no remaps, a clone).

    Every remapped dim is sliced, so for a factored statistic of size 1 along some dim (such
    as Adafactor's ``row_var``) pass only the remaps of the dims where it has the parameter's
    size (:func:`remap_optimizer` does). Also usable for buffers and engine statistics.

    >>> remap_tensor(torch.arange(6.0).reshape(3, 2), [DimRemap(0, [2, 0], added=1)])
    tensor([[4., 5.],
            [0., 1.],
            [0., 0.]])
    """
    out = tensor
    for r in remaps:
        idx = r.keep.to(out.device)
        out = out.index_select(r.dim, idx)
        if r.added:
            size = list(out.shape)
            size[r.dim] = r.added
            extra = out.new_full(size, fill) if fill else out.new_zeros(size)
            out = torch.cat([out, extra], dim=r.dim)
    return out.clone() if out is tensor else out


# --- the optimizer --------------------------------------------------------------------------


def _remap_state_value(
    key: Any,
    value: Any,
    change: ParamChange,
    fill: Mapping[str, float],
) -> Any:
    """New value of one state entry (see :func:`remap_optimizer` for the rules)."""
    if not isinstance(value, Tensor):
        return value
    old_shape = tuple(change.old.shape)
    if value.dim() == 0:
        return value.clone()
    if tuple(value.shape) == old_shape:
        return remap_tensor(value, change.remaps, fill=fill.get(key, 0.0))
    # A factored statistic: same rank, each size equal to the parameter's or 1 (broadcast).
    if value.dim() == len(old_shape) and all(v in (p, 1) for v, p in zip(value.shape, old_shape)):
        along = [r for r in change.remaps if value.shape[r.dim] == old_shape[r.dim]]
        return remap_tensor(value, along, fill=fill.get(key, 0.0))
    if all(r.is_identity(old_shape[r.dim]) for r in change.remaps):
        return value.clone()  # nothing about the parameter changed: copy it as it is
    raise OptimizerRemapError(
        f"parameter of shape {_shape(old_shape)}: optimizer state {key!r} has shape "
        f"{_shape(value.shape)}, neither the parameter's shape nor a scalar, so it cannot be "
        f"remapped along dim(s) {[r.dim for r in change.remaps]}"
    )


def remap_optimizer(
    optimizer: torch.optim.Optimizer,
    changes: Iterable[ParamChange],
    *,
    fill: Mapping[str, float] | None = None,
) -> None:
    """Re-point ``optimizer`` from each change's old parameter to its new one, in place.

    For every param group, an old parameter is replaced by its new one at the same position
    (by identity; changes whose old parameter the optimizer does not hold are ignored). Its
    state, if it has any, moves to the new parameter as a new dict:

    * a tensor shaped like the old parameter is sliced on ``keep`` and extended with
      ``added`` slices along each remapped dim — zeros, or ``fill[key]`` for state key ``key``
      (e.g. ``fill={"sum": 0.1}`` for an Adagrad with ``initial_accumulator_value=0.1``);
    * a tensor of the same rank whose size is 1 on some dims (a factored statistic) is remapped
      along the dims where it has the parameter's size;
    * a 0-d tensor (``step``) is copied (cloned, same value, dtype and device); any non-tensor
      value (an int ``step``, ``None``, flags) is kept as it is;
    * any other tensor makes the change fail (e.g. L-BFGS's flat history).

    Param group keys other than the parameter list are untouched, and the list object itself
    is kept (only its items change). Nothing old is written to: old parameters, state dicts and
    state tensors stay valid for :func:`restore_optimizer`. Every check runs before the first
    modification; on :class:`OptimizerRemapError` the optimizer is unchanged.
    """
    fill = dict(fill or {})
    changes = list(changes)
    by_old: dict[int, ParamChange] = {}
    new_ids: set[int] = set()
    for change in changes:
        if not isinstance(change, ParamChange):
            raise OptimizerRemapError(f"changes must be ParamChange objects, got {change!r}")
        if id(change.old) in by_old:
            raise OptimizerRemapError(
                f"parameter of shape {_shape(change.old.shape)} is changed twice"
            )
        if id(change.new) in new_ids:
            raise OptimizerRemapError(
                f"new parameter of shape {_shape(change.new.shape)} replaces two parameters"
            )
        by_old[id(change.old)] = change
        new_ids.add(id(change.new))
    for change in changes:
        if id(change.new) in by_old and change.new is not change.old:
            raise OptimizerRemapError(
                f"new parameter of shape {_shape(change.new.shape)} is also the old parameter "
                "of another change; chained changes are not supported"
            )

    # Phase 1 — plan every edit, touching nothing.
    held: dict[int, Tensor] = {}
    positions: list[tuple[list[Tensor], int, ParamChange]] = []
    for g, group in enumerate(optimizer.param_groups):
        for i, p in enumerate(group["params"]):
            held[id(p)] = p
            change = by_old.get(id(p))
            if change is not None:
                positions.append((group["params"], i, change))
                if change.new.requires_grad != change.old.requires_grad:
                    raise OptimizerRemapError(
                        f"parameter of shape {_shape(change.old.shape)} in param group {g}: "
                        f"requires_grad {change.old.requires_grad} -> "
                        f"{change.new.requires_grad}; a frozen parameter must stay frozen "
                        "(set new.requires_grad before remapping)"
                    )
    replaced = {id(c.old) for _, _, c in positions}
    for change in changes:
        if id(change.new) in held and id(change.new) not in replaced:
            raise OptimizerRemapError(
                f"new parameter of shape {_shape(change.new.shape)} is already in the optimizer"
            )
    new_states: list[tuple[ParamChange, dict[Any, Any]]] = []
    for _, _, change in positions:
        old_state = optimizer.state.get(change.old)  # .get: never create an entry
        if old_state is None or change.old is change.new:
            continue
        new_states.append(
            (change, {k: _remap_state_value(k, v, change, fill) for k, v in old_state.items()})
        )

    # Phase 2 — commit: plain list/dict assignments, nothing left that can fail.
    for params, i, change in positions:
        params[i] = change.new
    for change, _ in new_states:
        optimizer.state.pop(change.old, None)
    for change, state in new_states:
        optimizer.state[change.new] = state


# --- snapshot and restore -------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class OptimizerSnapshot:
    """What :func:`restore_optimizer` needs to undo remaps: the param group dicts (objects and
    shallow copies of their items), each group's parameter list (object and items), and the
    state mapping (parameter -> the same state dict objects). Shallow: valid as long as the
    state tensors are not written in place, i.e. until the next ``optimizer.step()``, which is
    the span of a surgery transaction. :func:`remap_optimizer` never writes them."""

    optimizer_id: int
    groups: tuple[dict[str, Any], ...]
    group_items: tuple[dict[str, Any], ...]
    param_lists: tuple[tuple[list[Any], tuple[Any, ...]], ...]
    state: dict[Any, Any]


def optimizer_snapshot(optimizer: torch.optim.Optimizer) -> OptimizerSnapshot:
    """Capture ``optimizer``'s param groups and state mapping for :func:`restore_optimizer`."""
    groups = tuple(optimizer.param_groups)
    return OptimizerSnapshot(
        optimizer_id=id(optimizer),
        groups=groups,
        group_items=tuple(dict(g) for g in groups),
        param_lists=tuple((g["params"], tuple(g["params"])) for g in groups),
        state=dict(optimizer.state),
    )


def restore_optimizer(optimizer: torch.optim.Optimizer, token: OptimizerSnapshot) -> None:
    """Put ``optimizer`` back as it was when ``token`` was taken: the same group dict and list
    objects with the same items (so the same ``nn.Parameter`` objects), and the same state dict
    objects keyed by them; entries added since (e.g. for new parameters) are dropped. The
    ``optimizer.state`` and ``optimizer.param_groups`` containers are kept and refilled."""
    if not isinstance(token, OptimizerSnapshot) or token.optimizer_id != id(optimizer):
        raise OptimizerRemapError("the snapshot was not taken from this optimizer")
    optimizer.param_groups[:] = list(token.groups)
    for group, items, (params, saved) in zip(token.groups, token.group_items, token.param_lists):
        params[:] = saved
        group.clear()
        group.update(items)
    optimizer.state.clear()
    optimizer.state.update(token.state)
