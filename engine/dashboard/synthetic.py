"""A synthetic run folder with every file the dashboard reads, for tests, the benchmark and
trying the page without training: ``layers`` Linear layers trained by random steps for
``epochs`` epochs, a surgery every few epochs in the change log (trials alternately accepted
and rolled back; the synthetic weights keep their shapes), gradient records, and a probe set
of 8×8 images drifting into classes over training.

>>> import tempfile
>>> run = synthetic_run(tempfile.mkdtemp(), layers=3, epochs=4, samples=12)
>>> sorted(p.name for p in run.iterdir())
['changes.jsonl', 'dynamics', 'gradients.json', 'history.json', 'moving_averages.json', 'weights']
"""

from __future__ import annotations

import json
import os
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
from torch import nn

from engine.dynamics.gradient_record import GradientHistory
from engine.dynamics.gradient_stats import COLUMN, COLUMNS
from engine.dynamics.layer_similarity import LayerSimilarityHistory
from engine.dynamics.moving_averages import MovingAverages
from engine.dynamics.representations import RepresentationStore
from engine.history import TrainingHistory
from engine.stats import Moments
from engine.weights.tracker import WeightTracker


def _change_line(epoch: int, event: int, layer: str, width: int, accepted: bool) -> dict:
    removed = list(range(event * 100, event * 100 + 2))
    return {
        "step": None, "epoch": epoch, "time": 1.0e9 + event,
        "plan_fingerprint_before": f"{event:016x}", "plan_fingerprint_after": f"{event + 1:016x}",
        "action_index": 0, "label": "prune[0]", "kind": "prune", "layer": layer,
        "reason": "dead", "policy": "dead", "removed_ids": removed,
        "width_before": width, "width_after": width - 2,
        "params_before": 1000, "params_after": 1000 - 2 * (width + 1),
        "params_delta": -2 * (width + 1), "max_output_change": 0.0,
        "max_output_change_eval": 1e-3 * (event + 1),
        "trial": "accepted" if accepted else "rolled_back",
        "trial_loss_before": 1.0 / (epoch + 1), "trial_loss_after": 1.0 / (epoch + 1) + 0.01,
    }  # fmt: skip


def synthetic_run(
    run_dir: str | os.PathLike[str],
    *,
    layers: int = 6,
    epochs: int = 10,
    width: int = 8,
    samples: int = 48,
    every: int = 3,
    seed: int = 0,
) -> Path:
    """Write the synthetic run under ``run_dir`` (created) and return its path."""
    run = Path(run_dir)
    run.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(seed)
    names = [f"fc{i + 1}" for i in range(layers)]
    model = nn.Sequential(OrderedDict((n, nn.Linear(width, width)) for n in names))
    tracker = WeightTracker(model, run / "weights", background=False)
    history = TrainingHistory()
    labels = torch.arange(samples) % 4
    centres = torch.randn(4, 8, 8, generator=gen)
    store = RepresentationStore(run / "dynamics" / "representations", list(range(samples)))
    noise = torch.randn(samples, 8, 8, generator=gen)
    similarity = LayerSimilarityHistory()
    tracker.snapshot("initial", epoch=-1)
    lines, steps = [], []
    averages = MovingAverages(model, beta=0.8)
    for epoch in range(epochs):
        scale = 0.1 / (1 + epoch)
        for p in model.parameters():  # gradients with a dead first input column
            p.grad = torch.randn(p.shape, generator=gen)
            if p.dim() == 2:
                p.grad[:, 0] = 0.0
        averages.update(epoch)
        with torch.no_grad():
            for i, p in enumerate(model.parameters()):
                p.add_(torch.randn(p.shape, generator=gen) * scale * (1 + i % 3))
        acts = torch.randn(16, width, generator=gen).abs() * (1 + epoch / epochs)
        per_layer = {n: (list(range(j * width, (j + 1) * width)), Moments.from_samples(acts))
                     for j, n in enumerate(names)}  # fmt: skip
        history.log(epoch, per_layer, loss=2.0 / (1 + epoch), accuracy=1 - 0.8 / (1 + epoch))
        tracker.on_epoch(epoch)
        mix = min(1.0, (epoch + 1) / epochs)
        images = mix * centres[labels] + (1 - mix) * noise
        logits = torch.nn.functional.one_hot(labels, 4) * 4 * mix + torch.randn(
            samples, 4, generator=gen
        )
        reps = {"features": images.reshape(samples, -1), "logits": logits}
        store.record(epoch, reps)
        similarity.record(epoch, reps)
        if epoch % every == every - 1:
            event = len(lines)
            lines.append(_change_line(epoch, event, names[event % layers], width, event % 2 == 0))
        steps.extend(range(epoch * 4, epoch * 4 + 4))
    (run / "changes.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    history.save(run / "history.json")
    similarity.save(run / "dynamics" / "layer_similarity.json")
    averages.history().save(run / "moving_averages.json")
    n_steps = len(steps)
    records = {}
    for index, (p_name, p) in enumerate(model.named_parameters()):
        rows = np.zeros((n_steps, len(COLUMNS)))
        rows[:, COLUMN["numel"]] = p.numel()
        frac = np.linspace(0.05, 0.4, n_steps) * (1 + index % 3) / 3
        rows[:, COLUMN["near_zero"]] = np.round(frac * p.numel())
        rows[:, COLUMN["prev_near_zero"]] = np.roll(rows[:, COLUMN["near_zero"]], 1)
        rows[:, COLUMN["retained"]] = np.minimum(rows[:, 1], rows[:, 2])
        rows[:, COLUMN["released"]] = rows[:, 2] - rows[:, COLUMN["retained"]]
        rows[:, COLUMN["sign_flips"]] = np.round(0.2 * p.numel())
        rows[:, COLUMN["grad_norm"]] = 1.0 / (1 + np.arange(n_steps))
        rows[:, COLUMN["weight_diff_norm"]] = 0.01
        records[p_name] = rows
    GradientHistory(steps=np.array(steps), records=records).save(run / "gradients.json")
    from engine.dashboard.representations import save_probe

    save_probe(run / "dynamics", images[:, None], labels)
    return run
