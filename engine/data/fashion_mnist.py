"""Fashion-MNIST (Zalando's 70 000 28×28 grey images of clothes, 10 classes) from local files.

Nothing is downloaded: put the four files of the data set, as published at
https://github.com/zalandoresearch/fashion-mnist (``data/fashion``), in one folder, compressed or
not, and pass the folder::

    train-images-idx3-ubyte.gz   train-labels-idx1-ubyte.gz
    t10k-images-idx3-ubyte.gz    t10k-labels-idx1-ubyte.gz

The original MNIST digits use the same names and format, so their files load the same way.

>>> import tempfile, numpy as np
>>> from engine.data.idx import write_idx
>>> folder = tempfile.mkdtemp()
>>> rng = np.random.default_rng(0)
>>> for part, n in (("train", 60), ("t10k", 20)):
...     _ = write_idx(f"{folder}/{part}-images-idx3-ubyte.gz",
...                   rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
...     _ = write_idx(f"{folder}/{part}-labels-idx1-ubyte", np.arange(n, dtype=np.uint8) % 10)
>>> split = load_fashion_mnist(folder)
>>> split.x_train.shape, split.x_test.shape, split.num_classes
(torch.Size([60, 1, 28, 28]), torch.Size([20, 1, 28, 28]), 10)
>>> load_fashion_mnist(folder, subset=30, flat=True).x_train.shape
torch.Size([30, 784])
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from engine.data.digits import DataSplit
from engine.data.idx import read_idx
from engine.errors import DatasetError

__all__ = ["CLASSES", "FILES", "SOURCE", "find_fashion_mnist_files", "load_fashion_mnist"]

SOURCE = "https://github.com/zalandoresearch/fashion-mnist"
FILES: dict[str, str] = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip
SIDE = 28


def find_fashion_mnist_files(directory: str | os.PathLike[str]) -> dict[str, Path]:
    """The four files in ``directory`` by role (``train_images``…); each may be plain or
    ``.gz`` (the plain one is taken when both exist). Raises ``DatasetError`` listing every
    missing file and where to get it."""
    directory = Path(directory)
    found: dict[str, Path] = {}
    missing: list[str] = []
    for role, name in FILES.items():
        path = next((p for p in (directory / name, directory / f"{name}.gz") if p.is_file()), None)
        if path is None:
            missing.append(f"{name}[.gz]")
        else:
            found[role] = path
    if missing:
        where = (
            f"in {directory}" if directory.is_dir() else f"(the folder {directory} does not exist)"
        )
        raise DatasetError(
            f"Fashion-MNIST: {len(missing)} of 4 files missing {where}: {', '.join(missing)}. "
            f"Nothing is downloaded: get the four files from {SOURCE} (folder data/fashion, "
            f"compressed or not) and put them in {directory}"
        )
    return found


def _labels(path: Path) -> np.ndarray:
    labels = read_idx(path, ndim=1)
    if labels.dtype.kind not in "iu":
        raise DatasetError(f"{path}: labels must be integers, found {labels.dtype}")
    bad = (labels < 0) | (labels >= len(CLASSES))
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise DatasetError(
            f"{path}: {int(bad.sum())} labels outside 0–{len(CLASSES) - 1} "
            f"(the first at index {first}: {labels[first]})"
        )
    return labels.astype(np.int64)


def _images(path: Path) -> np.ndarray:
    images = read_idx(path, ndim=3)
    if images.dtype != np.uint8:
        raise DatasetError(
            f"{path}: images must be unsigned bytes (type 0x08), found {images.dtype}"
        )
    if images.shape[1:] != (SIDE, SIDE):
        raise DatasetError(
            f"{path}: expected {SIDE}×{SIDE} images, found {images.shape[1]}×{images.shape[2]}"
        )
    return images


def _part(
    images_path: Path, labels_path: Path, keep: int | None, seed: int, flat: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = _images(images_path), _labels(labels_path)
    if len(images) != len(labels):
        raise DatasetError(
            f"{images_path.parent}: {images_path.name} holds {len(images)} images but "
            f"{labels_path.name} holds {len(labels)} labels"
        )
    if keep is not None and keep < len(images):
        rows = np.sort(np.random.default_rng(seed).permutation(len(images))[:keep])
        images, labels = images[rows], labels[rows]
    x = torch.from_numpy(images).to(torch.float32).div_(255.0)
    x = x.reshape(len(x), SIDE * SIDE) if flat else x.reshape(len(x), 1, SIDE, SIDE)
    return x, torch.from_numpy(labels)


def load_fashion_mnist(
    directory: str | os.PathLike[str],
    subset: int | None = None,
    *,
    flat: bool = False,
    seed: int = 0,
) -> DataSplit:
    """Fashion-MNIST's own train (60 000) and test (10 000) parts from the IDX files in
    ``directory``.

    Images are float32 in [0, 1], shaped ``(N, 1, 28, 28)``, or ``(N, 784)`` with
    ``flat=True``; labels are int64 class indices (names in ``CLASSES``). ``subset`` keeps at
    most that many samples of each part, a random choice fixed by ``seed`` (kept in file
    order) for fast runs. Missing files, malformed files, images that are not 28×28 bytes,
    labels outside 0–9 and image/label count mismatches raise ``DatasetError``.
    """
    if subset is not None and subset < 1:
        raise DatasetError(f"subset must keep at least 1 sample, got {subset}")
    files = find_fashion_mnist_files(directory)
    x_train, y_train = _part(files["train_images"], files["train_labels"], subset, seed, flat)
    x_test, y_test = _part(files["test_images"], files["test_labels"], subset, seed + 1, flat)
    return DataSplit(x_train, y_train, x_test, y_test, num_classes=len(CLASSES))
