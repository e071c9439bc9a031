"""Shared pieces of the demo scripts: arguments, models, one training epoch, accuracy.

The demos are scripts (``python demos/NAME.py``); this module sits beside them and is imported
as ``demo_utils`` (the script's folder is on ``sys.path``).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run from anywhere without installing the package
    sys.path.insert(0, str(REPO))

from engine.data import DataSplit, load_digits_split  # noqa: E402
from engine.errors import DatasetError  # noqa: E402


def positive(text: str) -> int:
    """argparse type: a positive integer."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def demo_arguments(name: str, description: str, fast_help: str) -> argparse.ArgumentParser:
    """Arguments every demo takes: ``--fast``, ``--out`` (default outputs/NAME), ``--seed``,
    ``--threads``; parse them with :func:`parse_demo_arguments`."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--fast", action="store_true", help=fast_help)
    parser.add_argument("--out", type=Path, default=REPO / "outputs" / name)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads", type=positive, default=1,
        help="torch threads (default 1: these small models train fastest on one thread, and "
        "more threads stall when another process keeps the cores busy)",
    )  # fmt: skip
    return parser


def parse_demo_arguments(
    parser: argparse.ArgumentParser, argv: Sequence[str] | None = None
) -> argparse.Namespace:
    """Parse the arguments and apply ``--threads``."""
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    return args


def digits(seed: int, *, fast: bool, images: bool = False) -> DataSplit:
    """Digits split for a demo; a clear exit message when scikit-learn is missing."""
    try:
        return load_digits_split(seed, subset=600 if fast else None, images=images)
    except DatasetError as exc:
        sys.exit(str(exc))


def held_out_part(split: DataSplit, fraction: float) -> tuple[DataSplit, tuple]:
    """The split without the last ``fraction`` of its (already shuffled) training part, and
    that part as an ``(x, y)`` batch: held-out data for trials, never trained on."""
    n = len(split.x_train)
    cut = n - max(1, round(fraction * n))
    rest = DataSplit(
        split.x_train[:cut], split.y_train[:cut], split.x_test, split.y_test, split.num_classes
    )
    return rest, (split.x_train[cut:], split.y_train[cut:])


def scaled(width: int, scale: float) -> int:
    """``width × scale``, rounded, at least 1."""
    return max(1, round(width * scale))


def mlp(widths: Sequence[int] = (128, 64), inputs: int = 64, classes: int = 10) -> nn.Sequential:
    """``Linear → ReLU`` blocks named fc1, relu1, … and an output layer ``fc_out``."""
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    previous = inputs
    for i, width in enumerate(widths, start=1):
        layers[f"fc{i}"] = nn.Linear(previous, width)
        layers[f"relu{i}"] = nn.ReLU()
        previous = width
    layers["fc_out"] = nn.Linear(previous, classes)
    return nn.Sequential(layers)


def small_cnn(channels: Sequence[int] = (16, 32), hidden: int = 64, classes: int = 10) -> nn.Module:
    """A small conv net for 1×8×8 digits: conv-BN-ReLU ×2 (second one strided), pooled head."""
    c1, c2 = channels
    return nn.Sequential(
        OrderedDict(
            conv1=nn.Conv2d(1, c1, 3, padding=1),
            bn1=nn.BatchNorm2d(c1),
            relu1=nn.ReLU(),
            conv2=nn.Conv2d(c1, c2, 3, padding=1, stride=2),
            bn2=nn.BatchNorm2d(c2),
            relu2=nn.ReLU(),
            pool=nn.AdaptiveAvgPool2d(2),
            flatten=nn.Flatten(),
            fc1=nn.Linear(c2 * 4, hidden),
            relu3=nn.ReLU(),
            fc_out=nn.Linear(hidden, classes),
        )
    )


def train_epoch(
    model: nn.Module,
    opt: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    batch: int = 64,
    generator: torch.Generator | None = None,
) -> tuple[float, float]:
    """One pass over ``(x, y)`` in shuffled mini-batches; returns (mean loss, accuracy)."""
    model.train()
    order = torch.randperm(len(x), generator=generator)
    loss_sum = torch.zeros(())
    correct = torch.zeros((), dtype=torch.long)
    for idx in order.split(batch):
        logits = model(x[idx])
        loss = F.cross_entropy(logits, y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        loss_sum += loss.detach() * len(idx)
        correct += (logits.argmax(1) == y[idx]).sum()
    return float(loss_sum) / len(x), int(correct) / len(x)


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Top-1 accuracy in eval mode (the model's mode is restored)."""
    was_training = model.training
    model.eval()
    try:
        return float((model(x).argmax(1) == y).float().mean())
    finally:
        model.train(was_training)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def fresh_run_dir(path: Path) -> Path:
    """A weight-tracking run folder without an earlier run's snapshots (a tracker appends to
    an existing run); refuses to delete a folder that is not a run folder."""
    if path.exists():
        if not (path / "index.json").is_file() and any(path.iterdir()):
            sys.exit(f"{path} exists and is not a weight-tracking run folder: choose another --out")
        shutil.rmtree(path)
    return path


def probe_dynamics(
    engine, x: torch.Tensor, y: torch.Tensor, out: Path, samples: int = 64, side: int = 8
):
    """Representation dynamics of a fixed probe set (the first ``samples`` of ``x``) under
    ``out`` (the tracked layers' outputs per epoch; ``probe.safetensors`` with the inputs as
    ``side``×``side`` images and the labels, for the dashboard). An earlier run's store there
    is removed."""
    from engine.dashboard import save_probe
    from engine.dynamics import RepresentationDynamics

    if (out / "representations" / "representations.json").is_file():
        shutil.rmtree(out / "representations")
    x, y = x[:samples], y[:samples]
    save_probe(out, x.reshape(len(x), 1, side, side), y)
    return RepresentationDynamics(engine, x, directory=out)


def write_dashboard(run_dir: Path) -> Path | None:
    """``run_dir/report.html``, the run's dashboard (``python -m engine dashboard``); without
    the dashboard extra (plotly) a note says how to get it."""
    from engine.dashboard import DashboardError
    from engine.dashboard import write_dashboard as write

    try:
        page = write(run_dir, run_dir / "report.html")
    except DashboardError as exc:
        print(f"dashboard not written: {exc}")
        return None
    print(f"dashboard: {page}")
    return page
