"""TensorBoard summaries are read back with TensorBoard's own event reader: per-layer
scalars, per-neuron histograms (one per statistic, never one scalar per neuron) and surgery
events."""

from __future__ import annotations

import pytest

pytest.importorskip("tensorboard")

import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn

from engine import NeuronEngine
from engine.integrations.tensorboard import TensorBoardSummary, histogram_raw

DEAD = {"policies": [{"name": "dead"}]}


def read(log_dir) -> EventAccumulator:
    events = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "histograms": 0,
                                                           "tensors": 0})  # fmt: skip
    events.Reload()
    return events


def test_layer_scalars_histograms_and_surgery_events(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 64), nn.ReLU(), nn.Linear(64, 2), nn.Tanh())
    with torch.no_grad():
        model[0].bias[:5] = -100.0
    engine = NeuronEngine(model)
    summary = TensorBoardSummary(log_dir=tmp_path).attach(engine)
    with engine.tracking():
        model(torch.randn(256, 4))
    summary.log(engine, step=0)
    engine.apply(engine.propose(DEAD), step=1)
    with engine.tracking():
        model(torch.randn(256, 4))
    summary.log(engine, step=2)
    summary.close()

    events = read(tmp_path)
    tags = events.Tags()
    assert {"engine/0/width", "engine/0/params", "engine/0/dead_fraction", "engine/0/mean_abs",
            "engine/2/saturation", "engine/params", "engine/surgery/params_after",
            "engine/surgery/units_removed"} <= set(tags["scalars"])  # fmt: skip
    assert "engine/0/saturation" not in tags["scalars"]  # ReLU is unbounded
    assert len(tags["scalars"]) < 25  # two layers: a handful of figures each, not per neuron
    assert [s.value for s in events.Scalars("engine/0/width")] == [64, 59]
    assert [s.value for s in events.Scalars("engine/surgery/units_removed")] == [5]
    assert events.Scalars("engine/0/dead_fraction")[0].value == pytest.approx(5 / 64)
    assert {"engine/0/neuron_mean", "engine/0/neuron_std", "engine/0/neuron_firing_rate",
            "engine/2/neuron_saturation"} <= set(tags["histograms"])  # fmt: skip
    hist = events.Histograms("engine/0/neuron_mean")
    assert [h.histogram_value.num for h in hist] == [64, 59]  # one entry per neuron
    snap = engine.layer_stats("0")
    assert hist[-1].histogram_value.sum == pytest.approx(float(snap.mean.sum()), rel=1e-6)
    text = events.Tensors("engine/surgery/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "applied; 0 64→59; parameters" in text  # the plan as one line of text


def test_histogram_raw_counts_every_finite_value():
    values = torch.tensor([0.0, 0.5, float("nan"), 2.0, 2.0])
    h = histogram_raw(values, bins=4)
    assert h["num"] == 4 and sum(h["bucket_counts"]) == 4 and h["bucket_limits"][-1] == 2.0
    assert histogram_raw(torch.tensor([1.0, 1.0]))["bucket_counts"] == [2.0]
    assert histogram_raw(torch.full((3,), float("nan"))) is None


def test_lightning_callback_writes_histograms_to_its_tensorboard_logger(tmp_path):
    pl = pytest.importorskip("lightning.pytorch")
    from engine.integrations.lightning import SelfModifyingCallback
    from tests.integrations.lit_models import DEAD as PLANTED
    from tests.integrations.lit_models import TinyLit, loader, trainer

    torch.manual_seed(0)
    logger = pl.loggers.TensorBoardLogger(tmp_path, name="tb")
    callback = SelfModifyingCallback(DEAD, every=2, module="net", summary=True)
    trainer(tmp_path, 2, [callback], logger=logger).fit(TinyLit(), loader())
    logger.experiment.flush()
    events = read(logger.log_dir)
    assert [s.value for s in events.Scalars("engine/0/width")][-1] == 32 - PLANTED
    assert "engine/0/neuron_mean_abs" in events.Tags()["histograms"]
    assert events.Scalars("engine/surgery/accepted")[0].value == 1.0
