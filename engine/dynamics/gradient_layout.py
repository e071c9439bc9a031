"""The watched parameters of one device and dtype laid end to end, with their carried state.

With the tensor-op kernel, one recorded step is then a fixed number of tensor ops over one
flat vector, whatever the number of parameters (per-op dispatch, not arithmetic, dominates small
parameters): gradients and weights are copied into flat buffers by one ``torch._foreach_copy_``
(each parameter starting on a block boundary, zero-padded), ``gradient_kernel.StepState.step``
counts everything per block, and one matmul (or ``index_add_``) turns blocks into
per-parameter sums. With the fused kernel (CPU), ``gradient_fused.FusedState.step`` reads each
gradient and weight in place and writes each parameter's sums directly.

The layout is keyed by each parameter's name, object, shape, device and dtype. When surgery
replaces or reshapes a parameter, a new layout is built: unchanged parameters keep their
carried state (a copy of their slices), the others start *fresh* (their next record has no
previous step).

Gradients may be float16/bfloat16 (counted in float32), float32 or float64, dense or sparse (a
sparse gradient is densified: its missing entries are exact zeros).

>>> import torch
>>> from engine.dynamics.gradient_kernel import decode_codes
>>> a, b = torch.nn.Parameter(torch.ones(2, 3)), torch.nn.Parameter(torch.zeros(4))
>>> a.grad, b.grad = torch.full((2, 3), 0.5), torch.zeros(4)
>>> flat = FlatParameters([("a", a), ("b", b)], eps=1e-3, sign_samples=8)
>>> flat.sizes, flat.fresh, flat.starts
([6, 4], [True, True], [0, 8])
>>> records = flat.step()
>>> records.shape, flat.fresh  # (parameters, RECORD_WIDTH); fresh until the first step
(torch.Size([2, 10]), [False, False])
>>> records[:, :4].tolist()  # numel, fresh, far_kept, far
[[6.0, 1.0, 0.0, 6.0], [4.0, 1.0, 0.0, 0.0]]
>>> decode_codes(flat.sign_samples().numpy())[:, :7].tolist()  # 3: no component
[[1, 1, 1, 1, 1, 1, 3], [0, 0, 0, 0, 3, 3, 3]]
"""

from __future__ import annotations

import weakref

import torch
from torch import nn

from engine.dynamics.gradient_fused import FusedState
from engine.dynamics.gradient_kernel import StepState, choose_block
from engine.dynamics.gradient_stats import RAW


def _work_dtype(dtype: torch.dtype) -> torch.dtype:
    return dtype if dtype in (torch.float32, torch.float64) else torch.float32


