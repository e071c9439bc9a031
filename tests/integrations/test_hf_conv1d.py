"""Hugging Face's ``Conv1D`` (weight ``(in, out)``) is a known layer type once
``engine.integrations.transformers`` is imported: surgery on it matches surgery on the
equivalent ``nn.Linear`` model bitwise-transposed, and an unregistered one is a clear error."""

from __future__ import annotations

import pytest

pytest.importorskip("transformers")

import torch
import torch.nn.functional as F
import torch_pruning as tp
from torch import nn
from transformers import GPT2Config, GPT2LMHeadModel
from transformers.pytorch_utils import Conv1D

import engine.integrations.transformers  # noqa: F401  (registers Conv1D)
from engine import NeuronEngine
from engine.errors import UnsupportedModuleError
from engine.layout import trace

BUDGET = {"policies": [{"name": "budget", "settings": {"remove_fraction": 0.5, "min_samples": 8}}]}


class Block(nn.Module):
    """GPT-2's MLP shape: ``proj(relu(fc(x)))``, with Conv1D or with Linear."""

    def __init__(self, conv: bool) -> None:
        super().__init__()
        self.fc = Conv1D(16, 6) if conv else nn.Linear(6, 16)
        self.proj = Conv1D(3, 16) if conv else nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(F.relu(self.fc(x)))


def twins() -> tuple[Block, Block]:
    torch.manual_seed(0)
    linear, conv = Block(conv=False), Block(conv=True)
    with torch.no_grad():
        for name in ("fc", "proj"):
            getattr(conv, name).weight.copy_(getattr(linear, name).weight.T)
            getattr(conv, name).bias.copy_(getattr(linear, name).bias)
    return linear, conv


def trained(model: Block, x: torch.Tensor) -> tuple[NeuronEngine, torch.optim.Optimizer]:
    engine = NeuronEngine(model, include=["fc"], correlation=True)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    with engine.tracking():
        for _ in range(2):
            opt.zero_grad()
            model(x).square().mean().backward()
            opt.step()
    return engine, opt


def test_surgery_on_conv1d_matches_the_linear_twin():
    x = torch.randn(64, 6, generator=torch.Generator().manual_seed(1))
    linear, conv = twins()
    eng_l, opt_l = trained(linear, x)
    eng_c, opt_c = trained(conv, x)
    assert eng_c.layout == eng_l.layout == [("fc", 16)]
    layout = eng_c.model_layout()
    assert layout.layers["fc"].params_per_unit == eng_l.model_layout().layers["fc"].params_per_unit
    assert not layout.layers["fc"].is_output and len(layout.layers["fc"].consumers) == 1
    plan = eng_l.propose(BUDGET)
    assert plan.statistics.widths["fc"]["after"] < 16
    ids_before = eng_c.neurons.ids("fc")
    before = {k: v.clone() for k, v in opt_c.state[conv.fc.weight].items()}
    rec_l, rec_c = eng_l.apply(plan, opt_l), eng_c.apply(plan, opt_c)
    kept = [i for i, n in enumerate(ids_before) if n in set(eng_c.neurons.ids("fc"))]
    state = opt_c.state[conv.fc.weight]  # kept columns of Adam's moments, bitwise
    assert all(torch.equal(state[k], before[k][:, kept]) for k in ("exp_avg", "exp_avg_sq"))
    assert torch.equal(state["step"], before["step"])
    assert rec_c.widths_after == rec_l.widths_after and conv.fc.nf == linear.fc.out_features
    assert conv.proj.nx == linear.proj.in_features
    for name in ("fc", "proj"):
        lin, cv = getattr(linear, name), getattr(conv, name)
        assert torch.allclose(cv.weight, lin.weight.T, atol=1e-6)
        assert torch.equal(cv.bias, lin.bias) or torch.allclose(cv.bias, lin.bias, atol=1e-6)
        for key in ("exp_avg", "exp_avg_sq"):
            ours, theirs = opt_c.state[cv.weight][key], opt_l.state[lin.weight][key].T
            assert torch.allclose(ours, theirs, rtol=1e-4, atol=1e-9)  # addmm vs linear rounding
    assert torch.allclose(conv(x), linear(x), atol=1e-5)
    assert eng_c.neurons.ids("fc") == eng_l.neurons.ids("fc")
    ids = [id(p) for g in opt_c.param_groups for p in g["params"]]
    assert sorted(ids) == sorted(id(p) for p in conv.parameters())


def test_gpt2_tracks_conv1d_and_refuses_its_fused_attention():
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=1, n_head=2, vocab_size=100,
                                       n_positions=16, use_cache=False))  # fmt: skip
    engine = NeuronEngine(model, exclude=["transformer.wte", "transformer.wpe", "lm_head"])
    ids = torch.randint(0, 100, (4, 8), generator=torch.Generator().manual_seed(0))
    with engine.tracking():
        model(input_ids=ids)
    block = "transformer.h.0"
    assert engine.layout == [(f"{block}.attn.c_attn", 96), (f"{block}.attn.c_proj", 32),
                             (f"{block}.mlp.c_fc", 128), (f"{block}.mlp.c_proj", 32)]  # fmt: skip
    layers = engine.model_layout().layers
    assert layers["transformer.h.0.attn.c_attn"].supports == frozenset()  # q, k, v fused
    assert layers["transformer.h.0.mlp.c_fc"].params_per_unit == 32 + 1 + 32


def test_an_unregistered_conv1d_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(trace, "_PRUNERS", {})  # as before the integration is imported
    model = nn.Sequential(Conv1D(4, 3), nn.ReLU(), Conv1D(2, 4))
    with pytest.raises(UnsupportedModuleError, match=r"module '0' is a transformers\.pytorch_utils"
                       r"\.Conv1D.*import engine\.integrations\.transformers") as info:  # fmt: skip
        trace.trace_graph(model, torch.randn(2, 3), None)
    assert info.value.module_type == "transformers.pytorch_utils.Conv1D"


class Scale(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.gain = nn.Parameter(torch.ones(3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gain


def test_a_failing_trace_names_the_unknown_module(monkeypatch):
    def broken(self, *args, **kwargs):
        raise TypeError("unsupported operand type(s) for +: 'int' and 'NoneType'")

    monkeypatch.setattr(tp.DependencyGraph, "build_dependency", broken)
    model = nn.Sequential(nn.Linear(3, 3), Scale())
    with pytest.raises(UnsupportedModuleError, match=r"module '1' is a .*Scale holding its own "
                       r"parameters.*register_pruner") as info:  # fmt: skip
        trace.trace_graph(model, torch.randn(2, 3), None)
    assert isinstance(info.value.__cause__, TypeError)
    hooks = [m._forward_hooks for m in model.modules()]
    assert all(not h for h in hooks)  # nothing left behind


def test_net2net_growth_of_conv1d_is_exact():
    from engine.plan import ExpandAction, Plan

    x = torch.randn(32, 6, generator=torch.Generator().manual_seed(2))
    _, conv = twins()
    engine = NeuronEngine(conv, include=["fc"])
    with engine.tracking():
        before = conv(x).detach()
    plan = Plan.create([ExpandAction(layer="fc", count=3, source_indices=[0, 5, 5],
                                     reason="test")], engine.layout)  # fmt: skip
    record = engine.apply(plan)
    assert (conv.fc.nf, conv.proj.nx, tuple(conv.fc.weight.shape)) == (19, 19, (6, 19))
    assert torch.allclose(conv(x), before, atol=1e-6) and record.max_output_change < 1e-5
    assert torch.equal(conv.fc.weight[:, 16:], conv.fc.weight[:, [0, 5, 5]])  # copies
