"""The Hugging Face Trainer callback changes a tiny BERT's and GPT-2's widths mid-training,
with the Trainer's optimizer and LR scheduler updated in place."""

from __future__ import annotations

import pytest

pytest.importorskip("transformers")
pytest.importorskip("accelerate")

import torch
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    GPT2Config,
    GPT2LMHeadModel,
    Trainer,
    TrainingArguments,
)
from transformers.utils import logging as hf_logging

from engine.integrations.transformers import SelfModifyingTrainerCallback

hf_logging.set_verbosity_error()
BUDGET = {"policies": [{"name": "budget", "settings": {"remove_fraction": 0.25, "min_samples": 8}}]}


class Tokens(torch.utils.data.Dataset):
    def __init__(self, rows: list[dict[str, torch.Tensor]]) -> None:
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return self.rows[i]


def classification_rows(n: int = 64, length: int = 8) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1, 100, (n, length), generator=g)
    labels = (ids[:, 0] >= 50).long()  # learnable from the first token
    return [{"input_ids": ids[i], "attention_mask": torch.ones(length, dtype=torch.long),
             "labels": labels[i]} for i in range(n)]  # fmt: skip


def lm_rows(n: int = 64, length: int = 12) -> list[dict[str, torch.Tensor]]:
    base = torch.arange(length) % 7 + 3  # a repeating pattern a tiny LM learns quickly
    return [{"input_ids": (base + i % 3) % 100, "labels": (base + i % 3) % 100} for i in range(n)]


def args(tmp_path, steps: int) -> TrainingArguments:
    return TrainingArguments(
        output_dir=str(tmp_path), max_steps=steps, per_device_train_batch_size=16,
        learning_rate=3e-3, lr_scheduler_type="linear", logging_steps=1, save_strategy="no",
        report_to=[], use_cpu=True, disable_tqdm=True, seed=0, dataloader_num_workers=0,
    )  # fmt: skip


def check_optimizer(trainer: Trainer, model: torch.nn.Module) -> None:
    ids = [id(p) for g in trainer.optimizer.param_groups for p in g["params"]]
    assert sorted(ids) == sorted(id(p) for p in model.parameters()) and len(ids) == len(set(ids))
    for p in model.parameters():
        state = trainer.optimizer.state[p]
        assert state["exp_avg"].shape == p.shape and state["exp_avg_sq"].shape == p.shape


def run(tmp_path, model, rows, include, steps: int = 12):
    callback = SelfModifyingTrainerCallback(
        BUDGET, every=4, start=0, stop=5, include=include, correlation=True
    )
    trainer = Trainer(model=model, args=args(tmp_path, steps), train_dataset=Tokens(rows),
                      callbacks=[callback])  # fmt: skip
    trainer.train()
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    return trainer, callback, losses


def test_trainer_callback_shrinks_bert_feed_forward(tmp_path):
    torch.manual_seed(0)
    config = BertConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37,
        vocab_size=100, max_position_embeddings=16,
    )  # fmt: skip
    model = BertForSequenceClassification(config)
    trainer, callback, losses = run(tmp_path, model, classification_rows(),
                                    ["*.intermediate.dense"])  # fmt: skip
    widths = [layer.intermediate.dense.out_features for layer in model.bert.encoder.layer]
    assert [e["step"] for e in callback.events] == [4] and all(w < 37 for w in widths)
    assert [layer.output.dense.in_features for layer in model.bert.encoder.layer] == widths
    check_optimizer(trainer, model)
    assert len(losses) == 12 and all(torch.isfinite(torch.tensor(losses)))
    assert sum(losses[-3:]) < sum(losses[4:7])  # training goes on after the surgery at step 4
    assert trainer.lr_scheduler.get_last_lr()[0] == pytest.approx(0.0, abs=1e-12)  # linear to 0


def test_trainer_callback_shrinks_gpt2_mlp_through_conv1d(tmp_path):
    torch.manual_seed(0)
    config = GPT2Config(n_embd=32, n_layer=2, n_head=2, vocab_size=100, n_positions=16)
    model = GPT2LMHeadModel(config)
    trainer, callback, losses = run(tmp_path, model, lm_rows(), ["*.mlp.c_fc"])
    widths = [block.mlp.c_fc.nf for block in model.transformer.h]
    assert [e["step"] for e in callback.events] == [4] and all(w < 128 for w in widths)
    shapes = [tuple(b.mlp.c_proj.weight.shape) for b in model.transformer.h]
    assert shapes == [(w, 32) for w in widths]  # Conv1D weights are (in, out)
    check_optimizer(trainer, model)
    assert losses[-1] < losses[4] < losses[0]
