"""The per-batch kernel and the co-moment paths that the small property tests do not reach."""

from __future__ import annotations

import warnings

import pytest
import torch

from engine.stats import CoMoments, Moments, NeuronAccumulator, merge_comoments, merge_moments
from engine.stats.accumulator import SYMMETRIC_FROM, NonFiniteStatisticsWarning
from engine.stats.batch_rows import SCRATCH_FROM, scratch_like


def _reference(batches):
    m, cm = Moments.empty(batches[0].shape[1]), CoMoments.empty(batches[0].shape[1])
    for b in batches:
        m = merge_moments(m, Moments.from_samples(b.double()))
        cm = merge_comoments(cm, CoMoments.from_samples(b.double()))
    return m, cm


@pytest.mark.parametrize(
    ("units", "rows"),
    [(SYMMETRIC_FROM + 3, 40), (SYMMETRIC_FROM + 3, 300), (6, 4), (6, 50)],
)
def test_every_cross_path_matches_the_reference_and_leaves_out_bad_batches(units, rows):
    """Wide layers with short batches take the symmetric three-block products, the others a
    masked ``addmm_`` or a masked product; a batch with a NaN adds nothing anywhere."""
    gen = torch.Generator().manual_seed(0)
    batches = [torch.randn(rows + i, units, generator=gen) * 3 + 5 for i in range(5)]
    poisoned = batches[2].clone()
    poisoned[1, 4] = float("nan")
    acc = NeuronAccumulator(units, correlation=True, flush_every=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NonFiniteStatisticsWarning)
        for b in (*batches[:2], poisoned, *batches[3:]):
            acc.update(b)
        total, cm = acc.total(), acc.comoments()
    ref, ref_cm = _reference([b for i, b in enumerate(batches) if i != 2])
    assert total.n == ref.n == cm.n
    assert total.nonfinite.sum().item() == 1.0
    torch.testing.assert_close(total.mean, ref.mean, rtol=1e-6, atol=1e-5)
    torch.testing.assert_close(total.variance, ref.variance, rtol=2e-5, atol=1e-5)
    torch.testing.assert_close(cm.c, ref_cm.c, rtol=1e-4, atol=1e-2)


def test_checkpoint_copies_the_in_place_co_moment_buffer():
    acc = NeuronAccumulator(SYMMETRIC_FROM, correlation=True, flush_every=10)
    acc.update(torch.randn(8, SYMMETRIC_FROM))
    token = acc.checkpoint()
    acc.update(torch.randn(8, SYMMETRIC_FROM) * 100)  # summed into the buffer in place
    acc.restore(token)
    twin = NeuronAccumulator(SYMMETRIC_FROM, correlation=True, flush_every=10)
    twin.restore(token)  # a token restored twice stays the same
    assert torch.equal(acc.comoments().c, twin.comoments().c)
    assert acc.total().n == 8


def test_cpu_scratch_is_reused_only_for_large_batches():
    big = torch.zeros(SCRATCH_FROM // 4 + 10)
    assert scratch_like(big).data_ptr() == scratch_like(big[:-5]).data_ptr()
    small = torch.zeros(16)
    assert scratch_like(small).data_ptr() != scratch_like(big).data_ptr()