class FlatParameters:
    """Flat carried state and scratch for ``named`` parameters (all on one device, one dtype);
    ``old`` hands over the state of unchanged parameters; ``sign_samples`` components per
    parameter (evenly spaced) are kept for the sign heatmap."""

    def __init__(
        self,
        named: list[tuple[str, nn.Parameter]],
        eps: float,
        old: FlatParameters | None = None,
        sign_samples: int = 0,
        kernel: str = "torch",
    ) -> None:
        self.names = [n for n, _ in named]
        self.params = [weakref.ref(p) for _, p in named]
        self.shapes = [tuple(p.shape) for _, p in named]
        self.sizes = [p.numel() for _, p in named]
        first = named[0][1]
        self.device, self.dtype = first.device, first.dtype
        block = choose_block(self.sizes)
        padded = [-(-size // block) * block for size in self.sizes]
        self.starts = [sum(padded[:i]) for i in range(len(padded))]
        total = sum(padded)
        work = _work_dtype(self.dtype)
        self.kernel = kernel
        self._copy_to: dict[int, list[torch.Tensor]] = {}
        self._owner_matrix = None  # blocks → parameters as a (parameters, blocks) 0/1 matrix
        if kernel == "fused":
            if self.device.type != "cpu":
                raise ValueError(f"the fused kernel runs on CPU, not {self.device}")
            self.state: StepState | FusedState = FusedState(
                total, self.bounds(), dtype=work, eps=eps
            )
        else:
            self.state = StepState(total, block=block, dtype=work, device=self.device, eps=eps)
            self._tensor_kernel_buffers(named, padded, block)
        self.fresh = [True] * len(named)
        self._sample_index = self.state.sample_index(self.bounds(), max(sign_samples, 1))
        self._samples = torch.empty(self._sample_index.shape, dtype=torch.int8, device=self.device)
        self._packed = torch.empty(self._samples[:, 0].shape, dtype=torch.int8, device=self.device)
        self._flat_bytes = self.state.flat()
        self._carry(named, old)
        head = torch.tensor([self.sizes, self.fresh], dtype=torch.float64).T
        self._records = torch.cat((head, torch.zeros(len(named), len(RAW))), 1).to(self.device)
        self._flags_sent = False  # the fresh flags went out with the last record
        # views made once (a view costs about an op's dispatch)
        self._sums = self._records[:, 2:]
        if kernel == "fused":
            self._sums_numpy = self._sums.numpy()  # the kernel writes each parameter's row
        else:
            self._blocks_t = self.state.out.T
        self._sample_far, self._sample_sign = self._samples.unbind(1)

    def _tensor_kernel_buffers(
        self, named: list[tuple[str, nn.Parameter]], padded: list[int], block: int
    ) -> None:
        """The tensor-op kernel's copy targets and block → parameter map."""
        # the step copies every gradient and weight with one ``_foreach_copy_`` into views of
        # the flat buffers shaped like the parameters (the weights' buffer alternates with the
        # previous weights' one, so there is a set of views for each)
        s = self.state
        grads = self._shaped(s.grad, named)
        self._copy_to = {
            id(buf): grads + self._shaped(buf, named) for buf in (s.weights, s.prev_weights)
        }
        owner = torch.tensor([i for i, p in enumerate(padded) for _ in range(p // block)])
        self._block_owner = owner.to(self.device)
        if len(named) * len(owner) <= 1 << 16:  # small: one matmul beats zero_ + index_add_
            matrix = torch.zeros((len(named), len(owner)), dtype=torch.float64)
            matrix[owner, torch.arange(len(owner))] = 1.0
            self._owner_matrix = matrix.to(self.device)

    # --- identity -------------------------------------------------------------------------
    def matches(self, named: list[tuple[str, nn.Parameter]]) -> bool:
        """Same names, same objects (alive), shapes, dtype and device: the state is valid."""
        return len(named) == len(self.names) and all(
            name == mine
            and ref() is p
            and p.shape == shape
            and p.dtype == self.dtype
            and p.device == self.device
            for (name, p), mine, ref, shape in zip(named, self.names, self.params, self.shapes)
        )

    def _shaped(self, flat: torch.Tensor, named: list[tuple[str, nn.Parameter]]) -> list:
        """Views of ``flat`` at each parameter's slice, shaped like the parameter. The padding
        between slices is never written by the step's copy: it stays zero (the kernel's
        in-place ops map zero to zero)."""
        return [flat[a:b].view(p.shape) for (a, b), (_, p) in zip(self.bounds(), named)]

    def bounds(self) -> list[tuple[int, int]]:
        """``[start, stop)`` of each parameter in the flat vector (padding excluded)."""
        return [(a, a + size) for a, size in zip(self.starts, self.sizes)]

    # --- construction ---------------------------------------------------------------------
    def _carry(self, named: list[tuple[str, nn.Parameter]], old: FlatParameters | None) -> None:
        state = self.state
        prev_sign, prev_far = state.row("prev_sign"), state.row("prev_far")
        kept = old._slices() if old is not None else {}
        with torch.no_grad():
            for i, ((name, p), (a, b)) in enumerate(zip(named, self.bounds())):
                carried = kept.get(name)
                if carried is not None and carried[0]() is p and carried[1] == tuple(p.shape):
                    _, _, sign, far, weights, fresh = carried
                    prev_sign[a:b] = sign
                    prev_far[a:b] = far
                    state.prev_weights[a:b] = weights
                    self.fresh[i] = fresh
                else:
                    state.prev_weights[a:b] = p.detach().reshape(-1)

    def _slices(self) -> dict[str, tuple]:
        s = self.state
        sign, far = s.row("prev_sign"), s.row("prev_far")
        return {
            name: (ref, shape, sign[a:b], far[a:b], s.prev_weights[a:b], fresh)
            for name, ref, shape, (a, b), fresh in zip(
                self.names, self.params, self.shapes, self.bounds(), self.fresh
            )
        }

    # --- one step -------------------------------------------------------------------------
    def step(self) -> torch.Tensor:
        """One step over every parameter (each must have a gradient): ``(parameters,
        2 + len(RAW))`` records (numel, fresh, sums) on the device, valid until the next step."""
        params = [ref() for ref in self.params]
        if self.kernel == "fused":
            self.state.step(params, self._sums_numpy)
        else:
            self._tensor_step(params)
        records = self._records
        if self._flags_sent:
            records[:, 1].zero_()
            self._flags_sent = False
        if any(self.fresh):
            self.fresh, self._flags_sent = [False] * len(self.names), True
        return records

    def _tensor_step(self, params: list[nn.Parameter]) -> None:
        sources = [p.grad for p in params]
        if any(g.is_sparse for g in sources):  # densified: missing entries are exact zeros
            sources = [g.to_dense() if g.is_sparse else g for g in sources]
        with torch.no_grad():
            torch._foreach_copy_(self._copy_to[id(self.state.weights)], sources + params)
        self.state.step()  # block sums into state.out (self._blocks_t is its transpose)
        if self._owner_matrix is not None:
            torch.mm(self._owner_matrix, self._blocks_t, out=self._sums)
        else:
            self._sums.zero_().index_add_(0, self._block_owner, self._blocks_t)

    def sign_samples(self) -> torch.Tensor:
        """``(parameters, sign_samples)`` ``int8``: ``sign + 4·far`` of the last step at each
        parameter's sampled components (``gradient_kernel.decode_codes`` gives the sign codes;
        slots past a parameter's size hold ``PACKED_ABSENT``). Valid until the next call."""
        torch.take(self._flat_bytes, self._sample_index, out=self._samples)
        return torch.add(self._sample_sign, self._sample_far, alpha=4, out=self._packed)
