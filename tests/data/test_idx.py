"""IDX reading and writing: every type code, plain and gzip, and every kind of broken file."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from engine.data.idx import IDX_TYPES, read_idx, write_idx
from engine.errors import DatasetError

DTYPES = [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64]


def idx_bytes(code: int, shape: tuple[int, ...], payload: bytes) -> bytes:
    """A hand-made IDX file: magic, big-endian dims, payload (no writer involved)."""
    dims = b"".join(d.to_bytes(4, "big") for d in shape)
    return bytes([0, 0, code, len(shape)]) + dims + payload


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_round_trip_every_type(tmp_path: Path, dtype: type, suffix: str) -> None:
    rng = np.random.default_rng(1)
    array = (rng.standard_normal((3, 4, 5)) * 100).astype(dtype)
    path = write_idx(tmp_path / f"a-idx3{suffix}", array)
    assert (path.read_bytes()[:2] == b"\x1f\x8b") == (suffix == ".gz")
    back = read_idx(path, ndim=3)
    assert back.dtype == np.dtype(dtype)
    assert back.dtype.isnative
    assert back.flags.writeable
    np.testing.assert_array_equal(back, array)


def test_reads_big_endian_data_written_by_hand(tmp_path: Path) -> None:
    """The layout of the real files: big-endian dims and values, C order."""
    values = np.array([[1, -2, 300], [40000, -5, 6]], dtype=">i4")
    path = tmp_path / "h.idx"
    path.write_bytes(idx_bytes(0x0C, (2, 3), values.tobytes()))
    np.testing.assert_array_equal(read_idx(path), values.astype(np.int32))
    floats = np.array([1.5, -2.25], dtype=">f8")
    path.write_bytes(idx_bytes(0x0E, (2,), floats.tobytes()))
    np.testing.assert_array_equal(read_idx(path), [1.5, -2.25])


def test_gzip_is_recognised_by_content_not_name(tmp_path: Path) -> None:
    raw = idx_bytes(0x08, (2, 2), bytes([1, 2, 3, 4]))
    (tmp_path / "plain.gz").write_bytes(raw)  # misnamed: not compressed
    (tmp_path / "packed").write_bytes(gzip.compress(raw))  # compressed, no suffix
    for name in ("plain.gz", "packed"):
        np.testing.assert_array_equal(read_idx(tmp_path / name), [[1, 2], [3, 4]])


def test_empty_dimension_gives_an_empty_array(tmp_path: Path) -> None:
    path = tmp_path / "e"
    path.write_bytes(idx_bytes(0x08, (0, 28, 28), b""))
    assert read_idx(path).shape == (0, 28, 28)


def write(tmp_path: Path, data: bytes, *, gz: bool = False) -> Path:
    path = tmp_path / ("bad.gz" if gz else "bad")
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


GOOD = idx_bytes(0x08, (2, 3), bytes(range(6)))


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "truncated: 0 bytes"),
        (b"\x00\x00", "truncated: 2 bytes"),
        (b"\x01\x00\x08\x01" + GOOD[4:], "bad magic number 0x01000801"),
        (b"PK\x03\x04" + GOOD[4:], "bad magic number 0x504b0304"),
        (bytes([0, 0, 0x0A, 1, 0, 0, 0, 1, 0]), "unknown IDX type code 0x0A"),
        (bytes([0, 0, 0x08, 0]), "0 dimensions"),
        (GOOD[:9], "truncated: the header declares 2 dimensions"),
        (GOOD[:-1], "truncated: shape (2, 3) of uint8 needs 6 data bytes, found 5"),
        (GOOD + b"\x00\x00", "size mismatch: 2 bytes after the 6 data bytes"),
    ],
    ids=["empty", "short-header", "bad-magic", "zip-file", "type-code", "no-dims",
         "short-dims", "short-data", "trailing"],
)  # fmt: skip
def test_broken_files_name_the_file_and_the_fault(
    tmp_path: Path, data: bytes, message: str, gz: bool
) -> None:
    path = write(tmp_path, data, gz=gz)
    with pytest.raises(DatasetError, match=r"^.*bad(\.gz)?: ") as info:
        read_idx(path)
    assert str(path) in str(info.value)
    assert message in str(info.value)


def test_huge_header_is_refused_without_allocating(tmp_path: Path) -> None:
    """A header claiming ~2**96 bytes fails as truncated, without trying to read that much."""
    path = write(tmp_path, idx_bytes(0x0E, (2**32 - 1,) * 3, b"\x00" * 64))
    with pytest.raises(DatasetError, match="truncated: shape"):
        read_idx(path)


def test_wrong_number_of_dimensions(tmp_path: Path) -> None:
    path = write_idx(tmp_path / "labels-idx1-ubyte", np.arange(5, dtype=np.uint8))
    with pytest.raises(DatasetError, match=r"labels-idx1-ubyte: expected 3 dimensions, the header"):
        read_idx(path, ndim=3)


def test_truncated_and_corrupt_gzip_streams(tmp_path: Path) -> None:
    packed = gzip.compress(idx_bytes(0x08, (100, 28, 28), bytes(78400)))
    cut = tmp_path / "cut.gz"
    cut.write_bytes(packed[: len(packed) // 2])
    with pytest.raises(DatasetError, match=r"cut\.gz: truncated"):
        read_idx(cut)
    corrupt = tmp_path / "corrupt.gz"
    corrupt.write_bytes(packed[:10] + b"\xff" * 40 + packed[50:])
    with pytest.raises(DatasetError, match=r"corrupt\.gz: "):
        read_idx(corrupt)


def test_missing_file_and_folder(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="no such IDX file"):
        read_idx(tmp_path / "nope")
    with pytest.raises(DatasetError, match="no such IDX file"):
        read_idx(tmp_path)


def test_write_refuses_what_idx_cannot_store(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="cannot store int64"):
        write_idx(tmp_path / "x", np.zeros(3, dtype=np.int64))
    with pytest.raises(DatasetError, match="1 to 255 dimensions"):
        write_idx(tmp_path / "x", np.zeros((), dtype=np.uint8))
    assert not (tmp_path / "x").exists()


def test_type_table_matches_the_format() -> None:
    assert sorted(IDX_TYPES) == [0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E]
    assert all(dt.itemsize == 1 or dt.byteorder == ">" for dt in IDX_TYPES.values())
