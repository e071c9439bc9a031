"""Overhead of each training-loop integration against the same loop without it.

    .venv/bin/python benchmarks/integration_overhead.py                # all three, ~1-2 min
    .venv/bin/python benchmarks/integration_overhead.py --quick        # smoke run
    .venv/bin/python benchmarks/integration_overhead.py --cases tensorboard --json out.json

Cases (each repeat times ``off``, ``track`` and ``on`` back to back, in a rotating order;
the ratio ``variant / off`` per repeat; the median and IQR over repeats are printed, with
absolute times as context only). ``track`` is the callback that never reaches a surgery
(tracking, logging), ``on`` the one below (tracking plus its proposals):

- ``lightning``: ``Trainer.fit`` of an MLP 64-256-128-10 (Adam, StepLR; 2048 synthetic
  samples, batch 64, 4 epochs) with and without ``SelfModifyingCallback`` (the ``dead``
  policy every 2 epochs: tracking, two proposals that find nothing to cut, logging to a
  ``CSVLogger``; both runs log their loss there);
- ``transformers``: ``Trainer.train`` of a tiny random-init BERT (hidden 32, 2 layers,
  intermediate 64; 24 steps of batch 16) with and without ``SelfModifyingTrainerCallback``
  (tracking of the feed-forward layers, the ``dead`` policy every 8 steps);
- ``tensorboard``: a plain loop over the same MLP with ``NeuronEngine`` tracking, with and
  without ``TensorBoardSummary.log`` (scalars and per-neuron histograms) at every epoch end.

The models and Trainers are built outside the timed region; a fit is timed whole (its
Lightning / Hugging Face set-up included, for both variants).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.timing import interleave, ratios, summarize

DEAD = {"policies": [{"name": "dead"}]}


def mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(),
                         nn.Linear(128, 10))  # fmt: skip


def data(n: int = 2048) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 64, generator=g)
    return x, (x @ torch.randn(64, 10, generator=g)).argmax(1)


# --- Lightning ------------------------------------------------------------------------------
def lightning_blocks(epochs: int) -> dict:
    import lightning.pytorch as pl
    from torch.utils.data import DataLoader, TensorDataset

    from engine.integrations.lightning import SelfModifyingCallback

    class Lit(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = mlp()

        def training_step(self, batch, batch_idx):
            x, y = batch
            loss = F.cross_entropy(self.net(x), y)
            self.log("loss", loss, on_step=False, on_epoch=True)
            return loss

        def configure_optimizers(self):
            opt = torch.optim.Adam(self.parameters(), lr=1e-3)
            return [opt], [torch.optim.lr_scheduler.StepLR(opt, 1, 0.9)]

    loader = DataLoader(TensorDataset(*data()), batch_size=64)

    def block(every: int | None):
        def run() -> float:
            torch.manual_seed(0)
            root = tempfile.mkdtemp()
            callbacks = []
            if every is not None:
                callbacks = [SelfModifyingCallback(DEAD, every=every, module="net")]
            trainer = pl.Trainer(
                max_epochs=epochs, accelerator="cpu", devices=1, callbacks=callbacks,
                logger=pl.loggers.CSVLogger(root), enable_checkpointing=False,
                enable_progress_bar=False, enable_model_summary=False, default_root_dir=root,
                log_every_n_steps=1000,
            )  # fmt: skip
            model = Lit()
            t0 = time.perf_counter()
            trainer.fit(model, loader)
            return time.perf_counter() - t0

        return run

    return {"off": block(None), "track": block(10**6), "on": block(2)}


# --- Hugging Face ---------------------------------------------------------------------------
def transformers_blocks(steps: int) -> dict:
    from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainingArguments
    from transformers.trainer_callback import PrinterCallback
    from transformers.utils import logging as hf_logging

    from engine.integrations.transformers import SelfModifyingTrainerCallback

    hf_logging.set_verbosity_error()
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1, 100, (256, 12), generator=g)
    rows = [{"input_ids": ids[i], "labels": int(ids[i, 0] >= 50)} for i in range(256)]
    config = BertConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        vocab_size=100, max_position_embeddings=16,
    )  # fmt: skip

    def block(every: int | None):
        def run() -> float:
            torch.manual_seed(0)
            model = BertForSequenceClassification(config)
            args = TrainingArguments(
                output_dir=tempfile.mkdtemp(), max_steps=steps, per_device_train_batch_size=16,
                report_to=[], use_cpu=True, disable_tqdm=True, save_strategy="no",
                logging_steps=8, seed=0,
            )  # fmt: skip
            callbacks = []
            if every is not None:
                only_ffn = ["*.intermediate.dense"]
                callbacks = [SelfModifyingTrainerCallback(DEAD, every=every, include=only_ffn)]
            trainer = Trainer(model=model, args=args, train_dataset=rows, callbacks=callbacks)
            trainer.remove_callback(PrinterCallback)  # no log lines on stdout
            t0 = time.perf_counter()
            trainer.train()
            return time.perf_counter() - t0

        return run

    return {"off": block(None), "track": block(10**6), "on": block(8)}


# --- TensorBoard ----------------------------------------------------------------------------
def tensorboard_blocks(epochs: int) -> dict:
    from engine import NeuronEngine
    from engine.integrations.tensorboard import TensorBoardSummary

    x, y = data()
    batches = [(x[i : i + 64], y[i : i + 64]) for i in range(0, len(x), 64)]

    def block(with_summary: bool):
        def run() -> float:
            torch.manual_seed(0)
            model = mlp()
            opt = torch.optim.Adam(model.parameters(), lr=1e-3)
            engine = NeuronEngine(model)
            summary = TensorBoardSummary(log_dir=tempfile.mkdtemp()) if with_summary else None
            t0 = time.perf_counter()
            for epoch in range(epochs):
                with engine.tracking():
                    for xb, yb in batches:
                        opt.zero_grad()
                        F.cross_entropy(model(xb), yb).backward()
                        opt.step()
                if summary is not None:
                    summary.log(engine, step=epoch)
            if summary is not None:
                summary.close()
            return time.perf_counter() - t0

        return run

    return {"off": block(False), "on": block(True)}


CASES = {
    "lightning": (lightning_blocks, 4),
    "transformers": (transformers_blocks, 24),
    "tensorboard": (tensorboard_blocks, 4),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", choices=sorted(CASES), default=list(CASES))
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="3 repeats, shorter runs")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")  # Lightning's small-data hints: not what is measured
    for name in ("lightning", "lightning.pytorch", "lightning.pytorch.utilities.rank_zero"):
        logging.getLogger(name).setLevel(logging.ERROR)
    repeats = 3 if args.quick else args.repeats
    rows = {}
    print(f"{'case':<13} {'variant':<7} {'median':>8} {'IQR (q1-q3)':>15} {'s off':>8} "
          f"{'s var':>8} {'R':>3}")  # fmt: skip
    for name in args.cases:
        make, size = CASES[name]
        blocks = make(max(1, size // 2) if args.quick else size)
        for run in blocks.values():  # warm-up: imports, first-call compilation
            run()
        times = interleave(blocks, repeats)
        median = {v: sorted(t)[len(t) // 2] for v, t in times.items()}
        for variant in [v for v in blocks if v != "off"]:
            s = summarize(ratios(times, variant))
            rows[f"{name}/{variant}"] = {
                **s, "seconds_off": median["off"], "seconds": median[variant], "repeats": repeats,
            }  # fmt: skip
            print(f"{name:<13} {variant:<7} {s['median']:>7.3f}x {s['q1']:>7.3f}-{s['q3']:.3f} "
                  f"{median['off']:>8.3f} {median[variant]:>8.3f} {repeats:>3}")  # fmt: skip
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
