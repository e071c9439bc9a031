"""The vectorised greedy orders of the budget policy against slow references.

The compensated order must equal one-at-a-time exact recomputation of the reconstruction loss
(and the earlier rank-one implementation), on random SPD covariances, with fixed units, and
batched over layers of mixed sizes; the uncompensated order must equal recomputing the
mean-replacement loss.
"""

from __future__ import annotations

import pytest
import torch

from policies.greedy import gram, greedy_removal, prune_order, removal_orders

F64 = torch.float64


def _spd(m: int, n: int, gen: torch.Generator, ridge: float = 1e-3) -> torch.Tensor:
    x = torch.randn(n, m, generator=gen, dtype=F64) @ torch.randn(m, m, generator=gen, dtype=F64)
    return x.T @ x / n + ridge * torch.eye(m, dtype=F64)


def _loss(cov: torch.Tensor, v: torch.Tensor, keep: list[int]) -> float:
    """``tr(VΣVᵀ) − tr(W_K Σ_KK⁻¹ W_Kᵀ)`` with ``W = VΣ``, computed from scratch."""
    w = v @ cov
    total = float(((v @ cov) * v).sum())
    if not keep:
        return total
    k = torch.tensor(keep)
    wk = w[:, k]
    return total - float((wk @ torch.linalg.solve(cov[k][:, k], wk.T)).trace())


def _slow_greedy(cov, v, count, fixed=()):
    keep, order, steps = list(range(cov.shape[0])), [], []
    for _ in range(count):
        base = _loss(cov, v, keep)
        best = min(
            (j for j in keep if j not in fixed),
            key=lambda j: _loss(cov, v, [i for i in keep if i != j]),
        )
        keep.remove(best)
        order.append(best)
        steps.append(_loss(cov, v, keep) - base)
    return order, torch.tensor(steps, dtype=F64)


def _rank_one_greedy(cov, consumer, count, fixed=()):
    """The budget policy's earlier implementation (one unit at a time, rows × m downdates)."""
    precision = torch.linalg.inv(cov)
    m = (consumer @ cov) @ precision
    alive = torch.ones(cov.shape[0], dtype=torch.bool)
    alive[list(fixed)] = False
    removed = []
    for _ in range(count):
        delta = m.square().sum(0) / precision.diagonal()
        delta = torch.where(alive, delta, torch.full_like(delta, float("inf")))
        j = int(torch.argmin(delta))
        pj = precision[j].clone()
        m = m - torch.outer(m[:, j], pj) / pj[j]
        precision = precision - torch.outer(pj, pj) / pj[j]
        alive[j] = False
        removed.append(j)
    return removed


@pytest.mark.parametrize("seed", range(12))
def test_vectorised_greedy_equals_exact_recomputation(seed):
    gen = torch.Generator().manual_seed(seed)
    m = int(torch.randint(3, 14, (), generator=gen))
    rows = int(torch.randint(1, 20, (), generator=gen))
    cov = _spd(m, int(torch.randint(m, 4 * m, (), generator=gen)), gen)
    v = torch.randn(rows, m, generator=gen, dtype=F64)
    fixed = [0] if seed % 3 == 0 else []
    count = m - 1 - len(fixed)
    order, steps = greedy_removal(cov, v, count, fixed)
    slow_order, slow_steps = _slow_greedy(cov, v, count, fixed)
    assert order == slow_order
    torch.testing.assert_close(steps, slow_steps, rtol=1e-6, atol=1e-9)
    assert order == _rank_one_greedy(cov, v, count, fixed)
    assert not set(order) & set(fixed)


def test_batched_layers_of_mixed_sizes_and_counts_equal_one_at_a_time():
    gen = torch.Generator().manual_seed(7)
    sizes, counts = [6, 9, 9, 9, 6, 40, 9], [3, 8, 2, 0, 4, 31, 6]
    covs = [_spd(m, 3 * m, gen) for m in sizes]
    vs = [torch.randn(12, m, generator=gen, dtype=F64) for m in sizes]
    fixed = [[], [4], [], [], [0, 1], [3, 7, 11], []]
    batched = removal_orders(covs, [v.T @ v for v in vs], counts, fixed)
    for b, (order, steps) in enumerate(batched):
        assert len(order) == counts[b] and not set(order) & set(fixed[b])
        assert order == _rank_one_greedy(covs[b], vs[b], counts[b], fixed[b]), b
        alone_order, alone_steps = greedy_removal(covs[b], vs[b], counts[b], fixed[b])
        assert order == alone_order
        torch.testing.assert_close(steps, alone_steps)
    # a wide layer (compaction on) still matches the exact recomputation
    order, steps = batched[5]
    assert order == _slow_greedy(covs[5], vs[5], 31, fixed[5])[0]
    # a prefix of a longer run is the shorter run (cost allocation relies on it)
    assert removal_orders(covs[5:6], [vs[5].T @ vs[5]], [10], fixed[5:6])[0][0] == order[:10]


def test_more_removals_than_candidates_are_capped():
    cov = _spd(4, 20, torch.Generator().manual_seed(1))
    order, steps = greedy_removal(cov, torch.eye(4, dtype=F64), 10, fixed=[2])
    assert sorted(order) == [0, 1, 3] and len(steps) == 3


def _prune_loss(h: torch.Tensor, removed: list[int]) -> float:
    r = torch.tensor(removed, dtype=torch.long)
    return float(h[r][:, r].sum()) if removed else 0.0


@pytest.mark.parametrize("seed", range(6))
def test_prune_order_equals_recomputing_the_mean_replacement_loss(seed):
    gen = torch.Generator().manual_seed(seed)
    m = 10
    covs = [_spd(m, 30, gen) for _ in range(3)]  # a residual group of three producers
    v = torch.randn(15, m, generator=gen, dtype=F64)
    h = gram([v]) * sum(covs)
    fixed = [4] if seed % 2 else []
    order, steps = prune_order(h, 7, fixed)
    removed: list[int] = []
    for j, step in zip(order, steps.tolist()):
        candidates = [i for i in range(m) if i not in removed and i not in fixed]
        best = min(candidates, key=lambda i: _prune_loss(h, [*removed, i]))
        assert j == best
        assert step == pytest.approx(_prune_loss(h, [*removed, j]) - _prune_loss(h, removed))
        removed.append(j)


def test_gram_by_blocks_equals_one_product():
    gen = torch.Generator().manual_seed(3)
    parts = [torch.randn(r, 300, generator=gen, dtype=F64) for r in (40, 7)]
    v = torch.cat(parts)
    torch.testing.assert_close(gram(parts), v.T @ v)
    cols = [5, 0, 299, 17]
    torch.testing.assert_close(gram(parts, cols), v[:, cols].T @ v[:, cols])
