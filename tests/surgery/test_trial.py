"""Trial surgery: a plan is applied, judged on held-out data after optional recovery steps,
and kept or rolled back bitwise (model, optimizer, statistics, neuron IDs, RNG)."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from surgery_models import assert_same_state, state_of
from torch import nn

from engine import NeuronEngine, WeightTracker
from engine.errors import ConfigurationError, TrialError
from engine.plan import ExpandAction, Plan, PruneAction
from engine.surgery.heldout import held_out_loss


def make_model(dropout: float = 0.0) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(6, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(dropout),
        nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, 3),
    )  # fmt: skip


def data(seed: int, n: int = 96):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=g)
    return x, (x[:, 0] > 0).long() + (x[:, 1] > 0).long()


def train_steps(model, opt, steps: int, seed: int):
    model.train()
    for k in range(steps):
        x, y = data(seed + k, 32)
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()


def setup(opt_type=torch.optim.Adam, dropout: float = 0.0):
    model = make_model(dropout)
    opt = opt_type(model.parameters(), lr=1e-2)
    engine = NeuronEngine(model, correlation=True)
    with engine.tracking():
        train_steps(model, opt, 3, seed=10)
    return model, opt, engine


def plan_for(engine, actions):
    return Plan.create(actions, engine.layout)


def harmful(engine):
    """Remove 12 of the first layer's 16 units: the held-out loss rises."""
    units = list(range(12))
    ids = [engine.neurons.ids("0")[i] for i in units]
    return plan_for(engine, [PruneAction(layer="0", local_indices=units, neuron_ids=ids,
                                         reason="try")])  # fmt: skip


def grow(engine):
    return plan_for(engine, [ExpandAction(layer="4", count=4, init="zero_outgoing",
                                          reason="try")])  # fmt: skip


@pytest.mark.parametrize("opt_type", [torch.optim.SGD, torch.optim.Adam])
def test_refused_trial_after_recovery_steps_rolls_everything_back(opt_type):
    model, opt, engine = setup(opt_type)
    if opt_type is torch.optim.SGD:
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        train_steps(model, opt, 2, seed=30)
    before = state_of(model, opt)
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    ids = engine.neurons.state_dict()
    stats = {n: (engine.layer_stats(n).moments.mean.clone(), engine.layer_stats(n).count)
             for n in engine.layers}  # fmt: skip
    rng = torch.get_rng_state()
    val = data(99)
    trial = engine.trial(
        harmful(engine), opt, held_out=val, loss_fn=F.cross_entropy,
        recover=lambda m, o: train_steps(m, o, 2, seed=50),
    )  # fmt: skip
    assert not trial.accepted and trial.recovered
    assert trial.loss_after > trial.loss_before + trial.allowed_increase
    assert "above the allowed" in trial.reason
    assert_same_state(before, state_of(model, opt))
    assert all(torch.equal(p.grad, grads[n]) for n, p in model.named_parameters())
    assert engine.neurons.state_dict() == ids
    for n, (mean, count) in stats.items():
        assert torch.equal(engine.layer_stats(n).moments.mean, mean)
        assert engine.layer_stats(n).count == count
    assert torch.equal(torch.get_rng_state(), rng)
    assert engine.surgeries == [] and engine.trials == [trial]
    assert model.training  # modes as they were


def test_a_refused_trial_leaves_the_run_as_if_it_never_happened():
    """Two identical runs with dropout (RNG) and Adam; one tries a refused plan mid-way."""
    runs = []
    for tried in (False, True):
        model, opt, engine = setup(dropout=0.2)
        if tried:
            with engine.tracking():
                trial = engine.trial(
                    harmful(engine), opt, held_out=data(99), loss_fn=F.cross_entropy,
                    recover=lambda m, o: train_steps(m, o, 3, seed=70),
                )  # fmt: skip
            assert not trial.accepted
        with engine.tracking():
            train_steps(model, opt, 3, seed=20)
        runs.append((state_of(model, opt), engine.snapshot()))
    (a, snap_a), (b, snap_b) = runs
    a["objects"] = b["objects"]  # two different models: compare values, not identities
    a["groups"], a["state"] = (
        b["groups"],
        {pid_b: s for pid_b, s in zip(b["state"], a["state"].values())},
    )
    assert_same_state(a, b)
    for n in snap_a.layers:
        assert torch.equal(snap_a.layers[n].moments.m2, snap_b.layers[n].moments.m2)


