"""Training history: per-epoch windows, metrics, save/load, SelfModifyingSLM import."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from engine import ConfigurationError, HistoryError, NeuronEngine, TrainingHistory


def _run_epochs(epochs: int = 3):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    engine = NeuronEngine(model)
    inputs = []
    for epoch in range(epochs):
        x = torch.randn(40, 3) + epoch  # each epoch sees different data
        inputs.append(x)
        with engine.tracking(), torch.no_grad():
            for chunk in x.split(16):
                model(chunk)
        engine.log_epoch(epoch, loss=1.0 / (epoch + 1), accuracy=np.float32(0.5 + epoch / 10),
                         lr=torch.tensor(0.1))  # fmt: skip
    return model, engine, inputs


def test_each_epoch_records_that_epochs_statistics():
    model, engine, inputs = _run_epochs()
    for epoch, x in enumerate(inputs):
        with torch.no_grad():
            ref = torch.relu(model[0](x)).double()
        layer = engine.history.records[epoch].layers["0"]
        assert layer["count"] == 40
        np.testing.assert_allclose(layer["mean"], ref.mean(0).numpy(), rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(layer["variance"], ref.var(0, correction=0).numpy(),
                                   rtol=1e-5, atol=1e-7)  # fmt: skip
        np.testing.assert_allclose(layer["firing_rate"], (ref > 0).double().mean(0).numpy())
    # the running total still covers all epochs
    assert engine.snapshot().layers["0"].count == 120


def test_metrics_are_plain_floats_and_evolution_follows_a_neuron():
    _, engine, _ = _run_epochs()
    assert engine.history.metric("loss") == pytest.approx([1.0, 0.5, 1 / 3])
    assert engine.history.metric("lr") == pytest.approx([0.1] * 3)
    evo = engine.history.neuron_evolution(5)  # layer "2", local 1
    assert evo["epoch"] == [0, 1, 2] and set(evo["layer"]) == {"2"}
    assert len(evo["mean"]) == 3 and evo["accuracy"] == pytest.approx([0.5, 0.6, 0.7])
    with pytest.raises(HistoryError, match="neuron 99 appears in no logged epoch"):
        engine.history.neuron_evolution(99)


def test_save_load_round_trip(tmp_path):
    _, engine, _ = _run_epochs()
    path = engine.history.save(tmp_path / "h.json")
    json.loads(path.read_text())  # strict JSON
    back = TrainingHistory.load(path)
    assert [r.to_json() for r in back.records] == [r.to_json() for r in engine.history.records]
    assert back.neuron_evolution(2) == engine.history.neuron_evolution(2)


def test_neuron_absent_from_some_epochs_is_followed_where_it_lives():
    from engine.stats import Moments

    hist = TrainingHistory()
    hist.log(0, {"fc": ([0, 1], Moments.from_samples(torch.ones(2, 2)))})
    hist.log(1, {"fc": ([1], Moments.from_samples(torch.zeros(2, 1)))})  # 0 was pruned
    assert hist.neuron_evolution(0)["epoch"] == [0]
    assert hist.neuron_evolution(1)["mean"] == [1.0, 0.0]


def test_bad_metric_is_refused_by_name():
    _, engine, _ = _run_epochs(1)
    with pytest.raises(ConfigurationError, match="metric 'loss' must be a number"):
        engine.log_epoch(1, loss="low")
    with pytest.raises(ConfigurationError, match="metric 'acc' must be a scalar"):
        engine.log_epoch(1, acc=torch.ones(3))


def test_loads_selfmodifying_slm_history(tmp_path):
    old = {
        "metadata": {"total_epochs": 3, "total_neurons": 2, "activation_threshold": 0.01},
        "neuron_histories": {
            "106": {"mean": [0.4069, 0.3397, 0.9154], "variance": [1.9, 3.4, 5.2],
                    "frequency": [0.99, 0.992, 0.994], "loss": [1.69, 1.03, 0.81],
                    "accuracy": [0.39, 0.63, 0.69]},
            "107": {"mean": [0.1, 0.2, 0.3], "variance": [1.0, 1.0, 1.0],
                    "frequency": [0.5, 0.5, 0.5], "loss": [1.69, 1.03, 0.81],
                    "accuracy": [0.39, 0.63, 0.69]},
        },
    }  # fmt: skip
    path = tmp_path / "old.json"
    path.write_text(json.dumps(old))
    hist = TrainingHistory.load(path)
    evo = hist.neuron_evolution(106)
    assert evo["mean"] == [0.4069, 0.3397, 0.9154]
    assert evo["firing_rate"] == [0.99, 0.992, 0.994]
    assert hist.metric("loss") == [1.69, 1.03, 0.81]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{oops", "not valid JSON"),
        ('{"format": "other"}', "not a training history"),
        ('{"format": "neuron-engine.history", "version": 9, "epochs": []}', "version 9"),
        ('{"format": "neuron-engine.history", "version": 1, "epochs": [{}]}', "malformed"),
        ('{"neuron_histories": {}}', "empty"),
    ],
)
def test_bad_history_files(tmp_path, content, message):
    path = tmp_path / "h.json"
    path.write_text(content)
    with pytest.raises(HistoryError, match=message):
        TrainingHistory.load(path)
    with pytest.raises(HistoryError, match="no such history file"):
        TrainingHistory.load(tmp_path / "missing.json")
