"""Prune, merge, fold and expand on one layer's group, through a :class:`Workspace`.

All indices are the plan's (original) unit indices; consumer folds are computed in float64
and cast back. Per consumer (a module multiplying the units, ``W`` its weight with the input
axis moved first and each unit's ``P`` input positions stacked — ``P = H·W`` after flatten):

* fold ``R`` onto ``K`` with ``coef`` (|R|×|K|) and offsets ``o``:
  ``W[K] += coefᵀ·W[R]`` and ``bias += Σ_r o_r · Σ W[r]`` (the sum runs over the unit's
  positions and the kernel); then ``R`` is removed from every member of the group;
* merge ``j`` into ``i``: the fold with ``coef = [[α]]``, ``o = [β]``;
* prune with constant values ``c``: the fold with no ``K`` and ``o = c``.

A consumer without a bias gets the constant in the running mean of the BatchNorm that reads
its output directly (``running_mean -= contrib``: exact in eval and train mode), or else a
new zero bias that the transaction adds to the optimizer (see :mod:`engine.surgery.bias_fold`).
A tied tensor (two consumers sharing one weight) is folded once.

Growth appends units to every member: Net2Net copies the sources' slices on "out" members
(producer rows, norm parameters and running statistics, coupled residual producers) and
splits the sources' consumer columns among the copies (``/ (copies + 1)``), which leaves the
function unchanged; ``noise`` perturbs the copies' incoming weights. ``zero_outgoing`` and
``random`` initialise incoming weights like PyTorch's default init, with zero (or random)
outgoing weights; ``gradmax`` sets zero incoming weights and outgoing weights from the top
left singular vectors of the consumer's gradient matrix ``Σ δ·xᵀ`` (see
:func:`engine.surgery.gradmax.gradmax_gradient`).
"""

from __future__ import annotations

from collections import Counter

import torch
from torch import Tensor, nn

from engine.errors import SurgeryError
from engine.surgery.groups import GroupMember
from engine.surgery.resizers import AxisSpec, consumer_weight_spec, fan_in_bound, resizer_for
from engine.surgery.workspace import Workspace

__all__ = ["expand_units", "fold_units", "remove_units"]


def _consumers(members: list[GroupMember]) -> list[GroupMember]:
    return [m for m in members if m.side == "in" and resizer_for(m.module).consumes]


def _unit_positions(ws: Workspace, member: GroupMember, units: list[int]) -> Tensor:
    """Current positions of ``units`` on the member's axis, shape ``(len(units), P)``."""
    per = [member.positions[u] for u in units]
    sizes = {len(p) for p in per}
    if len(sizes) > 1 or 0 in sizes:
        raise SurgeryError(
            f"{member.name}: units {units} reach it at unequal numbers of positions {sizes}"
        )
    flat = [p for pos in per for p in pos]
    return ws.current(member, flat).reshape(len(units), -1)


def fold_units(
    ws: Workspace,
    members: list[GroupMember],
    keep: list[int],
    remove: list[int],
    coef: Tensor | None,
    offsets: Tensor | None,
) -> list[str]:
    """Fold ``remove`` onto ``keep`` in every consumer (see the module docstring); returns
    notes on approximations (a constant folded through a padded convolution)."""
    notes: list[str] = []
    done: set[int] = set()  # tensors already folded in this call (tied weights: fold once)
    for member in _consumers(members):
        module = member.module
        path, dim = consumer_weight_spec(module)
        w = ws.get(module, path)
        wm = w.detach().movedim(dim, 0).double()  # (in, out, *k)
        rpos = _unit_positions(ws, member, remove)  # (|R|, P)
        wr = wm[rpos.flatten()].reshape(*rpos.shape, *wm.shape[1:])  # (|R|, P, out, *k)
        new_w = None
        if keep and coef is not None:
            kpos = _unit_positions(ws, member, keep)
            delta = torch.einsum("rk,rp...->kp...", coef.double().to(wr.device), wr)
            new_w = wm.clone()
            new_w[kpos.flatten()] += delta.reshape(-1, *wm.shape[1:])
        if offsets is not None and bool((offsets != 0).any()):
            kernel = tuple(range(3, wr.dim()))
            contrib = wr.sum(dim=kernel) if kernel else wr  # (|R|, P, out)
            contrib = torch.einsum("r,rpo->o", offsets.double().to(contrib.device), contrib)
            _fold_constant(ws, module, contrib, done)
            padding = getattr(module, "padding", 0)
            if isinstance(module, nn.modules.conv._ConvNd) and (
                padding == "same" or any(int(p) > 0 for p in padding)
            ):
                notes.append(
                    f"{member.name}: a nonzero constant folded through a padded convolution is "
                    "exact away from the borders only"
                )
        if new_w is not None and id(w) not in done:
            ws.set(module, path, new_w.to(w.dtype).movedim(0, dim))
            done.add(id(ws.get(module, path)))
    return notes


def _fold_constant(ws: Workspace, module: nn.Module, contrib: Tensor, done: set[int]) -> None:
    """Add ``contrib`` (one value per output) to the consumer's bias; without one, take it
    from the running mean of the norm after it, or give the consumer a new bias."""
    bias_path = resizer_for(module).bias or "bias"
    bias = ws.get(module, bias_path)
    if bias is None:
        norm = ws.norms_after.get(id(module))
        if norm is not None:
            mean = ws.get(norm, "running_mean")
            if mean is not None:  # no running statistics: the norm drops the constant itself
                ws.set(
                    norm, "running_mean", (mean.double() - contrib.to(mean.device)).to(mean.dtype)
                )
            return
        like = ws.get(module, consumer_weight_spec(module)[0])
        bias = ws.add_bias(module, bias_path, contrib.numel(), like)
    if id(bias) in done:
        return
    ws.set(module, bias_path, (bias.detach().double() + contrib.to(bias.device)).to(bias.dtype))
    done.add(id(ws.get(module, bias_path)))


