"""Statistics that follow a layer's units through surgery (prune, reorder, merge, grow).

After surgery a layer's units are ``keep`` (old local indices, in their new order) followed by
``added`` new units. The ``remap_*`` functions slice and extend every per-unit state the same
way, so tracking goes on with the same ``NeuronAccumulator`` (and the same ``NeuronEngine``):

>>> import torch
>>> from engine.stats import NeuronAccumulator
>>> acc = NeuronAccumulator(3, correlation=True)
>>> acc.update(torch.tensor([[1.0, 2.0, 3.0], [3.0, 4.0, 5.0]]))
>>> remap_accumulator(acc, keep=[2, 0], added=1)  # drop unit 1, swap 0 and 2, grow one
>>> acc.total().mean.tolist()
[4.0, 2.0, nan]
>>> acc.update(torch.tensor([[7.0, 5.0, 9.0]]))  # the new width
>>> acc.total().n, acc.total().mean.tolist()
(3, [5.0, 3.0, nan])

**Survivors** keep their statistics bitwise (a gather), and later batches merge into them
exactly as if the other units had never existed: every statistic of a unit, and every
co-moment of a pair, depends only on that unit's (that pair's) own observations.

**Merged units.** Folding unit ``j`` into ``i`` edits the *consumers'* weights; ``i``'s own
activations are unchanged by the fold, so its recorded history stays what it was (``i`` is in
``keep`` with its statistics as they were) and ``j``'s is dropped (``j`` is not in ``keep``).
What changes is what ``i`` *means* downstream, not what it has emitted.

**New units.** ``Moments`` and ``CoMoments`` keep a single count ``n`` for all units, and the
hot path (``NeuronAccumulator.update``/``flush``) adds every batch to every unit with that one
``n``. A unit grown now has seen none of those ``n`` observations, so no finite value is
right for it. Zeros would be silently wrong (``fire == 0`` reads as "never fired": a dead unit
that a policy would prune at once; a mean of 0 looks like a measured mean), and ±inf extremes
would turn into min/max of a *part* of the observations presented as the whole. So in any
state that already holds observations (``n > 0``) every statistic of a new unit is **NaN**,
meaning "unknown". NaN is absorbing under the exact merges (``NaN + x``, ``torch.minimum`` and
``torch.maximum`` propagate it), so a state that includes pre-surgery observations never
turns a new unit's partial history into a plausible number: derived readings are NaN too
(``variance``, ``firing_rate``, ``pearson``, ``fit_matrix``), ``never_fired`` is False, and
snapshots/histories write ``None``. A state with no observations (``n == 0``) is simply
extended with ``Moments.empty`` values, which is exact.

In a ``NeuronAccumulator`` this means:

* the running total and the co-moments: survivors exact over pre- and post-surgery data; new
  units NaN until ``reset()``, after which every unit starts together and all are exact;
* the current window likewise; every window opened after the surgery (``take_window``) is
  exact for every unit, new ones included: the hot path centres a window's batches on the
  running mean where it is known and on the window's first sample where it is not. Every
  field is therefore either exact or NaN, never a wrong number.

A per-unit count tensor would make new units exact at once, but it changes ``Moments`` (the
snapshot format, the Chan merge, the per-rank all-reduce of design decision 8) and the hot
path for an event that happens only at surgery; the shared ``n`` keeps survivors' merges
bitwise what they were. All work is tensor ops on the state's device (no loop over units).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from engine.errors import ConfigurationError, CorrelationLimitError, NeuronNotFoundError
from engine.stats.accumulator import NeuronAccumulator
from engine.stats.comoments import CoMoments
from engine.stats.moments import TENSOR_FIELDS, Moments

Keep = Sequence[int] | torch.Tensor

__all__ = [
    "PreparedRemap",
    "keep_index",
    "prepare_remap",
    "remap_accumulator",
    "remap_comoments",
    "remap_moments",
]


def _owner(name: str | None) -> str:
    return "the statistics" if name is None else f"layer {name!r}"


def keep_index(
    keep: Keep,
    num_units: int,
    *,
    name: str | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Validate ``keep`` (old local indices of the surviving units, in their new order) and
    return it as a 1-D ``long`` tensor on ``device``.

    Raises ``NeuronNotFoundError`` for indices outside ``0..num_units-1`` and
    ``ConfigurationError`` for duplicates or a non-integer / non-1-D ``keep``, naming the
    layer when ``name`` is given.

    >>> keep_index([2, 0], 3).tolist()
    [2, 0]
    >>> try:
    ...     keep_index([0, 3], 3, name="fc1")
    ... except NeuronNotFoundError as e:
    ...     print(e)
    layer 'fc1' has 3 units; kept local indices [3] are out of range 0..2
    """
    owner = _owner(name)
    idx = keep if isinstance(keep, torch.Tensor) else torch.as_tensor(keep)
    if idx.numel() == 0:
        idx = idx.to(torch.long)
    if idx.dim() != 1:
        raise ConfigurationError(
            f"{owner}: keep must be a 1-D sequence of local indices, got shape {tuple(idx.shape)}"
        )
    if idx.dtype == torch.bool or idx.is_floating_point() or idx.is_complex():
        raise ConfigurationError(
            f"{owner}: keep must hold integer local indices, got dtype {idx.dtype}"
        )
    idx = idx.to(torch.long)
    bad = idx[(idx < 0) | (idx >= num_units)]
    if bad.numel():
        shown = bad[:12].tolist()
        more = "" if bad.numel() <= 12 else f" … ({bad.numel()} in all)"
        raise NeuronNotFoundError(
            f"{owner} has {num_units} units; kept local indices {shown}{more} are out of range "
            f"0..{num_units - 1}"
        )
    ordered = idx.sort().values
    repeated = ordered[1:][ordered[1:] == ordered[:-1]].unique()
    if repeated.numel():
        raise ConfigurationError(
            f"{owner}: keep lists local indices {repeated[:12].tolist()} more than once"
        )
    return idx.to(device) if device is not None else idx


