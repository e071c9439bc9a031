"""Time of a 30 % parameter-budget plan for ResNet-18, against Torch-Pruning's MagnitudePruner.

A torchvision-free ResNet-18 (BasicBlocks [2, 2, 2, 2], 64→512 channels, 7×7 stem and max
pool, 10 classes) is tracked with ``NeuronEngine(model, correlation=True)`` on a few batches of
random 3×32×32 inputs. Then, on one thread (``torch.set_num_threads``):

* ``budget``: ``BudgetPolicy(target_params=0.7·total).propose(snapshot, layout)`` with the
  default cost allocation (residual groups included) — the policy alone, the layout built
  once beforehand, as a planner gets it;
* ``budget_uniform``: the same with ``allocation="uniform"`` (one common fraction);
* ``tp``: Torch-Pruning's ``MagnitudePruner`` (``MagnitudeImportance(p=2)``, ``fc`` ignored)
  at the uniform pruning ratio that removes the same share of parameters (found by bisection
  first), timed as its decision only: ``step(interactive=True)`` iterated without pruning, on
  a pruner built beforehand (its dependency graph is its layout);
* ``tp_full``: building that pruner (tracing) and ``step()`` (pruning) on a fresh copy, for
  context, with ``engine_full``: ``engine.model_layout()`` plus the budget plan.

Every repeat runs each variant once in a rotating order; the table gives the median time and the
IQR, the ratio ``variant / tp`` per repeat (median), the parameters after and the number of
convolutions whose width changes (a residual group counts each of its convolutions).

    python benchmarks/resnet_propose.py [--repeats 7] [--batches 16] [--threads 1] [--json F]
    python benchmarks/resnet_propose.py --fast       # width 8: a smoke run of a few seconds
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

import torch
import torch_pruning as tp
from timing import interleave, summarize, timed
from torch import nn
from tracking_overhead import BasicBlock  # torchvision-style, shared with that benchmark
from versions import versions, versions_line

from engine import NeuronEngine
from policies import BudgetPolicy

BUDGET = 0.3  # share of the parameters removed


class ResNet18(nn.Module):
    """torchvision's ResNet-18 layout (``width`` channels in the first stage)."""

    def __init__(self, width: int = 64, num_classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        cin = width
        for i, (mult, stride) in enumerate([(1, 1), (2, 2), (4, 2), (8, 2)], 1):
            c = width * mult
            setattr(self, f"layer{i}", nn.Sequential(BasicBlock(cin, c, stride), BasicBlock(c, c)))
            cin = c
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def conv_widths(model: nn.Module) -> dict[str, int]:
    return {n: m.out_channels for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}


def changed_by_plan(actions, layout, convs) -> list[str]:
    """Convolutions whose width a plan changes (every member of a pruned residual group)."""
    changed = set()
    for a in actions:
        changed.update([a.layer, *layout.layers[a.layer].coupled])
    return sorted(n for n in changed if n in convs)


def tp_pruner(model: nn.Module, example: torch.Tensor, ratio: float):
    return tp.pruner.MagnitudePruner(
        model, example, importance=tp.importance.MagnitudeImportance(p=2),
        pruning_ratio=ratio, ignored_layers=[model.fc],
    )  # fmt: skip


def tp_pruned(model: nn.Module, example: torch.Tensor, ratio: float) -> nn.Module:
    clone = copy.deepcopy(model)
    tp_pruner(clone, example, ratio).step()
    return clone


def params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def tp_ratio_for(model: nn.Module, example: torch.Tensor, target: int, steps: int = 14) -> float:
    """The smallest uniform ratio whose pruned model has at most ``target`` parameters."""
    lo, hi = 0.0, 0.9
    for _ in range(steps):
        mid = (lo + hi) / 2
        if params(tp_pruned(model, example, mid)) <= target:
            hi = mid
        else:
            lo = mid
    return hi


def run(args: argparse.Namespace) -> dict:
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    model = ResNet18(width=args.width)
    engine = NeuronEngine(model, correlation=True)
    gen = torch.Generator().manual_seed(args.seed)
    with engine.tracking(), torch.no_grad():
        for _ in range(args.batches):
            model(torch.randn(args.batch_size, 3, 32, 32, generator=gen))
    snapshot, layout = engine.snapshot(), engine.model_layout()
    model.eval()
    example = torch.randn(1, 3, 32, 32, generator=gen)
    total = params(model)
    target = round((1 - BUDGET) * total)
    convs = conv_widths(model)

    policies = {
        "budget": BudgetPolicy(target_params=target),
        "budget_uniform": BudgetPolicy(target_params=target, allocation="uniform"),
    }
    plans = {k: p.propose(snapshot, layout) for k, p in policies.items()}
    after = {k: next(iter(v)).evidence["params_after"] for k, v in plans.items()}
    ratio = tp_ratio_for(model, example, target, 8 if args.width < 32 else 14)
    tp_model = tp_pruned(model, example, ratio)
    after["tp"] = after["tp_full"] = params(tp_model)
    after["engine_full"] = after["budget"]
    tp_convs = conv_widths(tp_model)
    changed = {k: changed_by_plan(v, layout, convs) for k, v in plans.items()}
    changed["tp"] = changed["tp_full"] = sorted(n for n in convs if tp_convs[n] != convs[n])
    changed["engine_full"] = changed["budget"]

    decider = tp_pruner(copy.deepcopy(model), example, ratio)

    def tp_decide() -> None:
        decider.reset()
        for group in decider.step(interactive=True):
            del group  # decided, not pruned

    def tp_full() -> float:
        clone = copy.deepcopy(model)  # outside the timed region
        return timed(lambda: tp_pruner(clone, example, ratio).step(), torch.device("cpu"))

    def engine_full() -> None:
        BudgetPolicy(target_params=target).propose(engine.snapshot(), engine.model_layout())

    cpu = torch.device("cpu")
    blocks = {
        "tp": lambda: timed(tp_decide, cpu),
        "budget": lambda: timed(lambda: policies["budget"].propose(snapshot, layout), cpu),
        "budget_uniform": lambda: timed(
            lambda: policies["budget_uniform"].propose(snapshot, layout), cpu
        ),
        "tp_full": tp_full,
        "engine_full": lambda: timed(engine_full, cpu),
    }
    times = interleave(blocks, args.repeats)
    rows = {}
    for name, values in times.items():
        per_repeat = [v / b for v, b in zip(values, times["tp"])]
        rows[name] = {
            **{k: round(v, 6) for k, v in summarize(values).items()},
            "ratio_to_tp": round(summarize(per_repeat)["median"], 4),
            "params_after": after[name],
            "convs_changed": len(changed[name]),
        }
    return {
        "model": f"ResNet-18 (width {args.width})", "params": total, "target_params": target,
        "tp_pruning_ratio": round(ratio, 5), "threads": args.threads, "repeats": args.repeats,
        "samples_per_unit_layer4": snapshot.layers["layer4.1.conv2"].count, "convs": len(convs),
        "rows": rows, "changed": changed, "versions": versions(),
    }  # fmt: skip


def print_table(result: dict) -> None:
    print(f"{result['model']}: {result['params']:,} parameters, target {result['target_params']:,}"
          f" (-{BUDGET:.0%}); Torch-Pruning ratio {result['tp_pruning_ratio']}; "
          f"{result['threads']} thread(s), {result['repeats']} repeats")  # fmt: skip
    print(versions_line(result["versions"]))
    print(f"{'variant':<16}{'median s':>10}{'IQR s':>10}{'/ tp':>8}{'params after':>14}"
          f"{'convs changed':>15}")  # fmt: skip
    for name, row in result["rows"].items():
        convs = f"{row['convs_changed']} / {result['convs']}"
        print(f"{name:<16}{row['median']:>10.4f}{row['iqr']:>10.4f}{row['ratio_to_tp']:>8.2f}"
              f"{row['params_after']:>14,}{convs:>15}")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, help="default 7 (3 with --fast)")
    parser.add_argument("--batches", type=int, default=16, help="tracked batches")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--width", type=int, default=64, help="channels of the first stage")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fast", action="store_true", help="width 8, 4 batches: a smoke run")
    parser.add_argument("--json", type=Path, help="write the numbers here")
    parser.add_argument("--strict", action="store_true", help="exit 1 when budget takes > 1 s")
    args = parser.parse_args(argv)
    if args.fast:
        args.width, args.batches, args.batch_size = 8, 4, 32
    if args.repeats is None:
        args.repeats = 3 if args.fast else 7
    result = run(args)
    print_table(result)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    if args.strict and result["rows"]["budget"]["median"] > 1.0:
        print("FAIL: the budget plan took more than 1 s", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
