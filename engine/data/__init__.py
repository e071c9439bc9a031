"""Data sets for the demos and benchmarks, loaded from local files only (nothing is downloaded).

* ``load_digits_split``: scikit-learn's bundled digits (1797 real 8×8 images), as tensors.
* ``load_fashion_mnist``: Fashion-MNIST (or MNIST) from the four IDX files in a folder.
* ``make_signals_split``: a generated 1-D waveform classification set (8 classes).
* ``read_idx`` / ``write_idx``: the IDX file format (plain or gzip) as NumPy arrays.
"""

from engine.data.digits import DataSplit, load_digits_split
from engine.data.fashion_mnist import find_fashion_mnist_files, load_fashion_mnist
from engine.data.idx import read_idx, write_idx
from engine.data.signals import SIGNAL_CLASSES, make_signals_split

__all__ = [
    "SIGNAL_CLASSES",
    "DataSplit",
    "find_fashion_mnist_files",
    "load_digits_split",
    "load_fashion_mnist",
    "make_signals_split",
    "read_idx",
    "write_idx",
]
