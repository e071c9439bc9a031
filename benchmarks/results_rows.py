"""The measurements behind ``results_table.py``: training, the engine's compensated surgery
(one plan, or layer by layer), Torch-Pruning's magnitude pruning, fine-tuning (the rows that
modify a model while it trains are in ``results_training``).

Each ``run_*`` function measures one group of rows for one seed and returns
``{row_key: metrics}``, where ``metrics`` is a plain dict (JSON-ready): hidden ``widths``,
``params``, test accuracies in % (``acc_before``: the trained model before any surgery,
``acc_surgery``: right after the (last) surgery, ``acc_bn``: the same after recalibrating the
BatchNorm running statistics (CNN rows), ``acc_final``: at the end, after fine-tuning or after
the whole training budget), ``loss_final`` (test cross-entropy after the fine-tune), and times
in seconds (``train_s``, ``surgery_s``, ``finetune_s``, ``total_s``). Everything a row needs is
seeded, so a seed gives the same numbers on every run (up to float non-determinism of the BLAS).

Fairness of the fine-tune: every pruned model is fine-tuned by :func:`fine_tune` with the same
fresh Adam (``lr``), batch size, number of epochs and *the same batch order* (a generator seeded
per seed). The ``*_kept_opt`` rows fine-tune the engine's one-plan models with the training
optimizer that the surgery remapped (Adam moments of the surviving units kept) instead.
"""

from __future__ import annotations

import copy
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import torch_pruning as tp
from torch import nn

REPO = Path(__file__).resolve().parents[1]
if str(REPO / "demos") not in sys.path:
    sys.path.insert(0, str(REPO / "demos"))

import demo_utils  # noqa: E402  (puts the repository on sys.path too)

from engine import NeuronEngine  # noqa: E402
from engine.data import DataSplit  # noqa: E402
from engine.surgery.batchnorm import recalibrate_batchnorm  # noqa: E402

WIDE = (128, 64)
SMALL = (16, 8)
CNN_CHANNELS = (16, 32)
CNN_HIDDEN = 64
MLP_LAYERS = ("fc1", "fc2")
CNN_LAYERS = ("conv1", "conv2", "fc1")
# Default guards (policies/default.yaml): 30 % kept is above min_keep_fraction 0.25.
GUARDS = {"min_width": 4, "min_keep_fraction": 0.25}


@dataclass(frozen=True)
class Settings:
    """Budgets and schedules of one run (``results_table.py`` builds the full and fast ones)."""

    seeds: tuple[int, ...] = (0, 1, 2)
    epochs: int = 30  # baseline training, also the growth budget
    finetune_epochs: int = 10
    cnn_epochs: int = 30
    batch: int = 64
    lr: float = 1e-3
    subset: int | None = None  # digits samples kept (fast mode)
    keep: tuple[float, ...] = (0.5, 0.3)  # share of hidden units kept by the MLP rows
    cnn_keep: float = 0.5
    grow_every: int = 3
    grow_stop: int = 9  # three doublings at most: 16→128, 8→64
    selfmod_every: int = 3


def kept_widths(widths: Sequence[int], keep: float) -> tuple[int, ...]:
    """Hidden widths after keeping ``keep`` of each layer's units (rounded)."""
    return tuple(max(1, round(keep * w)) for w in widths)


def widths_of(model: nn.Module, names: Sequence[str]) -> list[int]:
    out = []
    for name in names:
        m = model.get_submodule(name)
        out.append(m.out_channels if isinstance(m, nn.Conv2d) else m.out_features)
    return out


