"""Greedy removal orders for the budget policy, vectorised over layers.

**Compensated (fold) order.** With ``Σ`` the ridge-regularised covariance of a layer's units
and ``V`` its consumer weights, keeping the set K costs ``tr(VΣVᵀ) − tr(W_K Σ_KK⁻¹ W_Kᵀ)``
(``W = VΣ``). Removing unit ``j`` from K raises it by ``N_jj / P_jj`` with ``P = Σ_KK⁻¹`` and
``N = P W_KᵀW_K P``; at the start ``W P = V``, so ``N = G = VᵀV`` (the consumer's Gram matrix:
the rows of ``V`` never enter the loop). Removing ``j`` downdates both by rank one,
``u = P[:, j] / P_jj``: ``P −= u·P[:, j]ᵀ`` and ``N −= n·uᵀ + u·(n − N_jj·u)ᵀ`` (``n =
N[:, j]``). :func:`removal_orders` runs these steps for every layer of one size at once
(batched ``baddbmm``) and drops removed units from the matrices every few steps, so a step
costs O(|K|²) per layer and no Python runs per unit.

**Uncompensated (prune) order.** Replacing the units R by their means costs
``Σ_{i,j∈R} H_ij`` with ``H = G ∘ Σ`` (element-wise); adding ``j`` to R raises it by
``H_jj + 2·Σ_{r∈R} H_jr`` (:func:`prune_order`).

>>> cov = torch.tensor([[2.0, 1.9, 0.0], [1.9, 2.0, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
>>> order, costs = greedy_removal(cov, torch.eye(3, dtype=torch.float64), 1)
>>> order  # unit 0 is almost a copy of unit 1: removing it (or 1) costs least
[0]
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from itertools import pairwise

import torch
from torch import Tensor

__all__ = [
    "fold_coefficients",
    "gram",
    "greedy_removal",
    "prune_order",
    "reconstruction_loss",
    "removal_orders",
]


def _inverse(cov: Tensor) -> Tensor:
    """Inverse of a batch of positive definite matrices (Cholesky; plain inverse when the
    factorisation fails numerically)."""
    factor, info = torch.linalg.cholesky_ex(cov)
    if bool((info == 0).all()):
        return torch.cholesky_inverse(factor)
    return torch.linalg.inv(cov)


def gram(weights: Sequence[Tensor], columns: Sequence[int] | None = None) -> Tensor:
    """``VᵀV`` (float64) of the consumer weights ``V = cat(weights)`` (each ``(rows, m)``),
    restricted to ``columns``, without stacking the rows; wide ones go by blocks of the upper
    triangle (about a third fewer multiplications than one product).

    >>> v = torch.arange(6.0).reshape(3, 2)
    >>> gram([v[:1], v[1:]]).tolist()
    [[20.0, 26.0], [26.0, 35.0]]
    """
    total = None
    for w in weights:
        wt = w.T.to(torch.float64)  # (m, rows): contiguous for the layout's consumer slices
        if columns is not None:
            wt = wt[torch.as_tensor(columns)]
        part = _upper_blocks(wt) if wt.shape[0] >= 256 else wt @ wt.T
        total = part if total is None else total.add_(part)
    assert total is not None, "gram of no weights"
    return total


def _upper_blocks(wt: Tensor, blocks: int = 4) -> Tensor:
    m = wt.shape[0]
    out = torch.empty(m, m, dtype=wt.dtype)
    edges = [round(i * m / blocks) for i in range(blocks + 1)]
    for a, b in pairwise(edges):
        part = wt[a:b] @ wt[a:].T  # rows a:b, columns a:
        out[a:b, a:] = part
        out[b:, a:b] = part[:, b - a :].T
    return out


def removal_orders(
    covs: Sequence[Tensor],
    grams: Sequence[Tensor],
    counts: Sequence[int],
    fixed: Sequence[Sequence[int]] | None = None,
) -> list[tuple[list[int], Tensor]]:
    """Greedy compensated removal order of each layer (see the module docstring).

    ``covs[b]``: the ridge-regularised covariance (m×m, positive definite) of layer ``b``;
    ``grams[b]``: its consumer Gram matrix ``VᵀV`` (m×m); ``counts[b]``: how many units to
    remove; ``fixed[b]``: units that are never removed. Returns, per layer, the removed
    indices in order and the loss increase of each step (float64). Layers of the same size
    are processed together.

    >>> cov = torch.tensor([[1.0, 0.9], [0.9, 1.0]], dtype=torch.float64)
    >>> [(order, [round(c, 6) for c in costs.tolist()]) for order, costs in
    ...  removal_orders([cov, torch.eye(2, dtype=torch.float64)], [torch.eye(2)] * 2, [1, 0])]
    [([0], [0.19]), ([], [])]
    """
    fixed = fixed if fixed is not None else [()] * len(covs)
    out: list[tuple[list[int], Tensor]] = [([], torch.zeros(0, dtype=torch.float64))] * len(covs)
    by_size: dict[int, list[int]] = defaultdict(list)
    for b, cov in enumerate(covs):
        if counts[b] > 0:
            by_size[cov.shape[0]].append(b)
    for size, members in by_size.items():
        cov = torch.stack([covs[b].to(torch.float64) for b in members])
        gram = torch.stack([grams[b].to(torch.float64) for b in members])
        mask = torch.zeros(len(members), size, dtype=torch.bool)
        for row, b in enumerate(members):
            mask[row, list(fixed[b])] = True
        want = torch.tensor([counts[b] for b in members]).clamp(max=(~mask).sum(1))
        orders, costs = _batched_orders(cov, gram, want, mask)
        for row, b in enumerate(members):
            k = int(want[row])
            out[b] = (orders[row, :k].tolist(), costs[row, :k].clone())
    return out


def _batched_orders(
    cov: Tensor, gram: Tensor, counts: Tensor, fixed: Tensor
) -> tuple[Tensor, Tensor]:
    """The loop of :func:`removal_orders` for ``B`` layers of one size: ``(B, max count)``
    removed indices and step costs (entries past a layer's count are unused)."""
    steps = int(counts.max()) if counts.numel() else 0
    batch_size = cov.shape[0]
    orders = torch.full((batch_size, steps), -1, dtype=torch.long)
    costs = torch.zeros(batch_size, steps, dtype=torch.float64)
    picks = torch.zeros(batch_size, steps, dtype=torch.long)  # positions, mapped at compaction
    p_mat, n_mat = _inverse(cov), gram.clone()
    rows = torch.arange(batch_size)  # current batch row -> layer row
    index = torch.arange(cov.shape[1]).expand(batch_size, -1).clone()  # position -> unit
    fixed = fixed.clone()
    candidate = ~fixed  # removable and not yet removed
    left = counts.clone()
    start, inf = 0, torch.tensor(float("inf"), dtype=torch.float64)
    ar = torch.arange(batch_size)
    all_active = bool((left > 0).all())
    for t in range(steps):
        delta = n_mat.diagonal(0, 1, 2) / p_mat.diagonal(0, 1, 2)
        j = torch.where(candidate, delta, inf).argmin(1)
        picks[rows, t] = j
        costs[rows, t] = delta[ar, j]
        p, n = p_mat[ar, :, j], n_mat[ar, :, j]  # (B, m) pivot columns
        u = p / p[ar, j][:, None]
        v = n - n[ar, j][:, None] * u
        if not all_active:
            active = left > 0
            u = u * active[:, None]  # finished layers are left as they are
            ar_on, j_on = ar[active], j[active]
        else:
            ar_on, j_on = ar, j
        p_mat.baddbmm_(u[:, :, None], p[:, None, :], alpha=-1.0)
        n_mat.baddbmm_(torch.stack([n, u], 2), torch.stack([u, v], 1), alpha=-1.0)
        candidate[ar_on, j_on] = False
        left = left - 1
        all_active = bool((left > 0).all())
        width = p_mat.shape[1]
        done = t + 1 - start
        if t + 1 == steps or done * 8 >= width or not all_active:
            orders[rows, start : t + 1] = index.gather(1, picks[rows, start : t + 1])
            if t + 1 == steps:
                break
            keep = left > 0  # drop finished layers and removed units (same count per row)
            cols = (candidate | fixed)[keep].nonzero()[:, 1].reshape(int(keep.sum()), -1)
            p_mat, n_mat = _take(p_mat[keep], cols), _take(n_mat[keep], cols)
            index, candidate = index[keep].gather(1, cols), candidate[keep].gather(1, cols)
            fixed = fixed[keep].gather(1, cols)
            rows, left = rows[keep], left[keep]
            ar = torch.arange(len(rows))
            all_active, start = True, t + 1
    return orders, costs


def _take(mat: Tensor, cols: Tensor) -> Tensor:
    """``mat[b][cols[b]][:, cols[b]]`` for every batch row ``b``."""
    m, k = mat.shape[1], cols.shape[1]
    rows = mat.gather(1, cols[:, :, None].expand(-1, -1, m))
    return rows.gather(2, cols[:, None, :].expand(-1, k, -1))


def greedy_removal(
    cov: Tensor, consumer: Tensor, count: int, fixed: Sequence[int] = ()
) -> tuple[list[int], Tensor]:
    """Indices to remove (in order) so that the reconstruction loss stays smallest.

    ``cov`` is the ridge-regularised covariance (m×m, positive definite), ``consumer`` the
    consumer weights (rows×m); ``fixed`` units are never removed. Returns the removed indices
    and the loss increase of each step (one layer of :func:`removal_orders`).

    >>> cov = torch.diag(torch.tensor([3.0, 1.0, 2.0], dtype=torch.float64))
    >>> greedy_removal(cov, torch.eye(3, dtype=torch.float64), 2)[0]
    [1, 2]
    """
    consumer = consumer.to(torch.float64)
    return removal_orders([cov], [consumer.T @ consumer], [count], [fixed])[0]


def prune_order(energy: Tensor, count: int, fixed: Sequence[int] = ()) -> tuple[list[int], Tensor]:
    """Greedy order for removing units without compensation (replaced by their means).

    ``energy`` is ``H = G ∘ Σ`` (m×m; for a residual group the sum over its producers);
    returns the removed indices and each step's loss increase ``H_jj + 2·Σ_{r∈R} H_jr``.

    >>> h = torch.tensor([[1.0, -0.9, 0.0], [-0.9, 1.0, 0.0], [0.0, 0.0, 1.5]])
    >>> order, costs = prune_order(h.double(), 2)
    >>> order, [round(c, 3) for c in costs.tolist()]
    ([0, 1], [1.0, -0.8])
    """
    energy = energy.to(torch.float64)
    m = energy.shape[0]
    alive = torch.ones(m, dtype=torch.bool)
    alive[list(fixed)] = False
    count = max(0, min(count, int(alive.sum())))
    gain = energy.diagonal().clone()
    picks = torch.empty(count, dtype=torch.long)
    steps = torch.empty(count, dtype=torch.float64)
    inf = torch.tensor(float("inf"), dtype=torch.float64)
    for t in range(count):
        j = torch.where(alive, gain, inf).argmin()
        picks[t], steps[t] = j, gain[j]
        gain.add_(energy[:, j], alpha=2.0)
        alive[j] = False
    return picks.tolist(), steps


def fold_coefficients(cov: Tensor, ridge: float, keep: list[int], remove: list[int]) -> Tensor:
    """``coefᵀ`` (|R|×|K|): least squares of the removed units on the kept ones.

    >>> cov = torch.tensor([[1.0, 2.0], [2.0, 4.0]], dtype=torch.float64)  # a_1 = 2·a_0
    >>> fold_coefficients(cov, 0.0, [0], [1])
    tensor([[2.]], dtype=torch.float64)
    """
    k, r = torch.tensor(keep), torch.tensor(remove)
    skk = cov[k][:, k] + ridge * torch.eye(len(keep), dtype=cov.dtype)
    return torch.linalg.solve(skk, cov[k][:, r]).T


def reconstruction_loss(
    cov: Tensor,
    consumer: Tensor | None,
    keep: list[int],
    remove: list[int],
    coef_t: Tensor,
    gram: Tensor | None = None,
) -> float:
    """``tr(V_R S V_Rᵀ)`` with ``S`` the covariance of ``a_R − coefᵀ a_K`` (no ridge); give
    ``gram = VᵀV`` instead of ``consumer`` to skip the consumer's rows.

    >>> cov = torch.tensor([[1.0, 2.0], [2.0, 4.0]], dtype=torch.float64)
    >>> reconstruction_loss(cov, torch.eye(2, dtype=torch.float64), [0], [1],
    ...                     fold_coefficients(cov, 0.0, [0], [1]))
    0.0
    """
    k, r = torch.tensor(keep), torch.tensor(remove)
    srr, skr, skk = cov[r][:, r], cov[k][:, r], cov[k][:, k]
    s = srr - coef_t @ skr - skr.T @ coef_t.T + coef_t @ skk @ coef_t.T
    if gram is not None:
        return float((gram[r][:, r] * s).sum().clamp_min(0))
    vr = consumer[:, r]
    return float(((vr @ s) * vr).sum().clamp_min(0))