def _check_added(added: int, name: str | None) -> int:
    if isinstance(added, bool) or int(added) != added or added < 0:
        raise ConfigurationError(f"{_owner(name)}: added must be an integer ≥ 0, got {added!r}")
    return int(added)


def _unknown(n: int, added: int, device: torch.device) -> Moments:
    """Statistics of ``added`` units that saw none of a state's ``n`` observations."""
    if n == 0:
        return Moments.empty(added, device)
    nan = torch.full((added,), float("nan"), dtype=torch.float64, device=device)
    return Moments(n, *(nan.clone() for _ in TENSOR_FIELDS))


def _remap_moments(m: Moments, idx: torch.Tensor, added: int) -> Moments:
    kept = m.select(idx)
    if added == 0:
        return kept
    new = _unknown(m.n, added, m.mean.device)
    return Moments(m.n, *(torch.cat([getattr(kept, f), getattr(new, f)]) for f in TENSOR_FIELDS))


def _remap_comoments(cm: CoMoments, idx: torch.Tensor, added: int) -> CoMoments:
    kept = cm.select(idx)
    if added == 0:
        return kept
    k, width = kept.num_units, kept.num_units + added
    fill = float("nan") if cm.n > 0 else 0.0
    mean = torch.cat([kept.mean, kept.mean.new_full((added,), fill)])
    c = kept.c.new_full((width, width), fill)
    c[:k, :k] = kept.c
    return CoMoments(cm.n, mean, c)


def remap_moments(m: Moments, keep: Keep, added: int = 0, *, name: str | None = None) -> Moments:
    """Units ``keep`` (in that order) with their statistics unchanged, then ``added`` new
    units that are unknown (NaN) when ``m.n > 0`` and empty when ``m.n == 0``.

    >>> m = Moments.from_samples(torch.tensor([[1.0, 10.0], [3.0, 20.0]]))
    >>> r = remap_moments(m, [1], added=1)
    >>> r.n, r.mean.tolist(), r.fire.tolist(), r.never_fired.tolist()
    (2, [15.0, nan], [2.0, nan], [False, False])
    """
    idx = keep_index(keep, m.num_units, name=name, device=m.mean.device)
    return _remap_moments(m, idx, _check_added(added, name))


