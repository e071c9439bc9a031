"""Similarity of representations: linear CKA (full data and minibatch), cross-correlation.

Representations are ``(samples, features)`` matrices; two layers may have different widths.
Computation is in float64 on the inputs' device.

* ``linear_cka(x, y)``: ``‖Yᵀ X‖²_F / (‖Xᵀ X‖_F ‖Yᵀ Y‖_F)`` on column-centred data (Kornblith
  et al. 2019). 1 for identical representations; invariant to orthogonal transforms and
  isotropic scaling.
* ``unbiased_hsic(K, L)``: the unbiased HSIC estimator of Song et al. (2012) on two Gram
  matrices; ``MinibatchCKA`` averages it over minibatches (Nguyen et al. 2021), so CKA of
  independent representations is ≈ 0 instead of biased upwards.
* ``cross_correlation(x, y)``: Pearson correlation of every feature of ``x`` with every
  feature of ``y`` (NaN where a feature is constant).

>>> import torch
>>> x = torch.randn(50, 6, generator=torch.Generator().manual_seed(0))
>>> q, _ = torch.linalg.qr(torch.randn(6, 6, generator=torch.Generator().manual_seed(1)))
>>> round(linear_cka(x, 3.0 * x @ q), 6)
1.0
"""

from __future__ import annotations

import torch

from engine.dynamics.errors import RepresentationShapeError


