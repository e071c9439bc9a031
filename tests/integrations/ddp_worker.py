"""One rank of the Lightning DDP test: run as ``python ddp_worker.py OUT_DIR`` with the
torchrun variables (``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``,
``MASTER_PORT``) set, so Lightning joins the group instead of launching processes."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import lightning.pytorch as pl
import torch

from engine.integrations.lightning import SelfModifyingCallback
from tests.integrations.lit_models import TinyLit, loader


class Report(pl.Callback):
    def __init__(self, out: Path) -> None:
        self.out = out

    def on_train_end(self, trainer: pl.Trainer, pl_module: TinyLit) -> None:
        opt = trainer.optimizers[0]
        in_opt = sorted(id(p) for g in opt.param_groups for p in g["params"])
        report = {
            "width": pl_module.net[0].out_features,
            "params": [p.detach().double().sum().item() for p in pl_module.parameters()],
            "in_optimizer": in_opt == sorted(id(p) for p in pl_module.parameters()),
            "wrapper_module_is_ours": trainer.strategy.model.module is pl_module,
            "losses": pl_module.epoch_losses,
        }
        (self.out / f"rank{trainer.global_rank}.json").write_text(json.dumps(report))


def main(out: Path) -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    callback = SelfModifyingCallback({"policies": [{"name": "dead"}]}, every=2, module="net")
    trainer = pl.Trainer(
        max_epochs=3, accelerator="cpu", devices=2, strategy="ddp", logger=False,
        callbacks=[callback, Report(out)], enable_progress_bar=False,
        enable_model_summary=False, enable_checkpointing=False, default_root_dir=out,
    )  # fmt: skip
    trainer.fit(TinyLit(), loader())


if __name__ == "__main__":
    main(Path(sys.argv[1]))
