"""Read and write IDX files, the format of MNIST and Fashion-MNIST (plain or gzip-compressed).

An IDX file is a 4-byte magic number, one big-endian ``uint32`` per dimension, then the data
in C order, big-endian. The magic is two zero bytes, a type code and the number of dimensions:

======  ==============  ===============
code    type            NumPy
======  ==============  ===============
0x08    unsigned byte   ``uint8``
0x09    signed byte     ``int8``
0x0B    short           ``>i2``
0x0C    int             ``>i4``
0x0D    float           ``>f4``
0x0E    double          ``>f8``
======  ==============  ===============

Gzip compression is recognised by the content (its two magic bytes), whatever the file name.
The data is read in a few large chunks and decoded with one ``np.frombuffer`` (no Python loop
over items). Anything wrong with a file raises ``DatasetError`` naming the file and the fault.

>>> import tempfile, os, numpy as np
>>> path = os.path.join(tempfile.mkdtemp(), "labels-idx1-ubyte.gz")
>>> _ = write_idx(path, np.array([3, 1, 4], dtype=np.uint8))
>>> read_idx(path)
array([3, 1, 4], dtype=uint8)
>>> read_idx(path, ndim=3)
Traceback (most recent call last):
    ...
engine.errors.DatasetError: ...: expected 3 dimensions, the header says 1 (shape (3,))
"""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path
from typing import BinaryIO

import numpy as np

from engine.errors import DatasetError
from engine.io import atomic_write_bytes

__all__ = ["IDX_TYPES", "read_idx", "write_idx"]

# Type code → big-endian NumPy dtype.
IDX_TYPES: dict[int, np.dtype] = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"
_CHUNK = 1 << 24  # read 16 MiB at a time: a header claiming terabytes allocates nothing


def _read_up_to(f: BinaryIO, n: int) -> bytes:
    """At most ``n`` bytes (fewer only at the end of the stream)."""
    if n <= _CHUNK:
        return f.read(n)
    parts, left = [], n
    while left > 0:
        part = f.read(min(left, _CHUNK))
        if not part:
            break
        parts.append(part)
        left -= len(part)
    return b"".join(parts)


def _decode(f: BinaryIO, path: Path, ndim: int | None) -> np.ndarray:
    head = f.read(4)
    if len(head) < 4:
        raise DatasetError(f"{path}: truncated: {len(head)} bytes, too short for an IDX header")
    if head[:2] != b"\x00\x00":
        raise DatasetError(
            f"{path}: bad magic number 0x{head.hex()}: an IDX file starts with two zero bytes "
            f"(e.g. 0x00000803 for images, 0x00000801 for labels); is this an IDX file?"
        )
    code, dims_count = head[2], head[3]
    if code not in IDX_TYPES:
        known = ", ".join(f"0x{c:02X}" for c in IDX_TYPES)
        raise DatasetError(f"{path}: unknown IDX type code 0x{code:02X} (known: {known})")
    if dims_count == 0:
        raise DatasetError(f"{path}: the header declares 0 dimensions")
    raw_dims = f.read(4 * dims_count)
    if len(raw_dims) < 4 * dims_count:
        raise DatasetError(
            f"{path}: truncated: the header declares {dims_count} dimensions "
            f"({4 * dims_count} bytes) but only {len(raw_dims)} bytes follow the magic number"
        )
    shape = tuple(int(d) for d in np.frombuffer(raw_dims, dtype=">u4"))
    if ndim is not None and dims_count != ndim:
        raise DatasetError(
            f"{path}: expected {ndim} dimensions, the header says {dims_count} (shape {shape})"
        )
    dtype = IDX_TYPES[code]
    count = 1
    for d in shape:  # Python ints: no overflow for absurd headers
        count *= d
    size = count * dtype.itemsize
    data = _read_up_to(f, size)
    if len(data) < size:
        raise DatasetError(
            f"{path}: truncated: shape {shape} of {dtype.name} needs {size} data bytes, "
            f"found {len(data)}"
        )
    extra = _read_up_to(f, _CHUNK)
    if extra:
        more = "or more " if len(extra) == _CHUNK else ""
        raise DatasetError(
            f"{path}: size mismatch: {len(extra)} {more}bytes after the {size} data bytes that "
            f"shape {shape} of {dtype.name} needs"
        )
    # One copy into native byte order: a writable array, whatever the platform.
    array = np.frombuffer(data, dtype=dtype).astype(dtype.newbyteorder("="), copy=True)
    return array.reshape(shape)


def read_idx(path: str | os.PathLike[str], *, ndim: int | None = None) -> np.ndarray:
    """The array stored in the IDX file ``path`` (plain or gzip), in native byte order.

    ``ndim`` (optional) is the number of dimensions the caller expects (3 for an image file,
    1 for a label file); another number is a ``DatasetError``, as are a missing file, a bad
    magic number, an unknown type code, a truncated file and bytes beyond the declared size.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: no such IDX file")
    try:
        with path.open("rb") as raw:
            compressed = raw.read(2) == _GZIP_MAGIC
            raw.seek(0)
            if not compressed:
                return _decode(raw, path, ndim)
            with gzip.GzipFile(fileobj=raw, mode="rb") as f:
                return _decode(f, path, ndim)  # type: ignore[arg-type]
    except EOFError as exc:  # the gzip stream ends early
        raise DatasetError(f"{path}: truncated gzip stream ({exc})") from None
    except (gzip.BadGzipFile, zlib.error) as exc:
        raise DatasetError(f"{path}: corrupt gzip data ({exc})") from None
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read: {exc}") from None


def write_idx(
    path: str | os.PathLike[str], array: np.ndarray, *, compress: bool | None = None
) -> Path:
    """Write ``array`` as an IDX file (atomically); gzip when ``compress`` is True, or when it
    is None and the name ends with ``.gz``. Returns the path.

    The type code follows the array's dtype (uint8, int8, int16, int32, float32, float64).
    """
    path = Path(path)
    array = np.asarray(array)
    code = next((c for c, dt in IDX_TYPES.items() if dt.newbyteorder("=") == array.dtype), None)
    if code is None:
        known = ", ".join(dt.newbyteorder("=").name for dt in IDX_TYPES.values())
        raise DatasetError(f"{path}: IDX cannot store {array.dtype} (it stores {known})")
    if not 1 <= array.ndim <= 255:
        raise DatasetError(f"{path}: IDX stores 1 to 255 dimensions, not {array.ndim}")
    if any(d >= 2**32 for d in array.shape):
        raise DatasetError(f"{path}: a dimension of shape {array.shape} does not fit in uint32")
    header = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    data = header + np.ascontiguousarray(array, dtype=IDX_TYPES[code]).tobytes()
    if compress or (compress is None and path.name.endswith(".gz")):
        data = gzip.compress(data, mtime=0)
    return atomic_write_bytes(path, data, every_rank=True)  # a data file: on every node
