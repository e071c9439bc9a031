"""Data sets for the demos and benchmarks, loaded from local files only (nothing is downloaded).

* ``load_digits_split``: scikit-learn's bundled digits (1797 real 8×8 images), as tensors.
"""

from engine.data.digits import DataSplit, load_digits_split

__all__ = ["DataSplit", "load_digits_split"]
