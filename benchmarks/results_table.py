"""Results table (issue #7): compression and self-modification on scikit-learn's digits.

    python benchmarks/results_table.py            # 3 seeds, full budgets (about 1.5 minutes)
    python benchmarks/results_table.py --fast     # 1 seed, few epochs, 600 samples (smoke test)
    python benchmarks/results_table.py --out DIR  # default: outputs/results_table

Rows (each seed trains its own models; accuracy is on the held-out 20 %):

* **baseline**: MLP 64-128-64-10 trained 30 epochs (Adam, lr 1e-3, batch 64), no surgery;
* **engine, one plan, K % kept**: the trained baseline, one calibration pass (eval mode,
  correlation), one ``budget`` plan with per-layer fractions (units removed by the consumer's
  reconstruction loss and folded onto the kept ones), applied with ``engine.apply``: the model
  really shrinks;
* **engine, layer by layer**: the same budget one layer at a time, in order, each plan made on
  statistics re-measured after the earlier layers' surgery (``engine.reset()`` + a calibration
  pass; for the CNN the BatchNorm running statistics are recalibrated before each pass);
* **Torch-Pruning, K % kept**: ``tp.pruner.MagnitudePruner`` with
  ``MagnitudeImportance(p=2)`` to exactly the same widths (checked), output layer ignored;
* the same fine-tune for every model (baseline included): fresh Adam, 10 epochs, same batch
  order; the ``remapped Adam`` rows fine-tune the engine's one-plan models with the optimizer
  that the surgery carried over instead;
* **CNN**: ``demo_utils.small_cnn`` (conv 16, conv 32, fc 64) on 1×8×8 images, 50 % of every
  hidden layer kept (8/16/32), the same treatments; the accuracy right after surgery is also
  given after recalibrating the BatchNorm running statistics
  (``engine.surgery.batchnorm.recalibrate_batchnorm``);
* **growth**: MLP 64-16-8-10 grown by the ``saturation`` policy through ``SurgerySchedule``
  (every 3 epochs up to epoch 9; growth_fraction 1.0, max_width 128) within the wide
  baseline's 30 epochs, with init net2net (noise 0.1), zero_outgoing or random, against the
  small network trained alone;
* **self-modifying loop**: MLP 64-128-64-10 from scratch for 40 epochs (training + fine-tune
  budget) with the policies of ``demos/self_modifying.yaml`` applied every 3 epochs up to
  epoch 30, against the wide MLP trained 40 epochs.

Writes ``results.md`` (the tables and the target checks) and ``results.json`` (settings,
versions, every per-seed number, the summaries and the targets) under the output folder.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch
import torch_pruning as tp

sys.path.insert(0, str(Path(__file__).resolve().parent))

import results_rows as rr
import results_training as rt
from results_report import Row, check_targets, markdown, summarise, targets_markdown
from versions import versions

REPO = rr.REPO
FAST = rr.Settings(
    seeds=(0,), epochs=3, finetune_epochs=1, cnn_epochs=2, subset=600,
    grow_every=1, grow_stop=3, selfmod_every=1,
)  # fmt: skip


def catalogue(s: rr.Settings) -> list[Row]:
    """The rows in table order."""
    rows = [Row("mlp_baseline", "MLP 64-128-64-10 baseline (no modification)", "compression")]
    for k in s.keep:
        tag = round(k * 100)
        rows += [
            Row(f"mlp_engine_{tag}", f"engine compensated, one plan, {tag} % kept", "compression"),
            Row(f"mlp_engine_layerwise_{tag}",
                f"engine compensated, layer by layer, {tag} % kept", "compression"),
            Row(f"mlp_tp_{tag}", f"Torch-Pruning magnitude (L2), {tag} % kept", "compression"),
        ]  # fmt: skip
    rows += [
        Row(f"mlp_engine_{round(k * 100)}_kept_opt",
            f"engine, one plan, {round(k * 100)} % kept, fine-tuned with its remapped Adam",
            "compression")
        for k in s.keep
    ]  # fmt: skip
    tag = round(s.cnn_keep * 100)
    long = s.epochs + s.finetune_epochs
    growth = {
        "net2net": f"net2net (noise {rt.growth_settings('net2net')['noise']:g})",
        "zero_outgoing": "zero_outgoing init",
        "random": "random init",
    }
    rows += [
        Row("cnn_baseline", "CNN conv16-conv32-fc64 baseline", "compression"),
        Row(f"cnn_engine_{tag}", f"CNN, engine compensated, one plan, {tag} % kept", "compression"),
        Row(f"cnn_engine_layerwise_{tag}",
            f"CNN, engine compensated, layer by layer, {tag} % kept", "compression"),
        Row(f"cnn_engine_{tag}_kept_opt",
            f"CNN, engine, one plan, {tag} % kept, fine-tuned with its remapped Adam",
            "compression"),
        Row(f"cnn_tp_{tag}", f"CNN, Torch-Pruning magnitude (L2), {tag} % kept", "compression"),
        Row("mlp_wide", f"wide MLP 64-128-64-10 trained alone, {s.epochs} epochs", "training"),
        Row("mlp_small", f"small MLP 64-16-8-10 trained alone, {s.epochs} epochs", "training"),
    ]  # fmt: skip
    rows += [
        Row(f"mlp_grow_{init}", f"growth from 16/8: saturation, {growth[init]}", "training")
        for init in rt.GROWTH_INITS
    ]
    rows += [
        Row("mlp_wide_long", f"wide MLP 64-128-64-10 trained alone, {long} epochs", "training"),
        Row(
            "mlp_self_modifying",
            f"self-modifying loop from 64-128-64-10, {long} epochs",
            "training",
        ),
    ]
    return rows


def _epochs(n: int) -> str:
    return f"{n} epoch{'' if n == 1 else 's'}"


def notes(s: rr.Settings, selfmod: Path) -> str:
    """How the rows were made, under the tables."""
    kept = "; ".join(
        f"{round(k * 100)} % kept = {'/'.join(map(str, rr.kept_widths(rr.WIDE, k)))}"
        for k in s.keep
    )
    grow = rt.growth_settings("net2net")
    return (
        f"How: Adam lr {s.lr:g}, batch {s.batch}; MLP and CNN baselines trained {s.epochs} and "
        f"{s.cnn_epochs} epochs. Hidden widths kept: {kept} (both hidden layers); CNN "
        f"{round(s.cnn_keep * 100)} % of conv1, conv2 and fc1. Engine, one plan: one calibration "
        "pass over the training split (eval mode, correlation on), one `budget` plan (per-layer "
        f"`fractions`, default ridge, guards {rr.GUARDS}), `engine.apply`. Engine, layer by "
        "layer: per layer in order, `engine.reset()`, a calibration pass over the model as the "
        "earlier surgery left it (CNN: BatchNorm running statistics recalibrated first), a "
        "`budget` plan for that layer only, `engine.apply`. BatchNorm recalibrated: "
        "`engine.surgery.batchnorm.recalibrate_batchnorm` over the training split (norms in "
        "train mode with momentum None, no gradient); the fine-tune runs the norms in train "
        "mode, so it is the same with or without it. Torch-Pruning: "
        "`MagnitudePruner` + `MagnitudeImportance(p=2)`, output layer ignored, same widths "
        f"(checked). Fine-tune: fresh Adam, {_epochs(s.finetune_epochs)}, the same batch order for "
        "every model (the `remapped Adam` rows keep the optimizer the surgery carried over). "
        f"Growth: `saturation` (unit_firing_rate {grow['unit_firing_rate']}, layer_fraction "
        f"{grow['layer_fraction']}, growth_fraction {grow['growth_fraction']}, max_width "
        f"{grow['max_width']}; init net2net with noise {grow['noise']}, zero_outgoing or random) "
        f"via `SurgerySchedule` every "
        f"{_epochs(s.grow_every)} before epoch {s.grow_stop}. Self-modifying loop: "
        f"`{selfmod.name}` every {_epochs(s.selfmod_every)} before epoch {s.epochs}, then "
        f"{_epochs(s.finetune_epochs)} without surgery. Surgery time: calibration + plan + apply "
        "(engine), graph + pruning (Torch-Pruning). Times are single runs per seed on a shared "
        "machine: read them as rough magnitudes.\n"
    )


def arguments() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fast", action="store_true", help="1 seed, few epochs, 600 samples")
    ap.add_argument("--out", type=Path, default=REPO / "outputs" / "results_table")
    ap.add_argument("--seeds", type=int, nargs="+", help="override the seeds (default 0 1 2)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    ap.add_argument(
        "--self-modifying-config",
        type=Path,
        default=REPO / "demos" / "self_modifying.yaml",
        help="policy YAML of the self-modifying row (default demos/self_modifying.yaml)",
    )
    return ap.parse_args()


def measure(s: rr.Settings, selfmod: Path) -> tuple[dict[int, dict[str, dict]], dict[str, str]]:
    """Every row for every seed; rows that cannot run are listed with the reason."""
    per_seed: dict[int, dict[str, dict]] = {}
    skipped: dict[str, str] = {}
    rr.warm_up()
    for seed in s.seeds:
        started = time.perf_counter()
        rows: dict[str, dict] = {}
        rows.update(rr.run_compression(seed, s, cnn=False))
        rows.update(rr.run_compression(seed, s, cnn=True))
        rows.update(rt.run_growth(seed, s))
        if selfmod.is_file():
            rows.update(rt.run_self_modifying(seed, s, selfmod))
        else:
            skipped["mlp_self_modifying"] = f"{selfmod} not found"
        per_seed[seed] = rows
        print(f"seed {seed}: {time.perf_counter() - started:.1f} s", flush=True)
    return per_seed, skipped


def main() -> None:
    args = arguments()
    torch.set_num_threads(args.threads)
    s = FAST if args.fast else rr.Settings()
    if args.seeds:
        s = replace(s, seeds=tuple(args.seeds))
    started = time.perf_counter()
    per_seed, skipped = measure(s, args.self_modifying_config)
    rows = catalogue(s)
    summary = summarise(per_seed, rows)
    targets = check_targets(summary, per_seed, s.keep, s.cnn_keep, growth_inits=rt.GROWTH_INITS)
    total = time.perf_counter() - started

    header = (
        f"Digits (scikit-learn, 1797 8×8 images, 80/20 split per seed), seeds {list(s.seeds)}"
        f"{', FAST MODE: numbers not meaningful' if args.fast else ''}; "
        f"torch {torch.__version__}, Torch-Pruning {tp.__version__}, {args.threads} thread(s); "
        f"whole run {total:.0f} s.\n\n"
    )
    text = header + markdown(summary, rows, s.finetune_epochs, skipped)
    text += "\n" + notes(s, args.self_modifying_config)
    text += "\nTargets (issue #7):\n\n" + targets_markdown(targets)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.md").write_text(text, encoding="utf-8")
    record: dict[str, Any] = {
        "settings": {**asdict(s), "fast": args.fast, "threads": args.threads,
                     "self_modifying_config": str(args.self_modifying_config),
                     "growth_settings": {i: rt.growth_settings(i) for i in rt.GROWTH_INITS},
                     "guards": rr.GUARDS},
        "versions": versions(),
        "rows": [asdict(r) for r in rows],
        "per_seed": {str(k): v for k, v in per_seed.items()},
        "summary": summary,
        "targets": targets,
        "skipped": skipped,
        "wall_time_s": total,
    }  # fmt: skip
    (args.out / "results.json").write_text(json.dumps(record, indent=1), encoding="utf-8")
    print(text)
    print(f"wrote {args.out / 'results.md'} and {args.out / 'results.json'}")


if __name__ == "__main__":
    main()
