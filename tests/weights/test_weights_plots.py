"""Every plot: expected title and axis labels, a non-empty PNG, no pyplot figure left open,
and well under a second at about a million parameters."""

from __future__ import annotations

import time

import matplotlib.pyplot as plt
import pytest
import torch
from test_weights_surgery import make_engine, run_surgery
from torch import nn

from engine import NeuronEngine
from engine.history import TrainingHistory
from engine.stats import Moments
from engine.weights import WeightPlotError, WeightTracker
from engine.weights.plots import (
    figure_texts,
    plot_architecture_timeline,
    plot_change_histogram,
    plot_correlation,
    plot_layer_change,
    plot_neuron_activity,
    plot_run,
    plot_total_change,
    plot_weight_heatmap,
    plot_weight_trajectories,
)


@pytest.fixture
def run(tmp_path):
    """A tracked run with training steps, one surgery and logged epochs."""
    model, engine = make_engine()
    tracker = WeightTracker(engine, tmp_path / "run")
    for epoch in range(3):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p) * 0.01)
        if epoch < 2:  # hand-made surgery leaves the engine's statistics at the old widths
            with torch.no_grad(), engine.tracking():
                model(torch.randn(32, 6))
            engine.log_epoch(epoch, loss=1.0 / (epoch + 1))
        tracker.on_epoch(epoch, step=10 * (epoch + 1))
        if epoch == 1:
            run_surgery(model, engine, tracker, step=25, epoch=1)
    return tracker, engine


def check(fig, path, title, xlabel, ylabel):
    texts = figure_texts(fig)
    assert any(title in t for t in texts["title"]), texts
    assert xlabel in texts["xlabel"] and ylabel in texts["ylabel"], texts
    assert path.is_file() and path.stat().st_size > 1000
    assert plt.get_fignums() == []  # never registered with pyplot: nothing to leak


def test_change_over_time_plots(run, tmp_path):
    tracker, _ = run
    series = tracker.compare_consecutive()
    fig = plot_total_change(series, path=tmp_path / "t.png")
    check(fig, tmp_path / "t.png", "Total weight change", "step", "L2 change ‖ΔW‖")
    assert list(fig.axes[0].lines[0].get_xdata()) == [20.0, 25.0, 25.0, 30.0]
    fig = plot_layer_change(series, metric="relative", path=tmp_path / "l.png")
    check(fig, tmp_path / "l.png", "per module", "step", "relative change ‖ΔW‖/‖W‖")
    assert sorted(line.get_label() for line in fig.axes[0].lines) == ["0", "2", "4"]
    with pytest.raises(WeightPlotError, match="unknown metric 'l3'"):
        plot_total_change(series, metric="l3")


def test_weight_plots_across_surgery(run, tmp_path):
    tracker, _ = run
    snaps = tracker.snapshots()
    fig = plot_weight_heatmap(snaps[0], snaps[-1], "2.weight", path=tmp_path / "h.png")
    check(fig, tmp_path / "h.png", "Weight change of 2.weight", "input (column)",
          "output unit (row)")  # fmt: skip
    assert fig.axes[0].images[0].get_array().shape == (6, 5)  # survivors only
    fig = plot_change_histogram(snaps[0], snaps[-1], path=tmp_path / "d.png")
    check(fig, tmp_path / "d.png", "Distribution of weight changes", "ΔW", fig.axes[0].get_ylabel())
    fig = plot_weight_trajectories(snaps, "0.weight", count=8, path=tmp_path / "w.png")
    check(fig, tmp_path / "w.png", "Weight trajectories of 0.weight", "step", "weight value")
    values = fig.axes[0].lines[0].get_ydata()
    assert len(values) == len(snaps)


def test_conv_heatmap_is_reduced_per_filter(tmp_path):
    conv = nn.Sequential(nn.Conv2d(3, 5, 3))
    tracker = WeightTracker(conv, tmp_path)
    a = tracker.snapshot()
    with torch.no_grad():
        conv[0].weight[2].add_(1.0)
    b = tracker.snapshot()
    fig = plot_weight_heatmap(a, b, "0.weight", path=tmp_path / "c.png")
    check(fig, tmp_path / "c.png", "Weight change of 0.weight", "input channel", "output filter")
    image = fig.axes[0].images[0].get_array()
    assert image.shape == (5, 3) and image[2].tolist() == pytest.approx([3.0] * 3)
    assert image[[0, 1, 3, 4]].max() == 0


