"""Rows of ``results_table.py`` that modify the MLP while it trains: growth and the loop.

Each run trains an MLP from scratch with ``engine.SurgerySchedule`` (propose + apply every few
epochs) and returns the same metrics dict as ``results_rows`` (``acc_surgery``: right after the
last applied plan; ``history``: the widths after each applied plan).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from results_rows import (
    MLP_LAYERS,
    SMALL,
    WIDE,
    Settings,
    demo_utils,
    pct,
    row_metrics,
    seeded,
    train,
    widths_of,
)

from engine import NeuronEngine, SurgerySchedule
from engine.errors import ConfigurationError

GROWTH_INITS = ("net2net", "zero_outgoing", "random")


def growth_settings(init: str) -> dict[str, Any]:
    """Saturation-policy settings of the growth rows (``init``: one of :data:`GROWTH_INITS`)."""
    s: dict[str, Any] = {
        "unit_firing_rate": 0.5,
        "layer_fraction": 0.5,
        "growth_fraction": 1.0,
        "max_width": WIDE[0],
        "init": init,
    }
    if init == "net2net":
        s["noise"] = 0.1  # relative to the weights' std: breaks the copies' symmetry
    return s


def run_scheduled(
    seed: int, s: Settings, start: Sequence[int], config: Any, epochs: int, every: int, stop
) -> dict[str, Any]:
    """Train an MLP from scratch with ``SurgerySchedule`` (``config=None``: no surgery)."""
    data = demo_utils.load_digits_split(seed, subset=s.subset)
    torch.manual_seed(seed)
    model = demo_utils.mlp(start)
    opt = torch.optim.Adam(model.parameters(), lr=s.lr)
    engine = NeuronEngine(model, correlation=True) if config is not None else None
    schedule = (
        SurgerySchedule(engine, opt, config, every=every, stop=stop) if engine is not None else None
    )
    after: list[float] = []
    history: list[dict[str, Any]] = []

    def epoch_end(epoch: int) -> None:
        if schedule is None:
            return
        record = schedule.epoch_end(epoch)
        if record is not None:
            after.append(pct(model, data.x_test, data.y_test))
            history.append({"epoch": epoch, "widths": widths_of(model, MLP_LAYERS)})

    if engine is None:
        train_s = train(model, opt, data, epochs, s, seeded(seed))
    else:
        with engine.tracking():
            train_s = train(model, opt, data, epochs, s, seeded(seed), epoch_end)
    return row_metrics(
        model, MLP_LAYERS, acc_before=None, acc_surgery=after[-1] if after else None,
        acc_final=pct(model, data.x_test, data.y_test), train_s=train_s, total_s=train_s,
        epochs=epochs, surgeries=len(history), start_widths=list(start), history=history,
    )  # fmt: skip


def run_growth(seed: int, s: Settings) -> dict[str, dict[str, Any]]:
    """The small MLP alone, and grown from the same start by the saturation policy."""
    rows = {"mlp_small": run_scheduled(seed, s, SMALL, None, s.epochs, 1, None)}
    for init in GROWTH_INITS:
        config = {"policies": [{"name": "saturation", "settings": growth_settings(init)}]}
        rows[f"mlp_grow_{init}"] = run_scheduled(
            seed, s, SMALL, config, s.epochs, s.grow_every, s.grow_stop
        )
    return rows


def run_self_modifying(seed: int, s: Settings, config: Path) -> dict[str, dict[str, Any]]:
    """The wide MLP trained from scratch for the baseline's + fine-tune's epochs, with
    propose+apply every ``selfmod_every`` epochs (none in the last ``finetune_epochs``)."""
    if not config.is_file():
        raise ConfigurationError(f"{config}: no such policy configuration file")
    epochs = s.epochs + s.finetune_epochs
    row = run_scheduled(seed, s, WIDE, config, epochs, s.selfmod_every, s.epochs)
    return {"mlp_self_modifying": row}
