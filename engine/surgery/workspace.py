"""The mutable side of a surgery transaction: installs new tensors, remembers the old ones.

Every change installs *new* ``nn.Parameter``/buffer objects on the modules (same dtype,
device and ``requires_grad``); old ones are never written. The workspace remembers, per
module, its parameter/buffer dicts and attributes as they were before the first change, and,
per member axis, which original positions its current positions came from (``-1``: new). So

* :meth:`Workspace.rollback` puts every old object back (bitwise unchanged by construction);
* :meth:`Workspace.param_changes` composes every action of the plan into one
  :class:`~engine.surgery.optimizer.ParamChange` per parameter (original → final), which is
  what :func:`~engine.surgery.optimizer.remap_optimizer` needs.

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

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self._saved: dict[int, tuple[nn.Module, dict, dict, dict]] = {}
        self._original: dict[tuple[int, str], Tensor | None] = {}
        self._maps: dict[tuple[str, str], Tensor] = {}  # member axis -> original positions
        self._specs: dict[tuple[int, str], list[tuple[tuple[str, str], AxisSpec]]] = {}

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

    def set(self, module: nn.Module, path: str, value: Tensor, axis: Any = None) -> None:
        """Install ``value`` as ``module.<path>`` (a new Parameter when it was one)."""
        owner, name = _owner(module, path)
        self._save(owner)
        old = getattr(owner, name)
        key = (id(owner), name)
        self._original.setdefault(key, old)
        if name in owner._parameters:
            owner._parameters[name] = nn.Parameter(value.detach(), requires_grad=old.requires_grad)
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
            idx = _blocked(keep, spec.blocks, size).to(t.device)
            self.set(member.module, spec.path, t.index_select(dim, idx), (member.key, spec))
        self._maps[member.key] = amap[keep]
        self._set_size(member, int(keep.numel()))

    def append(self, member: GroupMember, count: int, init: Init) -> None:
        """Append ``count`` positions at the end of the member's axis; ``init(spec, tensor,
        count)`` gives the new slices of each tensor (shape of ``tensor`` with ``count`` on the
        axis dim)."""
        if count <= 0:
            return
        amap = self._map(member)
        for spec in self._specs_of(member):
            if spec.blocks != 1:
                raise SurgeryError(f"{member.name}: cannot grow a blocked axis ({spec.path})")
            t = self.get(member.module, spec.path)
            dim = spec.dim % t.dim()
            extra = init(spec, t, count).to(dtype=t.dtype, device=t.device)
            self.set(member.module, spec.path, torch.cat([t, extra], dim=dim), (member.key, spec))
        self._maps[member.key] = torch.cat([amap, torch.full((count,), -1, dtype=torch.long)])
        self._set_size(member, int(amap.numel()) + count)

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

    def param_changes(self) -> list[ParamChange]:
        """One change per replaced parameter, composed over every action (original → final)."""
        changes = []
        for owner, name, old, new in self.touched():
            if old is None or not isinstance(old, nn.Parameter) or new is old:
                continue
            remaps = []
            for member_key, spec in self._specs.get((id(owner), name), []):
                amap = self._maps[member_key]
                kept, added = amap[amap >= 0], int((amap < 0).sum())
                if added and (amap[: kept.numel()] < 0).any():
                    raise SurgeryError(f"{name}: new slices are not at the end of the axis")
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
