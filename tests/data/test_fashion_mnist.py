"""load_fashion_mnist on small IDX files written here (no real data set needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from engine.data import DataSplit, find_fashion_mnist_files, load_fashion_mnist, write_idx
from engine.data.fashion_mnist import FILES, SOURCE
from engine.errors import DatasetError


def write_fashion(
    folder: Path,
    n_train: int = 60,
    n_test: int = 20,
    *,
    gz: bool | tuple[bool, bool, bool, bool] = True,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """The four files with random 28×28 images and labels 0–9; ``gz`` per file or for all."""
    rng = np.random.default_rng(seed)
    arrays = {
        "train_images": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train_labels": rng.integers(0, 10, n_train, dtype=np.uint8),
        "test_images": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "test_labels": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    flags = gz if isinstance(gz, tuple) else (gz,) * 4
    for (role, array), packed in zip(arrays.items(), flags):
        write_idx(folder / (FILES[role] + (".gz" if packed else "")), array)
    return arrays


@pytest.mark.parametrize("gz", [True, False, (True, False, False, True)], ids=str)
def test_loads_images_and_labels_exactly(tmp_path: Path, gz) -> None:
    arrays = write_fashion(tmp_path, gz=gz)
    split = load_fashion_mnist(tmp_path)
    assert isinstance(split, DataSplit)
    assert split.x_train.shape == (60, 1, 28, 28) and split.x_test.shape == (20, 1, 28, 28)
    assert split.x_train.dtype == torch.float32 and split.y_train.dtype == torch.int64
    assert split.num_classes == 10 and split.input_shape == (1, 28, 28)
    assert float(split.x_train.min()) >= 0.0 and float(split.x_train.max()) <= 1.0
    expected = torch.from_numpy(arrays["train_images"]).float().div(255).unsqueeze(1)
    torch.testing.assert_close(split.x_train, expected, rtol=0, atol=0)
    np.testing.assert_array_equal(split.y_test.numpy(), arrays["test_labels"])


def test_flat_and_subset(tmp_path: Path) -> None:
    arrays = write_fashion(tmp_path)
    flat = load_fashion_mnist(tmp_path, flat=True)
    assert flat.x_train.shape == (60, 784) and flat.input_shape == (784,)
    small = load_fashion_mnist(tmp_path, subset=25, flat=True)
    assert len(small.x_train) == 25 and len(small.x_test) == 20  # test part has only 20
    # The kept samples are real (image, label) pairs of the file, in file order.
    pixels = (small.x_train * 255).round().to(torch.uint8).numpy()
    all_pixels = arrays["train_images"].reshape(60, -1)
    rows = [int(np.flatnonzero((all_pixels == p).all(1))[0]) for p in pixels]
    assert rows == sorted(rows) and len(set(rows)) == 25
    np.testing.assert_array_equal(small.y_train.numpy(), arrays["train_labels"][rows])
    again = load_fashion_mnist(tmp_path, subset=25, flat=True)
    assert torch.equal(again.x_train, small.x_train)  # fixed by the seed
    other = load_fashion_mnist(tmp_path, subset=25, flat=True, seed=1)
    assert not torch.equal(other.x_train, small.x_train)
    with pytest.raises(DatasetError, match="subset"):
        load_fashion_mnist(tmp_path, subset=0)


def test_plain_file_wins_over_gz(tmp_path: Path) -> None:
    write_fashion(tmp_path, gz=True, seed=0)
    write_fashion(tmp_path, gz=False, seed=1)
    files = find_fashion_mnist_files(tmp_path)
    assert all(p.suffix != ".gz" for p in files.values())


def test_missing_files_are_listed_with_where_to_get_them(tmp_path: Path) -> None:
    write_fashion(tmp_path)
    (tmp_path / "t10k-images-idx3-ubyte.gz").unlink()
    (tmp_path / "train-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DatasetError) as info:
        load_fashion_mnist(tmp_path)
    message = str(info.value)
    assert f"2 of 4 files missing in {tmp_path}" in message
    assert "t10k-images-idx3-ubyte[.gz]" in message and "train-labels-idx1-ubyte[.gz]" in message
    assert "train-images" not in message.split("missing")[1].split("Nothing")[0]
    assert SOURCE in message


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"4 of 4 files missing .*does not exist"):
        load_fashion_mnist(tmp_path / "nowhere")


def test_count_mismatch_between_images_and_labels(tmp_path: Path) -> None:
    write_fashion(tmp_path)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.zeros(59, dtype=np.uint8))
    message = r"holds 60 images but train-labels-idx1-ubyte\.gz holds 59 labels"
    with pytest.raises(DatasetError, match=message):
        load_fashion_mnist(tmp_path)


@pytest.mark.parametrize(
    ("role", "array", "message"),
    [
        ("train_images", np.zeros((60, 28, 28), np.float32), "unsigned bytes"),
        ("train_images", np.zeros((60, 32, 32), np.uint8), "expected 28×28 images, found 32×32"),
        ("train_images", np.zeros((60, 784), np.uint8), "expected 3 dimensions"),
        ("test_labels", np.zeros((20, 1), np.uint8), "expected 1 dimensions"),
        ("test_labels", np.full(20, 10, np.uint8), "20 labels outside 0–9"),
        ("test_labels", np.zeros(20, np.float64), "labels must be integers"),
    ],
    ids=["float-images", "32x32", "flat-images", "2d-labels", "label-10", "float-labels"],
)
def test_malformed_contents_name_the_file(tmp_path: Path, role: str, array, message) -> None:
    write_fashion(tmp_path)
    path = write_idx(tmp_path / (FILES[role] + ".gz"), array)
    with pytest.raises(DatasetError, match=message) as info:
        load_fashion_mnist(tmp_path)
    assert str(path) in str(info.value)


def test_bad_magic_and_truncated_file(tmp_path: Path) -> None:
    write_fashion(tmp_path, gz=False)
    images = tmp_path / "train-images-idx3-ubyte"
    data = images.read_bytes()
    images.write_bytes(b"\x1f\x00" + data[2:])
    with pytest.raises(DatasetError, match=r"train-images-idx3-ubyte: bad magic number 0x1f00"):
        load_fashion_mnist(tmp_path)
    images.write_bytes(data[:-100])
    with pytest.raises(DatasetError, match=r"train-images-idx3-ubyte: truncated"):
        load_fashion_mnist(tmp_path)
