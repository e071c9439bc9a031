"""The Lightning callback changes shapes mid-fit with Lightning's optimizer, scheduler,
loggers and checkpoints intact."""

from __future__ import annotations

import csv

import pytest

pl = pytest.importorskip("lightning.pytorch")

import torch  # noqa: E402

from engine.integrations.lightning import (  # noqa: E402
    CHECKPOINT_KEY,
    SelfModifyingCallback,
    load_checkpoint,
    read_checkpoint,
)
from tests.integrations.lit_models import DEAD, TinyLit, data, loader, trainer  # noqa: E402

DEAD_POLICY = {"policies": [{"name": "dead"}]}


def optimizer_params(opt: torch.optim.Optimizer) -> list[int]:
    return [id(p) for g in opt.param_groups for p in g["params"]]


def fit_with_callback(tmp_path, epochs: int = 5, **kwargs):
    torch.manual_seed(0)
    model = TinyLit()
    callback = SelfModifyingCallback(DEAD_POLICY, every=2, module="net", **kwargs)
    logger = pl.loggers.CSVLogger(tmp_path, name="csv")
    t = trainer(tmp_path, epochs, [callback], logger=logger)
    t.fit(model, loader())
    return model, callback, t


def test_fit_changes_shape_mid_fit_with_lightnings_optimizer(tmp_path):
    model, callback, t = fit_with_callback(tmp_path)
    assert model.net[0].out_features == 32 - DEAD  # cut at the end of epoch 1
    assert [e["epoch"] for e in callback.events] == [1]
    assert callback.events[0]["widths_after"]["0"] == 32 - DEAD
    opt = t.optimizers[0]
    assert opt is t.lr_scheduler_configs[0].scheduler.optimizer  # the same object throughout
    ids = optimizer_params(opt)
    assert sorted(ids) == sorted(id(p) for p in model.parameters()) and len(set(ids)) == len(ids)
    for p in model.parameters():  # Adam's moments follow the new shapes
        assert opt.state[p]["exp_avg"].shape == p.shape
    assert opt.param_groups[0]["lr"] == pytest.approx(0.02 * 0.9**5)  # StepLR kept stepping
    losses = model.epoch_losses
    assert losses[-1] < losses[2] < losses[1]  # the loss keeps falling after the surgery


def test_metrics_reach_the_trainers_logger(tmp_path):
    _, _, t = fit_with_callback(tmp_path, epochs=3)
    t.logger.save()
    with open(f"{t.logger.log_dir}/metrics.csv") as f:
        rows = list(csv.DictReader(f))
    widths = [float(r["engine/0/width"]) for r in rows if r.get("engine/0/width")]
    assert widths == [32, 32 - DEAD, 32 - DEAD]  # one row per epoch end, after its surgery
    assert any(r.get("engine/surgery/params_after") for r in rows)
    assert any(r.get("engine/params") for r in rows)


def test_checkpoint_resumes_and_reloads_with_the_new_shapes(tmp_path):
    model, callback, t = fit_with_callback(tmp_path, epochs=3)
    path = tmp_path / "run.ckpt"
    t.save_checkpoint(path)
    saved = read_checkpoint(path)  # torch.load(weights_only=True)
    assert len(saved[CHECKPOINT_KEY]["plans"]) == 1
    x = data(seed=1)[0][:16]
    model.eval()
    with torch.no_grad():
        expected = model(x)

    reloaded = load_checkpoint(TinyLit, path)  # fresh module, checkpoint's shapes and weights
    assert reloaded.net[0].out_features == 32 - DEAD and not reloaded.training
    with torch.no_grad():
        assert torch.equal(reloaded(x), expected)

    # resume: a fresh 32-wide module is resized before Lightning loads the weights
    fresh, again = TinyLit(), SelfModifyingCallback(DEAD_POLICY, every=2, module="net")
    t2 = trainer(tmp_path, 3, [again])  # max_epochs reached: restore only
    t2.fit(fresh, loader(), ckpt_path=path, weights_only=True)
    fresh.eval()
    with torch.no_grad():
        assert torch.equal(fresh(x), expected)
    for key, value in t.optimizers[0].state_dict()["state"].items():
        got = t2.optimizers[0].state_dict()["state"][key]
        assert all(torch.equal(value[k], got[k]) for k in value)
    assert again.engine.neurons.ids("0") == callback.engine.neurons.ids("0")

    more = SelfModifyingCallback(DEAD_POLICY, every=2, module="net")
    t3 = trainer(tmp_path, 5, [more])
    fresh2 = TinyLit()
    t3.fit(fresh2, loader(), ckpt_path=path)  # and training goes on from epoch 3
    assert fresh2.net[0].out_features == 32 - DEAD and t3.current_epoch == 5
    assert sorted(optimizer_params(t3.optimizers[0])) == sorted(id(p) for p in fresh2.parameters())
    t3.save_checkpoint(tmp_path / "again.ckpt")
    assert len(read_checkpoint(tmp_path / "again.ckpt")[CHECKPOINT_KEY]["plans"]) == 1


def test_step_interval_and_trial_mode(tmp_path):
    x, y = data(seed=2, n=64)
    torch.manual_seed(0)
    model = TinyLit()
    callback = SelfModifyingCallback(
        DEAD_POLICY, every=5, interval="step", start=5, module="net", held_out=(x, y),
        loss_fn=torch.nn.functional.cross_entropy, log=False,
    )  # fmt: skip
    t = trainer(tmp_path, 2, [callback])
    t.fit(model, loader())  # 8 steps per epoch: surgery trials after steps 5, 10, 15
    assert [e["step"] for e in callback.events] == [5]
    assert callback.schedule.trials[0].accepted  # pruning dead units leaves the loss alone
    assert model.net[0].out_features == 32 - DEAD
