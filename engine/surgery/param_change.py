"""What surgery did to one parameter: :class:`DimRemap`, :class:`ParamChange`, :func:`remap_tensor`.

Surgery replaces an ``nn.Parameter`` by a new, resized one. A :class:`ParamChange` records which
old parameter became which new one and, for each resized dim, a :class:`DimRemap`: the new
parameter's slices along ``dim`` are the old slices ``keep`` (in that order) followed by
``added`` new slices. :func:`remap_tensor` applies those remaps to any tensor shaped like the
old parameter (optimizer state, buffers, statistics). Everything is checked on construction, so
a wrong change fails before anything is touched.

>>> import torch
>>> from torch import nn
>>> old = nn.Parameter(torch.arange(4.0))
>>> change = ParamChange.along(old, nn.Parameter(torch.zeros(3)), dim=0, keep=[3, 1], added=1)
>>> remap_tensor(old.detach(), change.remaps)
tensor([3., 1., 0.])
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from engine.errors import OptimizerRemapError

__all__ = ["DimRemap", "ParamChange", "format_shape", "remap_tensor"]


def format_shape(shape: Iterable[int]) -> str:
    """A shape as error messages print it.

    >>> format_shape(torch.Size([6, 4]))
    '(6, 4)'
    """
    return str(tuple(int(s) for s in shape))


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
                f"dim {self.dim}: keep indices must be 1-D, got shape {format_shape(keep.shape)}"
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
        where = f"parameter of shape {format_shape(old_shape)}"
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
                f"{where}: the new one has shape {format_shape(self.new.shape)}, expected "
                f"{format_shape(expected)} ({detail or 'no remaps'})"
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