def pct(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return 100.0 * demo_utils.accuracy(model, x, y)


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def train(
    model: nn.Module,
    opt: torch.optim.Optimizer,
    data: DataSplit,
    epochs: int,
    s: Settings,
    generator: torch.Generator,
    epoch_end: Callable[[int], None] | None = None,
) -> float:
    """``epochs`` epochs of mini-batch training; returns the wall time in seconds."""
    started = time.perf_counter()
    for epoch in range(epochs):
        demo_utils.train_epoch(model, opt, data.x_train, data.y_train, s.batch, generator)
        if epoch_end is not None:
            epoch_end(epoch)
    return time.perf_counter() - started


def fine_tune(
    model: nn.Module, data: DataSplit, s: Settings, seed: int, opt=None
) -> tuple[float, float]:
    """The common fine-tune: fresh Adam (unless ``opt``), same epochs, same batch order."""
    opt = opt or torch.optim.Adam(model.parameters(), lr=s.lr)
    seconds = train(model, opt, data, s.finetune_epochs, s, seeded(10_000 + seed))
    return pct(model, data.x_test, data.y_test), seconds


def clone_with_optimizer(model: nn.Module, opt: torch.optim.Optimizer, lr: float):
    """A deep copy of ``model`` and an Adam holding a private copy of ``opt``'s state."""
    twin = copy.deepcopy(model)
    twin_opt = torch.optim.Adam(twin.parameters(), lr=lr)
    twin_opt.load_state_dict(copy.deepcopy(opt.state_dict()))  # load_state_dict may alias
    return twin, twin_opt


def calibrate(engine: NeuronEngine, model: nn.Module, calibration: torch.Tensor) -> None:
    """One pass over ``calibration`` in eval mode with the engine tracking, no gradient."""
    was_training = model.training
    model.eval()
    with engine.tracking(), torch.no_grad():
        model(calibration)
    model.train(was_training)


def budget_config(model: nn.Module, targets: dict[str, int]) -> dict[str, Any]:
    """A ``budget`` plan config removing, per layer, the share that leaves ``targets`` units."""
    fractions = {}
    for name, kept in targets.items():
        width = widths_of(model, [name])[0]
        fractions[name] = (width - kept) / width
    return {
        "guards": GUARDS,
        "policies": [{"name": "budget", "settings": {"fractions": fractions}}],
    }


def engine_prune(
    model: nn.Module,
    calibration: torch.Tensor,
    targets: dict[str, int],
    opt: torch.optim.Optimizer | None = None,
) -> float:
    """Real compensated surgery to the ``targets`` widths; returns its wall time in seconds.

    One calibration pass over ``calibration`` in eval mode (statistics with correlation), one
    budget plan with per-layer fractions, ``engine.apply`` on the live model (and ``opt``).
    """
    started = time.perf_counter()
    engine = NeuronEngine(model, correlation=True)
    calibrate(engine, model, calibration)
    engine.apply(engine.propose(budget_config(model, targets)), opt)
    seconds = time.perf_counter() - started
    check_widths(model, targets, "engine budget")
    return seconds


def engine_prune_layerwise(
    model: nn.Module,
    calibration: torch.Tensor,
    targets: dict[str, int],
    opt: torch.optim.Optimizer | None = None,
) -> float:
    """Compensated surgery one layer at a time, in ``targets`` order, each on fresh statistics.

    Per layer: forget the statistics (``engine.reset()``), one calibration pass over the model
    as the earlier layers' surgery left it, a budget plan for that layer only, ``engine.apply``.
    Where the model has BatchNorm, its running statistics are recalibrated on ``calibration``
    before each pass but the first (the earlier folds changed what the norms see), so each
    layer's fold is fitted to the activations of the model as it will be evaluated. The model
    is returned as the last surgery left it (not recalibrated). Returns the wall time.
    """
    started = time.perf_counter()
    engine = NeuronEngine(model, correlation=True)
    for i, (name, kept) in enumerate(targets.items()):
        if i:
            recalibrate_batchnorm(model, [calibration])
        engine.reset()
        calibrate(engine, model, calibration)
        engine.apply(engine.propose(budget_config(model, {name: kept})), opt)
    seconds = time.perf_counter() - started
    check_widths(model, targets, "engine budget, layer by layer")
    return seconds


def tp_prune(model: nn.Module, example: torch.Tensor, targets: dict[str, int]) -> float:
    """Torch-Pruning's MagnitudePruner (group L2 magnitude) to the ``targets`` widths."""
    started = time.perf_counter()
    ratios = {}
    for name, kept in targets.items():
        width = widths_of(model, [name])[0]
        # TP keeps int(width·(1 − ratio)) units: aim half a unit above to dodge float floors.
        ratios[model.get_submodule(name)] = 1.0 - (kept + 0.5) / width
    pruner = tp.pruner.MagnitudePruner(
        model,
        example,
        importance=tp.importance.MagnitudeImportance(p=2),
        pruning_ratio=0.0,  # layers not named in the dict stay as they are
        pruning_ratio_dict=ratios,
        ignored_layers=[model.get_submodule("fc_out")],
    )
    pruner.step()
    seconds = time.perf_counter() - started
    check_widths(model, targets, "Torch-Pruning")
    return seconds


def check_widths(model: nn.Module, targets: dict[str, int], who: str) -> None:
    got = dict(zip(targets, widths_of(model, list(targets))))
    if got != targets:
        raise RuntimeError(f"{who} gave widths {got}, expected {targets}")


def row_metrics(model, names, **metrics) -> dict[str, Any]:
    return {
        "widths": widths_of(model, names),
        "params": demo_utils.count_parameters(model),
        **metrics,
    }


def has_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


@torch.no_grad()
def test_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Mean cross-entropy in eval mode (the model's mode is restored)."""
    was_training = model.training
    model.eval()
    try:
        return float(F.cross_entropy(model(x), y))
    finally:
        model.train(was_training)


def finish(
    model: nn.Module,
    names: Sequence[str],
    data: DataSplit,
    s: Settings,
    seed: int,
    opt: torch.optim.Optimizer | None = None,
    **metrics: Any,
) -> dict[str, Any]:
    """Measure a pruned model right after surgery, after recalibrating its BatchNorm running
    statistics on the training split (models with norms only: ``acc_bn``), then after the
    common fine-tune (fresh Adam unless ``opt``). The fine-tune runs the norms in train mode,
    so the recalibration does not change it (only the eval-mode reading right after)."""
    after = pct(model, data.x_test, data.y_test)
    after_bn = None
    if has_batchnorm(model):
        recalibrate_batchnorm(model, [data.x_train])
        after_bn = pct(model, data.x_test, data.y_test)
    final, ft_s = fine_tune(model, data, s, seed, opt=opt)
    total = metrics["train_s"] + (metrics.get("surgery_s") or 0.0) + ft_s
    return row_metrics(
        model, names, acc_surgery=after, acc_bn=after_bn, acc_final=final,
        loss_final=test_loss(model, data.x_test, data.y_test), finetune_s=ft_s, total_s=total,
        **metrics,
    )  # fmt: skip


def run_compression(seed: int, s: Settings, *, cnn: bool) -> dict[str, dict[str, Any]]:
    """Baseline, engine compensated surgery (one plan; layer by layer) and Torch-Pruning
    magnitude pruning, each fine-tuned the same way; the one-plan engine model also with the
    optimizer its surgery remapped."""
    data = demo_utils.load_digits_split(seed, subset=s.subset, images=cnn)
    torch.manual_seed(seed)
    if cnn:
        base = demo_utils.small_cnn(CNN_CHANNELS, CNN_HIDDEN)
        names, widths, keeps = CNN_LAYERS, (*CNN_CHANNELS, CNN_HIDDEN), (s.cnn_keep,)
        epochs = s.cnn_epochs
    else:
        base = demo_utils.mlp(WIDE)
        names, widths, keeps, epochs = MLP_LAYERS, WIDE, s.keep, s.epochs
    prefix = "cnn_" if cnn else "mlp_"
    opt = torch.optim.Adam(base.parameters(), lr=s.lr)
    train_s = train(base, opt, data, epochs, s, seeded(seed))
    acc = pct(base, data.x_test, data.y_test)
    rows: dict[str, dict[str, Any]] = {}
    if not cnn:  # the wide MLP as trained: the reference of the growth rows
        rows["mlp_wide"] = row_metrics(
            base, names, acc_before=acc, acc_surgery=None, acc_final=acc, train_s=train_s,
            total_s=train_s, epochs=epochs, surgeries=0,
        )  # fmt: skip

    for keep in keeps:
        targets = dict(zip(names, kept_widths(widths, keep)))
        tag = f"{prefix}{{}}_{round(keep * 100)}"
        # Engine, one plan: real surgery on a copy that carries a copy of the training optimizer.
        model, model_opt = clone_with_optimizer(base, opt, s.lr)
        surgery_s = engine_prune(model, data.x_train, targets, model_opt)
        kept, kept_opt = clone_with_optimizer(model, model_opt, s.lr)
        timing = {"acc_before": acc, "train_s": train_s, "surgery_s": surgery_s}
        rows[tag.format("engine") + "_kept_opt"] = finish(
            kept, names, data, s, seed, opt=kept_opt, **timing
        )
        rows[tag.format("engine")] = finish(model, names, data, s, seed, **timing)
        # Engine, layer by layer: each layer's plan made on statistics measured after the
        # earlier layers' surgery.
        model, model_opt = clone_with_optimizer(base, opt, s.lr)
        surgery_s = engine_prune_layerwise(model, data.x_train, targets, model_opt)
        timing["surgery_s"] = surgery_s
        rows[tag.format("engine_layerwise")] = finish(model, names, data, s, seed, **timing)
        # Torch-Pruning magnitude pruning to the same widths, fresh Adam for the fine-tune.
        model = copy.deepcopy(base)
        timing["surgery_s"] = tp_prune(model, data.x_train[:2], targets)
        rows[tag.format("tp")] = finish(model, names, data, s, seed, **timing)

    # Baseline: no surgery; "after fine-tune" is the same fresh-Adam fine-tune on it.
    model = copy.deepcopy(base)
    final, ft_s = fine_tune(model, data, s, seed)
    rows[f"{prefix}baseline"] = row_metrics(
        model, names, acc_before=acc, acc_surgery=acc, acc_final=final,
        loss_final=test_loss(model, data.x_test, data.y_test), train_s=train_s, surgery_s=None,
        finetune_s=ft_s, total_s=train_s + ft_s,
    )  # fmt: skip
    if not cnn:  # the wide MLP trained on with its own optimizer: the 40-epoch reference
        more_s = train(base, opt, data, s.finetune_epochs, s, seeded(seed + 1))
        rows["mlp_wide_long"] = row_metrics(
            base, names, acc_before=acc, acc_surgery=None,
            acc_final=pct(base, data.x_test, data.y_test),
            train_s=train_s + more_s, total_s=train_s + more_s,
            epochs=epochs + s.finetune_epochs, surgeries=0,
        )  # fmt: skip
    return rows


def warm_up() -> None:
    """One throwaway surgery of each kind, so lazy imports and first-call costs (fx tracing,
    Torch-Pruning's graph code) are not charged to the first timed row."""
    gen = seeded(0)
    for model, x, names in (
        (demo_utils.mlp(WIDE), torch.rand(128, 64, generator=gen), MLP_LAYERS),
        (demo_utils.small_cnn(CNN_CHANNELS, CNN_HIDDEN), torch.rand(128, 1, 8, 8, generator=gen),
         CNN_LAYERS),
    ):  # fmt: skip
        targets = {n: w // 2 for n, w in zip(names, widths_of(model, names))}
        engine_prune(copy.deepcopy(model), x, targets)
        engine_prune_layerwise(copy.deepcopy(model), x, targets)
        tp_prune(copy.deepcopy(model), x[:2], targets)