def _as_matrix(x: torch.Tensor, name: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise RepresentationShapeError(f"{name}: expected a tensor, got {type(x).__name__}")
    if x.dim() < 2:
        raise RepresentationShapeError(
            f"{name}: expected (samples, features…), got shape {tuple(x.shape)}"
        )
    return x.reshape(x.shape[0], -1).double()


def _pair(x: torch.Tensor, y: torch.Tensor, min_samples: int) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = _as_matrix(x, "x"), _as_matrix(y, "y")
    if x.shape[0] != y.shape[0]:
        raise RepresentationShapeError(
            f"x has {x.shape[0]} samples and y has {y.shape[0]}: CKA compares the same samples"
        )
    if x.shape[0] < min_samples:
        raise RepresentationShapeError(f"need at least {min_samples} samples, got {x.shape[0]}")
    return x, y.to(x.device)


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """Linear CKA of two representations of the same samples (full data, biased HSIC)."""
    x, y = _pair(x, y, 2)
    x, y = x - x.mean(0), y - y.mean(0)
    cross = torch.linalg.matrix_norm(y.T @ x) ** 2
    denom = torch.linalg.matrix_norm(x.T @ x) * torch.linalg.matrix_norm(y.T @ y)
    return float(cross / denom) if float(denom) > 0 else float("nan")


def gram(x: torch.Tensor) -> torch.Tensor:
    """The linear-kernel Gram matrix ``X Xᵀ`` (samples × samples), float64."""
    x = _as_matrix(x, "x")
    return x @ x.T


def unbiased_hsic(k: torch.Tensor, l: torch.Tensor) -> torch.Tensor:  # noqa: E741
    """Unbiased HSIC (Song et al. 2012) of Gram matrices; batched over leading axes.

    ``k`` (…, n, n) and ``l`` (…, n, n) broadcast; n ≥ 4. Returns a tensor of the batch shape.
    """
    n = k.shape[-1]
    if n < 4:
        raise RepresentationShapeError(f"unbiased HSIC needs at least 4 samples, got {n}")
    eye = torch.eye(n, dtype=torch.bool, device=k.device)
    k, l = k.masked_fill(eye, 0.0), l.masked_fill(eye, 0.0)  # noqa: E741
    k_rows, l_rows = k.sum(-1), l.sum(-1)
    trace = (k * l).sum((-2, -1))
    both = k_rows.sum(-1) * l_rows.sum(-1) / ((n - 1) * (n - 2))
    cross = 2.0 * (k_rows * l_rows).sum(-1) / (n - 2)
    return (trace + both - cross) / (n * (n - 3))


def hsic_matrix(representations: list[torch.Tensor]) -> torch.Tensor:
    """Unbiased HSIC between every pair of representations of one minibatch: ``(L, L)``."""
    grams = torch.stack([gram(r) for r in representations])  # (L, n, n)
    return unbiased_hsic(grams[:, None], grams[None, :])


class MinibatchCKA:
    """Linear CKA between every pair of ``L`` layers, accumulated over minibatches.

    ``CKA_ij = mean_b HSIC₁(K_i, K_j) / sqrt(mean_b HSIC₁(K_i, K_i) · mean_b HSIC₁(K_j, K_j))``
    with the unbiased estimator on each minibatch (Nguyen et al. 2021). Layers may differ in
    width; every minibatch needs the same layers and ≥ 4 samples.

    >>> import torch
    >>> gen = torch.Generator().manual_seed(0)
    >>> acc = MinibatchCKA(["a", "b"])
    >>> for _ in range(4):
    ...     x = torch.randn(64, 5, generator=gen)
    ...     acc.update({"a": x, "b": torch.randn(64, 7, generator=gen)})
    >>> cka = acc.compute()
    >>> round(float(cka[0, 0]), 6), abs(float(cka[0, 1])) < 0.1
    (1.0, True)
    """

    def __init__(self, layers: list[str]) -> None:
        self.layers = list(layers)
        self._sum: torch.Tensor | None = None
        self.batches = 0

    def update(self, representations: dict[str, torch.Tensor]) -> None:
        missing = [name for name in self.layers if name not in representations]
        if missing:
            raise RepresentationShapeError(f"minibatch lacks layers {missing}")
        hsic = hsic_matrix([representations[name] for name in self.layers])
        self._sum = hsic if self._sum is None else self._sum + hsic.to(self._sum.device)
        self.batches += 1

    def compute(self) -> torch.Tensor:
        """``(L, L)`` CKA matrix (float64, CPU)."""
        if self._sum is None:
            raise RepresentationShapeError("MinibatchCKA.compute() before any update()")
        diag = torch.diagonal(self._sum).clamp(min=0)
        return (self._sum / torch.sqrt(diag[:, None] * diag[None, :])).cpu()


def cka_matrix(representations: dict[str, torch.Tensor]) -> torch.Tensor:
    """Full-data linear CKA between every pair of layers: ``(L, L)`` float64 on CPU."""
    names = list(representations)
    out = torch.ones(len(names), len(names), dtype=torch.float64)
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            out[i, j] = out[j, i] = linear_cka(representations[names[i]], representations[names[j]])
    return out


def cross_correlation(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Pearson correlation of every feature of ``x`` with every feature of ``y``:
    ``(features_x, features_y)``; NaN where a feature is constant over the samples.

    >>> import torch
    >>> x = torch.tensor([[1.0, 0.0], [2.0, 0.0], [3.0, 0.0]])
    >>> cross_correlation(x, -x).round(decimals=6).tolist()
    [[-1.0, nan], [nan, nan]]
    """
    x, y = _pair(x, y, 2)
    x, y = x - x.mean(0), y - y.mean(0)
    sx, sy = torch.linalg.vector_norm(x, dim=0), torch.linalg.vector_norm(y, dim=0)
    corr = (x.T @ y) / (sx[:, None] * sy[None, :])
    return corr.where((sx[:, None] > 0) & (sy[None, :] > 0), float("nan")).clamp(-1.0, 1.0)


def feature_correlation(x: torch.Tensor) -> torch.Tensor:
    """Feature × feature correlation within one layer (NaN for constant features)."""
    return cross_correlation(x, x)


def sample_correlation(x: torch.Tensor) -> torch.Tensor:
    """Sample × sample correlation within one layer: each sample's feature vector against
    every other's (NaN for a sample whose features are all equal)."""
    x = _as_matrix(x, "x")
    return cross_correlation(x.T, x.T)