def remap_comoments(
    cm: CoMoments, keep: Keep, added: int = 0, *, name: str | None = None
) -> CoMoments:
    """Rows and columns ``keep`` of the co-moment matrix (and ``mean``), then ``added`` new
    rows/columns that are unknown (NaN) when ``cm.n > 0`` and zero when ``cm.n == 0``.

    >>> x = torch.tensor([[1.0, 2.0, 0.0], [2.0, 4.0, 1.0], [4.0, 1.0, 1.0]])
    >>> r = remap_comoments(CoMoments.from_samples(x), [1, 0], added=1)
    >>> r.c.shape, r.pearson()[0, 1].item() == CoMoments.from_samples(x).pearson()[1, 0].item()
    (torch.Size([3, 3]), True)
    """
    idx = keep_index(keep, cm.num_units, name=name, device=cm.mean.device)
    return _remap_comoments(cm, idx, _check_added(added, name))


def remap_accumulator(acc: NeuronAccumulator, keep: Keep, added: int = 0) -> None:
    """Make ``acc`` follow its layer through surgery, in place.

    Validates ``keep``/``added`` (and the layer's correlation bound) before touching anything,
    flushes pending batches, remaps the running total, the current window and the co-moments,
    sets ``num_units`` to ``len(keep) + added`` and restarts the per-window shift. Afterwards
    ``acc.update`` takes the new width; survivors keep merging exactly. New units read NaN in
    every state that holds pre-surgery observations (see the module docstring).

    Raises ``NeuronNotFoundError``/``ConfigurationError`` for bad indices and
    ``CorrelationLimitError`` when a correlation layer would outgrow ``max_correlation_units``.
    """
    prepare_remap(acc, keep, added).commit()


@dataclass(eq=False)
class PreparedRemap:
    """A validated, computed remap of one accumulator, not yet applied (see
    :func:`prepare_remap`): ``commit()`` only assigns, so it cannot fail half-way."""

    accumulator: NeuronAccumulator
    width: int
    total: Moments | None
    window: Moments | None
    comoments: CoMoments | None

    def commit(self) -> None:
        acc = self.accumulator
        acc._total, acc._window, acc._comoments = self.total, self.window, self.comoments
        acc.num_units = self.width
        acc._reset_pending()
        acc._clear_fresh()  # prepare_remap flushed: nothing is lost


def prepare_remap(acc: NeuronAccumulator, keep: Keep, added: int = 0) -> PreparedRemap:
    """Phase one of :func:`remap_accumulator`: check everything and compute the new states on
    new tensors; ``acc`` itself only has its pending batches flushed (which changes no
    statistic). A transaction prepares every layer first and commits them all at the end.

    >>> acc = NeuronAccumulator(2)
    >>> acc.update(torch.tensor([[1.0, 2.0]]))
    >>> prepared = prepare_remap(acc, keep=[1])
    >>> acc.num_units, prepared.width
    (2, 1)
    >>> prepared.commit(); acc.total().mean.tolist()
    [2.0]
    """
    idx = keep_index(keep, acc.num_units, name=acc.name)
    added = _check_added(added, acc.name)
    width = idx.numel() + added
    bound = acc.max_correlation_units
    if acc.correlation and width > bound:
        mib = width * width * 8 / 2**20
        raise CorrelationLimitError(
            f"layer {acc.name!r} would have {width} units after surgery: its co-moment matrix "
            f"would hold {width}×{width} float64 values ({mib:.0f} MiB), above the bound "
            f"max_correlation_units={bound}; raise the bound, grow less, or leave correlation "
            f"off for this layer"
        )
    acc.flush()
    states = [acc._total, acc._window]
    total, window = (
        None if s is None else _remap_moments(s, idx.to(s.mean.device), added) for s in states
    )
    cm = acc._comoments
    comoments = None if cm is None else _remap_comoments(cm, idx.to(cm.mean.device), added)
    return PreparedRemap(acc, width, total, window, comoments)