def test_architecture_timeline_marks_surgery(run, tmp_path):
    tracker, _ = run
    changes = tracker.changes()
    fig = plot_architecture_timeline(tracker.snapshots(), changes, path=tmp_path / "a.png")
    check(fig, tmp_path / "a.png", "Architecture over training", "step", "units")
    ax = fig.axes[0]
    widths = {
        line.get_label(): list(line.get_ydata()) for line in ax.lines if line.get_label()[0] != "_"
    }
    assert widths["0"] == [8, 8, 8, 5, 5] and widths["2"] == [6, 6, 6, 7, 7]
    events = [line for line in ax.lines if list(line.get_xdata()) == [25.0, 25.0]]
    assert len(events) == 3  # prune, merge, expand
    assert sorted(t.get_text() for t in ax.get_legend().get_texts())[-3:] == [
        "expand",
        "merge",
        "prune",
    ]


def test_neuron_activity_and_correlation(run, tmp_path):
    _, engine = run
    history = TrainingHistory()
    for epoch, ids in enumerate([list(range(8)), list(range(8)), [0, 3, 4, 6, 7, 9]]):
        rates = torch.tensor(ids, dtype=torch.float64)[None, :] / 10 + torch.zeros(4, 1)
        history.log(epoch, {"0": (ids, Moments.from_samples(rates))})
    fig = plot_neuron_activity(history, "0", field="mean", path=tmp_path / "n.png")
    check(fig, tmp_path / "n.png", "Neuron activity of 0", "epoch", "neuron ID")
    values = fig.axes[0].images[0].get_array()
    assert values.shape == (9, 3) and values.mask[[1, 2, 5], 2].all()  # removed: blank
    assert values.mask[8, :2].all() and values[8, 2] == pytest.approx(0.9)  # grown later
    assert values[3].tolist() == pytest.approx([0.3] * 3)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 2))
    corr = NeuronEngine(model, correlation=True)
    with corr.tracking():
        model(torch.randn(64, 4))
    layer = corr.layer_stats("0")
    fig = plot_correlation(layer, path=tmp_path / "r.png")
    check(fig, tmp_path / "r.png", "Correlation of 0 units", "unit (local index)",
          "unit (local index)")  # fmt: skip
    with pytest.raises(WeightPlotError, match="correlation=True"):
        plot_correlation(engine.layer_stats("0"))


def test_plot_run_writes_the_summary(run):
    tracker, _ = run
    written = plot_run(tracker)
    assert set(written) >= {"total_change", "layer_change", "architecture", "activity_0"}
    assert all(p.stat().st_size > 1000 for p in written.values())


def test_each_plot_is_fast_at_a_million_parameters(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(784, 1024), nn.ReLU(), nn.Linear(1024, 256), nn.ReLU(),
                          nn.Linear(256, 10))  # fmt: skip
    tracker = WeightTracker(model, tmp_path)
    for step in range(3):
        with torch.no_grad():
            model[0].weight.add_(0.01)
        tracker.snapshot(step=step)
    snaps = tracker.snapshots()
    series = tracker.compare_consecutive()
    calls = {
        "total": lambda p: plot_total_change(series, path=p),
        "layers": lambda p: plot_layer_change(series, path=p),
        "heatmap": lambda p: plot_weight_heatmap(snaps[0], snaps[-1], "0.weight", path=p),
        "histogram": lambda p: plot_change_histogram(snaps[0], snaps[-1], path=p),
        "trajectories": lambda p: plot_weight_trajectories(snaps, "0.weight", path=p),
    }
    for name, call in calls.items():
        start = time.perf_counter()
        call(tmp_path / f"{name}.png")
        assert time.perf_counter() - start < 1.0, name
