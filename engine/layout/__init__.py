"""What the model looks like to policies and surgery: layers, units, consumers, coupled groups.

The bottom floor of the package (after errors, io and layer kinds). One concept per module:

- ``model``: the plain-data types (``ModelLayout``, ``LayerLayout``, ``ConsumerSlice``) and
  ``layout_fingerprint``;
- ``trace``: one Torch-Pruning dependency-graph trace of the live model;
- ``members``: a dependency-group member classified by the axis it prunes;
- ``params``: parameters one unit of a member carries;
- ``build``: ``build_layout`` from the live model (reads modules, never changes them);
- ``io``: save and load a layout beside a statistics snapshot.

>>> import torch, torch.nn as nn
>>> model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
>>> layout = build_layout(model, {"0": range(8), "2": range(8, 10)}, torch.randn(2, 4))
>>> layout.layers["0"].params_per_unit, layout.layers["2"].is_output
(7, True)
"""

from engine.layout.build import build_layout, build_layout_and_graph
from engine.layout.io import load_layout, save_layout
from engine.layout.model import (
    ALL_KINDS,
    ConsumerSlice,
    LayerLayout,
    ModelLayout,
    layout_fingerprint,
)

__all__ = [
    "ALL_KINDS",
    "ConsumerSlice",
    "LayerLayout",
    "ModelLayout",
    "build_layout",
    "build_layout_and_graph",
    "layout_fingerprint",
    "load_layout",
    "save_layout",
]
