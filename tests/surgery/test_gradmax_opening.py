"""GradMax growth in a self-sizing loop: the sign of new units, a consumer cut in the same
plan, and the row sums behind the sign (exact against a float64 reference, saved, merged)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from engine import NeuronEngine, StatsSnapshot
from engine.plan import Plan
from engine.plan.actions import ExpandAction, FoldAction
from engine.stats.growth import GradientCrossAccumulator


def trained_engine(seed=0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 3))
    engine = NeuronEngine(model, correlation=True, growth_signal=True)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    x, y = torch.randn(256, 6), torch.randint(3, (256,))
    with engine.tracking():
        for i in range(0, 256, 32):
            opt.zero_grad()
            F.cross_entropy(model(x[i : i + 32]), y[i : i + 32]).backward()
            opt.step()
    return model, engine, opt, x, y


def test_row_sums_equal_a_float64_reference_and_survive_save_and_merge(tmp_path):
    acc = GradientCrossAccumulator("c")
    g = torch.Generator().manual_seed(0)
    deltas = [torch.randn(n, 3, generator=g) for n in (5, 7)]
    xs = [torch.randn(n, 4, generator=g) for n in (5, 7)]
    for d, x in zip(deltas, xs, strict=True):
        acc.update(d, x)
    state = acc.state()
    d, x = torch.cat(deltas).double(), torch.cat(xs).double()
    assert torch.allclose(state.input_total, x.sum(0)) and state.rows == 12
    m = sum(a.double().T @ b.double() for a, b in zip(deltas, xs, strict=True)) / 2
    assert torch.allclose(state.opening(), m @ x.mean(0) + d.sum(0) / 2)
    both = state.merge(state)
    assert both.rows == 24 and torch.allclose(both.opening(), state.opening())

    _, engine, *_ = trained_engine()
    snap = engine.snapshot()
    snap.save(tmp_path / "s")
    back = StatsSnapshot.load(tmp_path / "s").layers["0"].growth
    assert back.rows == snap.layers["0"].growth.rows > 0
    assert torch.equal(back.opening(), snap.layers["0"].growth.opening())


def test_new_units_are_signed_to_open_at_their_first_step():
    model, engine, opt, *_ = trained_engine()
    opening = engine.layer("0").growth.state().opening()
    plan = Plan.create([ExpandAction(layer="0", count=3, init="gradmax", reason="t")],
                       engine.layout)  # fmt: skip
    engine.apply(plan, opt)
    new_columns = model[2].weight.detach()[:, 5:].double()
    assert (opening @ new_columns <= 1e-12).all()  # ωᵀv ≤ 0 for every new unit


def test_growth_and_a_fold_of_its_consumer_in_one_plan():
    """The consumer lost units earlier in the plan: the gradient keeps its surviving rows."""
    model, engine, opt, x, _ = trained_engine()
    budget = {"policies": [{"name": "budget", "settings": {"fractions": {"2": 0.25}}}]}
    fold = next(a for a in engine.propose(budget).actions() if isinstance(a, FoldAction))
    grow = ExpandAction(layer="0", count=2, init="gradmax", reason="t")
    plan = Plan.create([fold, grow], engine.layout)
    before = model(x[:16]).detach()
    record = engine.apply(plan, opt)
    assert model[0].out_features == 7 and model[2].out_features == 8 - len(fold.remove)
    assert model[2].weight.shape == (8 - len(fold.remove), 7)
    assert record.params_after == sum(p.numel() for p in model.parameters())
    assert (model(x[:16]) - before).abs().max() < 0.5  # the fold approximates, growth keeps


def test_more_new_units_than_directions_get_zero_outgoing_columns():
    model, engine, opt, x, _ = trained_engine()
    budget = {"policies": [{"name": "budget", "settings": {"fractions": {"2": 0.5}}}]}
    fold = next(a for a in engine.propose(budget).actions() if isinstance(a, FoldAction))
    grow = ExpandAction(layer="0", count=6, init="gradmax", reason="t")  # M keeps 4 rows
    engine.apply(Plan.create([fold, grow], engine.layout), opt)
    rows = 8 - len(fold.remove)
    new = model[2].weight.detach()[:, 5:]
    assert new.shape == (rows, 6) and model(x[:4]).shape == (4, 3)
    assert (new[:, :rows].norm(dim=0) > 0).all() and (new[:, rows:] == 0).all()


def test_a_refused_trial_leaves_the_growth_signal_as_it_was():
    """Recovery steps run with the hooks paused: a trial on other shapes cannot reset the
    running δᵀx sum (its shape changes) or add batches to it."""
    model, engine, opt, x, y = trained_engine()
    before = engine.layer("0").growth.state()
    grow = Plan.create([ExpandAction(layer="0", count=3, init="gradmax", reason="t")],
                       engine.layout)  # fmt: skip

    def recover(m, o):
        for i in range(0, 64, 16):
            o.zero_grad()
            F.cross_entropy(m(x[i : i + 16]), y[i : i + 16]).backward()
            o.step()

    with engine.tracking():  # a loop that trials inside its tracked epoch
        trial = engine.trial(grow, opt, evaluate=lambda m: 1.0, recover=recover, tolerance=-0.5)
    assert not trial.accepted and model[0].out_features == 5
    after = engine.layer("0").growth.state()
    assert after.batches == before.batches and torch.equal(after.total, before.total)
