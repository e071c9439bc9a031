"""A tiny LightningModule and data for the Lightning integration tests."""

from __future__ import annotations

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

DEAD = 8  # hidden units planted dead (bias -100 behind a ReLU): the "dead" policy cuts them


class TinyLit(pl.LightningModule):
    def __init__(self, hidden: int = 32, lr: float = 0.02, plant_dead: bool = True) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(nn.Linear(8, hidden), nn.ReLU(), nn.Linear(hidden, 3))
        if plant_dead:
            with torch.no_grad():
                self.net[0].bias[:DEAD] = -100.0
        self.epoch_losses: list[float] = []
        self._batch_losses: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self._batch_losses.append(loss.detach())
        return loss

    def on_train_epoch_end(self) -> None:
        self.epoch_losses.append(float(torch.stack(self._batch_losses).mean()))
        self._batch_losses.clear()

    def configure_optimizers(self):
        opt = torch.optim.Adam(self.parameters(), lr=self.hparams.lr)
        return [opt], [torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.9)]


def data(seed: int = 0, n: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 8, generator=g)
    teacher = torch.randn(8, 3, generator=g)
    return x, (x @ teacher).argmax(1)


def loader(seed: int = 0) -> DataLoader:
    x, y = data(seed)
    return DataLoader(TensorDataset(x, y), batch_size=32, shuffle=False)


def trainer(tmp_path, max_epochs: int, callbacks, **kwargs) -> pl.Trainer:
    kwargs.setdefault("logger", False)
    kwargs.setdefault("enable_checkpointing", False)
    return pl.Trainer(
        max_epochs=max_epochs, accelerator="cpu", devices=1, callbacks=callbacks,
        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
        log_every_n_steps=1,
        **kwargs,
    )  # fmt: skip
