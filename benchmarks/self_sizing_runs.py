"""The runs of ``self_sizing.py``: a fixed model, the self-sizing loop, and the peer.

Every run of one task and seed sees the same data: the task's training split minus a held-out
part (the trials' judge; the fixed model and the peer never see it either), and the test split,
used only for the reported accuracy. Same optimizer (Adam, the task's learning rate), batch
size and epochs everywhere.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

REPO = Path(__file__).resolve().parents[1]
if str(REPO / "demos") not in sys.path:
    sys.path.insert(0, str(REPO / "demos"))

import demo_utils as du  # noqa: E402  (puts the repository on sys.path too)

from engine import NeuronEngine, SurgerySchedule, recovery_steps  # noqa: E402
from engine.data import DataSplit, make_signals_split  # noqa: E402

AUTOSIZE = REPO / "policies" / "autosize.yaml"


@dataclass(frozen=True)
class Task:
    """A model family at the demo's widths, its data and its learning rate."""

    name: str
    build: Callable[[float], nn.Module]  # width multiplier → model
    data: Callable[[int, bool], DataSplit]  # (seed, fast) → split
    lr: float
    layers: tuple[str, ...]  # the hidden layers whose widths the table shows


def _digits(images: bool) -> Callable[[int, bool], DataSplit]:
    return lambda seed, fast: du.digits(seed, fast=fast, images=images)


def _signals(seed: int, fast: bool) -> DataSplit:
    return make_signals_split(seed, train=800 if fast else 4000, test=200 if fast else 1000)


TASKS = {
    "digits_mlp": Task(
        "digits_mlp", lambda k: du.mlp((du.scaled(128, k), du.scaled(64, k))), _digits(False), 1e-3,
        ("fc1", "fc2"),
    ),
    "digits_cnn": Task(
        "digits_cnn",
        lambda k: du.small_cnn((du.scaled(16, k), du.scaled(32, k)), du.scaled(64, k)),
        _digits(True), 3e-3, ("conv1", "conv2", "fc1"),
    ),
    "signals_mlp": Task(
        "signals_mlp",
        lambda k: du.mlp((du.scaled(128, k), du.scaled(64, k)), inputs=64, classes=8),
        _signals, 1e-3, ("fc1", "fc2"),
    ),
}  # fmt: skip


@dataclass
class Settings:
    epochs: int = 30
    every: int = 3
    batch: int = 64
    held_out_fraction: float = 0.15
    recovery: int = 10  # training steps inside each trial before it is judged
    min_growth_gain: float = 0.002  # growth must lower the held-out loss by 0.2 %…
    underfit_margin: float | None = 0.2  # …unless train loss ≥ 0.8 × held-out (no harm then)
    significance: float | None = None  # 2.0: …and by 2 standard errors (see the README)
    cut_budget: float = 0.02  # all kept cuts together: at most +2 % (net) of the held-out loss
    config: Path = AUTOSIZE
    apply_options: dict = field(default_factory=dict)


@dataclass
class Run:
    """What one run reports."""

    accuracy: float
    params: int
    widths: list[int]
    steps: int  # optimizer steps, recovery steps of trials included
    seconds: float
    history: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def widths(model: nn.Module, names: Sequence[str]) -> list[int]:
    out = []
    for name in names:
        m = model.get_submodule(name)
        out.append(m.out_channels if isinstance(m, nn.modules.conv._ConvNd) else m.out_features)
    return out