def remove_units(ws: Workspace, members: list[GroupMember], units: list[int]) -> None:
    """Remove ``units`` (plan indices) from every member of the group."""
    for member in members:
        ws.remove(member, [p for u in units for p in member.positions[u]])


# --- growth --------------------------------------------------------------------------------
def _copies(ws: Workspace, member: GroupMember, spec: AxisSpec, t: Tensor, sources: list[int]):
    pos = _unit_positions(ws, member, sources).flatten().to(t.device)
    return t.detach().index_select(spec.dim % t.dim(), pos)


def _slice_shape(t: Tensor, spec: AxisSpec, count: int) -> list[int]:
    shape = list(t.shape)
    shape[spec.dim % t.dim()] = count
    return shape


def expand_units(
    ws: Workspace,
    members: list[GroupMember],
    count: int,
    init: str,
    sources: list[int] | None,
    noise: float = 0.0,
    outgoing: Tensor | None = None,
    epsilon: float = 0.0,
) -> list[str]:
    """Append ``count`` units to every member (see the module docstring). ``outgoing``:
    GradMax's consumer columns ``(out, count)``; ``epsilon``: GradMax's bias on new units."""
    notes: list[str] = []
    bad = [m.name for m in members if not m.appendable() or not resizer_for(m.module).grows]
    if bad:
        raise SurgeryError(
            f"cannot grow: modules {bad} hold the units at an offset (concat) or cannot grow"
        )
    if init == "net2net":
        if not sources or len(sources) != count:
            raise SurgeryError("net2net growth needs one source unit per new unit")
        split = Counter(sources)
    scaled: set[int] = set()  # consumer weights already split (tied weights: split once)
    consumer_ties = {  # ties whose tensor is some consumer's weight: new slices are zero
        id(t) for m in _consumers(members)
        if (t := ws.tie_of(m.module, consumer_weight_spec(m.module)[0])) is not None
    }  # fmt: skip
    for member in members:
        module = member.module
        resizer = resizer_for(module)
        per_unit = len(member.positions[0])
        if member.side == "in" and resizer.consumes and init == "net2net":
            path = consumer_weight_spec(module)[0]
            w = ws.get(module, path)
            if id(w) not in scaled:
                _split_sources(ws, member, module, split, per_unit)
                scaled.add(id(ws.get(module, path)))

        def init_slices(
            spec: AxisSpec, t: Tensor, n: int, member=member, module=module, resizer=resizer
        ) -> Tensor:  # fmt: skip
            shape = _slice_shape(t, spec, n)  # n = count · positions per unit
            name = spec.path.rpartition(".")[2]
            tie = ws.tie_of(module, spec.path)
            if init == "zero_outgoing" and tie is not None and id(tie) in consumer_ties:
                return t.new_zeros(shape)  # tied to a consumer's weight: zero at every owner
            if init == "net2net":
                new = _copies(ws, member, spec, t, sources)
                if noise and member.side == "out" and name == "weight" and resizer.consumes:
                    new = new + noise * t.detach().std() * torch.randn_like(new)
                return new
            if resizer.norm_defaults:
                value = resizer.norm_defaults.get(name, 0.0)
                if init == "gradmax" and name == "bias":
                    value = epsilon
                return t.new_full(shape, value)
            if member.side == "out":  # incoming weights of the new units
                if init == "gradmax":
                    fill = epsilon if name == "bias" and not _has_norm(members) else 0.0
                    return t.new_full(shape, fill)
                if isinstance(module, nn.Embedding):
                    return torch.randn(shape, dtype=t.dtype, device=t.device)
                bound = fan_in_bound(module)
                return torch.empty(shape, dtype=t.dtype, device=t.device).uniform_(-bound, bound)
            # outgoing (consumer columns)
            if init == "random":
                bound = fan_in_bound(module)
                return torch.empty(shape, dtype=t.dtype, device=t.device).uniform_(-bound, bound)
            if init == "gradmax" and outgoing is not None and t.dim() == 2:
                return outgoing.to(dtype=t.dtype, device=t.device)
            return t.new_zeros(shape)

        ws.append(member, count * per_unit, init_slices)
    if init == "net2net" and noise:
        notes.append(f"net2net with noise {noise}: the copies differ from their sources")
    if init in ("random",):
        notes.append("random growth changes the function")
    if init == "gradmax" and epsilon:
        notes.append(f"gradmax: new units get bias {epsilon} so that a ReLU passes gradients")
    return notes


def _split_sources(ws: Workspace, member: GroupMember, module: nn.Module, split: Counter,
                   per_unit: int) -> None:  # fmt: skip
    """Net2Net on a consumer: divide each source unit's columns by (its copies + 1)."""
    path, dim = consumer_weight_spec(module)
    w = ws.get(module, path)
    wm = w.detach().movedim(dim, 0).double().clone()
    uniq = sorted(split)
    upos = _unit_positions(ws, member, uniq)
    factor = torch.tensor(
        [1.0 / (split[s] + 1) for s in uniq], dtype=torch.float64, device=wm.device
    )
    shape = (-1, *([1] * wm.dim()))  # one factor per unit, over (P, out, *k)
    wm[upos.flatten()] = (wm[upos.flatten()].reshape(len(uniq), per_unit, *wm.shape[1:])
                          * factor.reshape(shape)).reshape(-1, *wm.shape[1:])  # fmt: skip
    ws.set(module, path, wm.to(w.dtype).movedim(0, dim))


def _has_norm(members: list[GroupMember]) -> bool:
    return any(resizer_for(m.module).norm_defaults for m in members if m.side == "out")
