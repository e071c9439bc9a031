"""Optional sparsity pressure that makes units removable: group lasso over units and
BatchNorm-γ L1, as a term a training loop adds to its loss (off unless added).

``norms`` holds the functional form (per-unit group norms and the two penalties), ``pressure``
the ``SparsityPressure`` object that picks the layers of a model and reads them live.

>>> import torch.nn as nn
>>> from engine.sparsity import SparsityPressure
>>> SparsityPressure(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))).layers
('0',)
"""

from engine.sparsity.norms import (
    bn_l1_penalty,
    group_lasso_penalty,
    group_size,
    incoming_rows,
    unit_group_norms,
)
from engine.sparsity.pressure import KINDS, PenaltyGroup, SparsityPressure, sparsity_penalty

__all__ = [
    "KINDS",
    "PenaltyGroup",
    "SparsityPressure",
    "bn_l1_penalty",
    "group_lasso_penalty",
    "group_size",
    "incoming_rows",
    "sparsity_penalty",
    "unit_group_norms",
]