def _steps_per_epoch(n: int, batch: int) -> int:
    return -(-n // batch)


def _run(model: nn.Module, task: Task, data: DataSplit, steps: int, started: float, history=()):
    return Run(
        100 * du.accuracy(model, data.x_test, data.y_test), du.count_parameters(model),
        widths(model, task.layers), steps, time.perf_counter() - started, list(history),
    )  # fmt: skip


def train_fixed(task: Task, scale: float, data: DataSplit, seed: int, s: Settings) -> Run:
    """The architecture at ``scale`` × the demo's widths, trained unchanged."""
    started = time.perf_counter()
    torch.manual_seed(seed)
    model = task.build(scale)
    opt = torch.optim.Adam(model.parameters(), lr=task.lr)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(s.epochs):
        du.train_epoch(model, opt, data.x_train, data.y_train, s.batch, generator)
    return _run(model, task, data, s.epochs * _steps_per_epoch(len(data.x_train), s.batch), started)


def train_self_sizing(
    task: Task, scale: float, data: DataSplit, held_out: tuple, seed: int, s: Settings
) -> Run:
    """Start at ``scale`` × the demo's widths; the autosize loop grows and prunes it."""
    started = time.perf_counter()
    torch.manual_seed(seed)
    model = task.build(scale)
    opt = torch.optim.Adam(model.parameters(), lr=task.lr)
    engine = NeuronEngine(model, correlation=True, growth_signal=True)
    steps = recovery_steps(data.x_train, data.y_train, F.cross_entropy, s.recovery, s.batch)
    recoveries = []

    def recover(model: nn.Module, opt: torch.optim.Optimizer) -> None:
        recoveries.append(1)  # counted: the trials' extra training steps are reported
        steps(model, opt)

    schedule = SurgerySchedule(
        engine, opt, s.config, every=s.every, stop=s.epochs - s.every,
        held_out=held_out, loss_fn=F.cross_entropy,
        recover=recover,
        trial_options={"baseline": "recovered"}
        | ({} if s.significance is None else {"significance": s.significance}),
        min_growth_gain=s.min_growth_gain, shrink_start=s.epochs // 3, cut_budget=s.cut_budget,
        underfit_margin=s.underfit_margin,
        **s.apply_options,
    )  # fmt: skip
    generator = torch.Generator().manual_seed(seed)
    history = []
    for epoch in range(s.epochs):
        with engine.tracking():
            loss, _ = du.train_epoch(model, opt, data.x_train, data.y_train, s.batch, generator)
        engine.log_epoch(epoch, loss=loss)
        trials_before = len(schedule.trials)
        record = schedule.epoch_end(epoch)
        if schedule.due(epoch):
            history.append(
                dict(
                    epoch=epoch,
                    trials=[
                        dict(accepted=t.accepted, kinds=sorted({a.kind for a in t.record.actions}),
                             loss_before=t.loss_before, loss_after=t.loss_after)
                        for t in schedule.trials[trials_before:]
                    ],
                    widths=widths(model, task.layers),
                    params=du.count_parameters(model),
                    applied=record is not None,
                )
            )  # fmt: skip
    total = s.epochs * _steps_per_epoch(len(data.x_train), s.batch) + s.recovery * len(recoveries)
    return _run(model, task, data, total, started, history)


def train_peer(
    task: Task, scale: float, data: DataSplit, seed: int, s: Settings, target: Sequence[int]
) -> Run:
    """Torch-Pruning's magnitude pruner: train half the epochs at ``scale``, prune to the
    ``target`` widths (the self-sizing run's final ones), fine-tune the other half."""
    import torch_pruning as tp

    started = time.perf_counter()
    torch.manual_seed(seed)
    model = task.build(scale)
    opt = torch.optim.Adam(model.parameters(), lr=task.lr)
    generator = torch.Generator().manual_seed(seed)
    first = s.epochs // 2
    for _ in range(first):
        du.train_epoch(model, opt, data.x_train, data.y_train, s.batch, generator)
    ratios = {}
    for name, kept, now in zip(task.layers, target, widths(model, task.layers), strict=True):
        if kept < now:  # TP keeps int(width·(1 − ratio)): aim half a unit above
            ratios[model.get_submodule(name)] = 1.0 - (kept + 0.5) / now
    if ratios:
        output = [m for n, m in model.named_modules() if n == "fc_out"]
        pruner = tp.pruner.MagnitudePruner(
            model, data.x_train[:2], importance=tp.importance.MagnitudeImportance(p=2),
            pruning_ratio=0.0, pruning_ratio_dict=ratios, ignored_layers=output,
        )  # fmt: skip
        pruner.step()
        opt = torch.optim.Adam(model.parameters(), lr=task.lr)  # TP leaves the optimizer stale
    for _ in range(s.epochs - first):
        du.train_epoch(model, opt, data.x_train, data.y_train, s.batch, generator)
    return _run(model, task, data, s.epochs * _steps_per_epoch(len(data.x_train), s.batch), started)