def test_kept_trial_commits_ids_statistics_and_listeners(tmp_path):
    model, opt, engine = setup()
    tracker = WeightTracker(engine, tmp_path)
    engine.add_listener(tracker)
    reference = copy.deepcopy(model)
    trial = engine.trial(grow(engine), opt, held_out=data(99), loss_fn=F.cross_entropy)
    assert trial.accepted and not trial.recovered
    assert trial.loss_after == pytest.approx(trial.loss_before, abs=1e-6)  # zero outgoing
    assert model[4].out_features == 16 and engine.neurons.size("4") == 16
    assert engine.surgeries == [trial.record]
    x = data(5)[0]
    model.eval(), reference.eval()
    assert torch.allclose(model(x), reference(x), atol=1e-6)
    refused = engine.trial(harmful(engine), opt, held_out=data(99), loss_fn=F.cross_entropy)
    assert not refused.accepted
    entries = tracker.changes()
    assert [(e.kind, e.trial) for e in entries] == [
        ("expand", "accepted"),
        ("prune", "rolled_back"),
    ]
    assert entries[1].trial_loss_after > entries[1].trial_loss_before
    assert trial.model_dump(mode="json")["record"]["metadata"]["trial"]["accepted"] is True


def test_recovered_baseline_puts_the_unmodified_model_back():
    model, opt, engine = setup()
    twin, twin_opt = copy.deepcopy((model, opt))
    state = torch.get_rng_state()
    train_steps(twin, twin_opt, 2, seed=50)
    expected = held_out_loss(data(99), F.cross_entropy)(twin)
    torch.set_rng_state(state)
    trial = engine.trial(
        grow(engine), opt, held_out=data(99), loss_fn=F.cross_entropy, baseline="recovered",
        recover=lambda m, o: train_steps(m, o, 2, seed=50),
    )  # fmt: skip
    assert trial.loss_before == expected  # the same steps on the same state: bitwise
    assert trial.baseline == "recovered"


def test_failing_recovery_raises_and_rolls_back():
    model, opt, engine = setup()
    before, ids = state_of(model, opt), engine.neurons.state_dict()

    def broken(m, o):
        train_steps(m, o, 1, seed=1)
        raise RuntimeError("loader died")

    with pytest.raises(TrialError, match=r"loader died.*rolled back"):
        engine.trial(grow(engine), opt, held_out=data(99), loss_fn=F.cross_entropy,
                     recover=broken)  # fmt: skip
    assert_same_state(before, state_of(model, opt))
    assert engine.neurons.state_dict() == ids and engine.trials == []


def test_a_non_finite_loss_after_surgery_is_refused():
    model, opt, engine = setup()
    before = state_of(model, opt)
    calls = []

    def judge(m):
        calls.append(1)
        return 1.0 if len(calls) == 1 else float("nan")

    trial = engine.trial(grow(engine), opt, evaluate=judge)
    assert not trial.accepted and trial.loss_after is None and "nan" in trial.reason
    assert_same_state(before, state_of(model, opt))


def test_bad_judges_and_settings_are_refused_before_anything_changes():
    model, opt, engine = setup()
    before = state_of(model, opt)
    with pytest.raises(ConfigurationError, match="needs a judge"):
        engine.trial(grow(engine), opt)
    with pytest.raises(ConfigurationError, match="must return a number"):
        engine.trial(grow(engine), opt, evaluate=lambda m: "low")
    with pytest.raises(ConfigurationError, match="baseline"):
        engine.trial(grow(engine), opt, evaluate=lambda m: 1.0, baseline="after")
    with pytest.raises(ConfigurationError, match="held-out data"):
        engine.trial(grow(engine), opt, held_out=42, loss_fn=F.cross_entropy)
    assert_same_state(before, state_of(model, opt))
