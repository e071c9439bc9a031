"""``make_observer`` gives the same hook function for the same layer, so a compiled model whose
hooks go on and off meets the hooks its graph was traced with (no recompile per closure)."""

from __future__ import annotations

import copy

import torch
from torch import nn

from engine import NeuronEngine, SamplingWindow
from engine.observe import make_observer
from engine.stats import remap_accumulator


def _hook_functions(model: nn.Module) -> list:
    return [fn for m in model.modules() for fn in m._forward_hooks.values()]


def test_tracking_twice_attaches_the_same_functions_and_a_resize_new_ones():
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 2))
    engine = NeuronEngine(model)
    with engine.tracking():
        first = _hook_functions(model)
    with engine.tracking():
        again = _hook_functions(model)
    assert len(first) == 2 and all(a is b for a, b in zip(first, again))
    remap_accumulator(engine.layers["0"].accumulator, keep=[1, 2, 3, 4, 5])  # as surgery does
    with engine.tracking():
        resized = _hook_functions(model)
    assert resized[0] is not first[0]


def test_a_copied_accumulator_does_not_reuse_the_original_closure():
    model = nn.Sequential(nn.Linear(3, 4))
    engine = NeuronEngine(model)
    with engine.tracking():
        model(torch.randn(2, 3))
    layer = engine.layers["0"]
    twin = copy.deepcopy(layer.accumulator)
    hook = make_observer(layer.kind, layer.observation, twin, model[0])
    hook(model[0], (None,), torch.randn(5, 4))
    assert twin.total().n == 7 and layer.accumulator.total().n == 2


def test_a_sampling_window_reattaches_the_same_functions():
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU())
    engine = NeuronEngine(model)
    window = SamplingWindow(engine, track=1, every=2)
    seen = []
    for _ in range(4):
        with window.step() as tracked:
            if tracked:
                seen.append(_hook_functions(model))
            model(torch.randn(2, 3))
    assert len(seen) == 2 and seen[0][-1] is seen[1][-1]
