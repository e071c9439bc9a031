"""The mutable side of a surgery transaction: installs new tensors, remembers the old ones.

Every change installs *new* ``nn.Parameter``/buffer objects on the modules (same dtype,
device and ``requires_grad``); old ones are never written. The workspace remembers, per
module, its parameter/buffer dicts and attributes as they were before the first change, and,
per member axis, which original positions its current positions came from (``-1``: new). So

* :meth:`Workspace.rollback` puts every old object back (bitwise unchanged by construction);
* :meth:`Workspace.param_changes` composes every action of the plan into one
  :class:`~engine.surgery.optimizer.ParamChange` per parameter (original → final), which is
  what :func:`~engine.surgery.optimizer.remap_optimizer` needs; :meth:`Workspace.created`
  lists the parameters that had no original (a bias given to a bias-free consumer), which
  :func:`~engine.surgery.created_params.add_params` puts in the optimizer.

A tied parameter (one object held by several modules, see :mod:`engine.surgery.ties`) stays
one: a new tensor is installed at every owner at once, and each of its axes is resized once,
by whichever owner's member comes first; the others find it already resized (their axis maps
must then agree; the plan's validation makes sure they do). Its axis maps are kept per
tensor (``("tie", id, dim)``), so it yields one change however many owners it has.

Positions in a plan refer to the layout it was made for, so actions address members by their
original positions and the workspace translates them to current ones.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from engine.errors import SurgeryError
from engine.surgery.groups import GroupMember
from engine.surgery.param_change import DimRemap, ParamChange
from engine.surgery.resizers import AxisSpec, resizer_for
from engine.surgery.ties import Tie, find_ties, tie_index

Init = Callable[[AxisSpec, Tensor, int], Tensor]  # (spec, current tensor, count) -> new slices


def _owner(module: nn.Module, path: str) -> tuple[nn.Module, str]:
    head, _, name = path.rpartition(".")
    return (module.get_submodule(head) if head else module), name


def _blocked(index: Tensor, blocks: int, size: int) -> Tensor:
    """Positions on a dim that holds ``blocks`` copies of an axis of length ``size``."""
    if blocks == 1:
        return index
    return torch.cat([index + b * size for b in range(blocks)])


class Workspace:
    """Per-transaction record of what surgery changed (see the module docstring)."""

    def __init__(
        self,
        model: nn.Module,
        ties: list[Tie] | None = None,
        norms_after: dict[int, nn.Module] | None = None,
    ) -> None:
        self.model = model
        self.norms_after = dict(norms_after or {})  # id(bias-free consumer) -> norm after it
        self._ties = tie_index(find_ties(model) if ties is None else ties)
        self._saved: dict[int, tuple[nn.Module, dict, dict, dict]] = {}
        self._original: dict[tuple[int, str], Tensor | None] = {}
        self._maps: dict[tuple, Tensor] = {}  # member axis (or tied tensor axis) -> positions
        self._specs: dict[tuple[int, str], list[tuple[tuple, AxisSpec]]] = {}

    # --- bookkeeping ------------------------------------------------------------------------
    def _save(self, module: nn.Module) -> None:
        if id(module) not in self._saved:
            attrs = {
                k: v
                for k, v in vars(module).items()
                if k not in ("_parameters", "_buffers", "_modules")
            }
            self._saved[id(module)] = (
                module,
                dict(module._parameters),
                dict(module._buffers),
                attrs,
            )

    def _map(self, member: GroupMember) -> Tensor:
        key = member.key
        if key not in self._maps:
            self._maps[key] = torch.arange(member.size)
        return self._maps[key]

    def current(self, member: GroupMember, original: list[int]) -> Tensor:
        """Current positions of the member's ``original`` positions (all must be alive)."""
        amap = self._map(member)
        where = torch.full((member.size,), -1, dtype=torch.long)
        alive = amap >= 0
        where[amap[alive]] = torch.nonzero(alive).flatten()
        cur = where[torch.as_tensor(original, dtype=torch.long)]
        if (cur < 0).any():
            raise SurgeryError(f"{member.name}: positions {original} were already removed")
        return cur

    def get(self, module: nn.Module, path: str) -> Tensor | None:
        owner, name = _owner(module, path)
        return getattr(owner, name, None)

    def tie_of(self, module: nn.Module, path: str) -> Tie | None:
        """The tie ``module.<path>`` belongs to, if it is held by other modules too."""
        owner, name = _owner(module, path)
        return self._ties.get((id(owner), name))

    def set(self, module: nn.Module, path: str, value: Tensor, axis: Any = None) -> None:
        """Install ``value`` as ``module.<path>`` (a new Parameter when it was one)."""
        owner, name = _owner(module, path)
        self._save(owner)
        old = getattr(owner, name)
        key = (id(owner), name)
        self._original.setdefault(key, old)
        if name in owner._parameters:
            new = nn.Parameter(value.detach(), requires_grad=old.requires_grad)
            tie = self._ties.get(key)
            for o, n in tie.owners if tie is not None else ((owner, name),):
                self._save(o)
                self._original.setdefault((id(o), n), getattr(o, n))
                o._parameters[n] = new  # every owner of a tie holds the same new object
        elif name in owner._buffers:
            owner._buffers[name] = value.detach()
        else:
            raise SurgeryError(f"{type(owner).__name__}.{name} is neither parameter nor buffer")
        if axis is not None:
            entries = self._specs.setdefault(key, [])
            if axis not in entries:
                entries.append(axis)

    def add_bias(self, module: nn.Module, path: str, size: int, like: Tensor) -> Tensor:
        """Give a bias-free consumer a zero bias Parameter (to fold a constant into)."""
        owner, name = _owner(module, path)
        self._save(owner)
        key = (id(owner), name)
        self._original.setdefault(key, None)
        bias = nn.Parameter(like.new_zeros(size), requires_grad=like.requires_grad)
        owner._parameters[name] = bias
        return bias

    # --- resizing -----------------------------------------------------------------------------
    def _specs_of(self, member: GroupMember) -> list[AxisSpec]:
        return resizer_for(member.module).axes(member.module, member.side)

    def remove(self, member: GroupMember, original: list[int]) -> None:
        """Drop the member's ``original`` positions from every tensor along its axis."""
        if not original:
            return
        cur = self.current(member, original)
        amap = self._map(member)
        keep_mask = torch.ones(amap.numel(), dtype=torch.bool)
        keep_mask[cur] = False
        keep = torch.nonzero(keep_mask).flatten()
        size = amap.numel()
        for spec in self._specs_of(member):
            t = self.get(member.module, spec.path)
            dim = spec.dim % t.dim()
            axis = self._axis(member, spec, dim, amap, amap[keep])
            if axis is None:
                continue  # a tied tensor, already resized as another of its owners
            idx = _blocked(keep, spec.blocks, size).to(t.device)
            self.set(member.module, spec.path, t.index_select(dim, idx), (axis, spec))
        self._maps[member.key] = amap[keep]
        self._set_size(member, int(keep.numel()))

    def append(self, member: GroupMember, count: int, init: Init) -> None:
        """Append ``count`` positions at the end of the member's axis; ``init(spec, tensor,
        count)`` gives the new slices of each tensor (shape of ``tensor`` with ``count`` on the
        axis dim)."""
        if count <= 0:
            return
        amap = self._map(member)
        grown = torch.cat([amap, torch.full((count,), -1, dtype=torch.long)])
        for spec in self._specs_of(member):
            if spec.blocks != 1:
                raise SurgeryError(f"{member.name}: cannot grow a blocked axis ({spec.path})")
            t = self.get(member.module, spec.path)
            dim = spec.dim % t.dim()
            axis = self._axis(member, spec, dim, amap, grown)
            if axis is None:
                continue  # a tied tensor, already grown as another of its owners
            extra = init(spec, t, count).to(dtype=t.dtype, device=t.device)
            self.set(member.module, spec.path, torch.cat([t, extra], dim=dim), (axis, spec))
        self._maps[member.key] = grown
        self._set_size(member, int(amap.numel()) + count)

    def _axis(
        self, member: GroupMember, spec: AxisSpec, dim: int, before: Tensor, after: Tensor
    ) -> tuple | None:
        """The key of the axis map that ``spec`` follows: the member's own, or, for a tied
        tensor, the tensor's (None when another owner already resized it to ``after``)."""
        tie = self.tie_of(member.module, spec.path)
        if tie is None:
            return member.key
        key = ("tie", id(tie), dim)
        now = self._maps.get(key, torch.arange(before.numel()))
        if now.numel() == after.numel() and torch.equal(now, after):
            return None
        if now.numel() != before.numel() or not torch.equal(now, before):
            raise SurgeryError(
                f"{tie.describe()}; {member.name!r} would resize it along dim {dim} unlike "
                "its other owners"
            )
        self._maps[key] = after
        return key

    def _set_size(self, member: GroupMember, n: int) -> None:
        self._save(member.module)
        r = resizer_for(member.module)
        (r.set_out if member.side == "out" else r.set_in)(member.module, n)

    # --- results ------------------------------------------------------------------------------
    def touched(self) -> list[tuple[nn.Module, str, Tensor | None, Tensor | None]]:
        """``(owner module, name, original tensor, current tensor)`` for every replaced one."""
        out = []
        for (owner_id, name), old in self._original.items():
            owner = self._saved[owner_id][0]
            out.append((owner, name, old, getattr(owner, name, None)))
        return out

    def created(self) -> list[tuple[nn.Module, str, nn.Parameter]]:
        """``(owner, name, parameter)`` for every parameter surgery created (it had none)."""
        return [
            (owner, name, new)
            for owner, name, old, new in self.touched()
            if old is None and isinstance(new, nn.Parameter)
        ]

    def param_changes(self) -> list[ParamChange]:
        """One change per replaced parameter object, composed over every action (original →
        final); a tied parameter gives one change, whichever owners resized it."""
        finals: dict[int, tuple[Tensor, Tensor | None, dict]] = {}
        for owner, name, old, new in self.touched():
            if old is None or not isinstance(old, nn.Parameter):
                continue
            entry = finals.setdefault(id(old), (old, new, {}))
            if entry[1] is not new:
                raise SurgeryError(
                    f"{type(owner).__name__}.{name} is tied to another module's parameter, "
                    "but surgery left the owners holding different tensors"
                )
            for map_key, spec in self._specs.get((id(owner), name), []):
                entry[2].setdefault((map_key, spec.dim % old.dim()), (map_key, spec))
        changes = []
        for old, new, entries in finals.values():
            if new is old:
                continue
            remaps = []
            for map_key, spec in entries.values():
                amap = self._maps[map_key]
                kept, added = amap[amap >= 0], int((amap < 0).sum())
                if added and (amap[: kept.numel()] < 0).any():
                    shape = tuple(old.shape)
                    raise SurgeryError(
                        f"parameter of shape {shape}: new slices are not at the end of the axis"
                    )
                size = int(old.shape[spec.dim % old.dim()]) // spec.blocks
                remaps.append(DimRemap(spec.dim % old.dim(), _blocked(kept, spec.blocks, size),
                                       added))  # fmt: skip
            changes.append(ParamChange(old, new, remaps))
        return changes

    def rollback(self) -> None:
        """Put back every module's parameters, buffers and attributes as they were."""
        for module, params, buffers, attrs in self._saved.values():
            module._parameters.clear()
            module._parameters.update(params)
            module._buffers.clear()
            module._buffers.update(buffers)
            for k in [k for k in vars(module) if k not in attrs and not k.startswith("_")]:
                delattr(module, k)
            module.__dict__.update(attrs)
        self._saved.clear()
        self._original.clear()
        self._maps.clear()
        self._specs.clear()
