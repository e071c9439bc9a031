"""scikit-learn's bundled digits data (1797 8×8 grey images, 10 classes) as torch tensors.

>>> split = load_digits_split(seed=0)
>>> split.x_train.shape, split.num_classes
(torch.Size([1438, 64]), 10)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from engine.errors import DatasetError


@dataclass(frozen=True)
class DataSplit:
    """A train/test split of inputs and integer labels (float32 inputs scaled to [0, 1])."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one input sample (without the batch axis)."""
        return tuple(self.x_train.shape[1:])


def load_digits_split(
    seed: int = 0,
    *,
    test_fraction: float = 0.2,
    subset: int | None = None,
    images: bool = False,
) -> DataSplit:
    """The digits data shuffled with ``seed`` and split into train and test parts.

    ``subset`` keeps only the first ``subset`` shuffled samples (for fast smoke runs);
    ``images=True`` gives ``(N, 1, 8, 8)`` tensors for convolutional nets instead of ``(N, 64)``.
    Pixel values 0–16 are scaled to [0, 1]. The split is stratified by neither class nor
    anything else: a seeded permutation, the same on every machine.
    """
    if not 0.0 < test_fraction < 1.0:
        raise DatasetError(f"test_fraction must be in (0, 1), got {test_fraction}")
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise DatasetError(
            "the digits data comes with scikit-learn, which is not installed: "
            "pip install -e '.[demos]' (or pip install scikit-learn)"
        ) from exc
    digits = load_digits()
    x = torch.tensor(digits.data, dtype=torch.float32) / 16.0
    y = torch.tensor(digits.target, dtype=torch.long)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    if subset is not None:
        if subset < 10:
            raise DatasetError(f"subset must keep at least 10 samples, got {subset}")
        order = order[:subset]
    if images:
        x = x.reshape(-1, 1, 8, 8)
    split = round((1.0 - test_fraction) * len(order))
    train, test = order[:split], order[split:]
    return DataSplit(x[train], y[train], x[test], y[test], num_classes=10)
