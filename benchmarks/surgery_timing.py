"""Time to apply a 10-action plan, graph build included: a ResNet-50-sized CNN and an MLP.

    python benchmarks/surgery_timing.py [--repeats 3] [--threads 1]

ResNet-50 here is the torchvision architecture written out (bottleneck blocks 3-4-6-3,
25.6M parameters; torchvision is not a dependency). The plan prunes one unit from each of
10 bottleneck-internal convolutions (BatchNorm and the next conv follow). Reported: median
wall time of ``apply_plan`` (trace, validation, grouping, surgery, probe forwards, optimizer
remap) over the repeats, each on a fresh copy; the probe is a batch of 2 at 224×224
(ResNet) or 8 samples (MLP). Timings on a shared machine are noisy: read the ratio of the
parts (trace vs the rest) more than the absolute numbers.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
from torch import nn

from engine.plan import Plan, PruneAction
from engine.surgery import apply_plan


class Bottleneck(nn.Module):
    def __init__(self, c_in: int, width: int, stride: int):
        super().__init__()
        out = width * 4
        self.conv1, self.bn1 = nn.Conv2d(c_in, width, 1, bias=False), nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3, self.bn3 = nn.Conv2d(width, out, 1, bias=False), nn.BatchNorm2d(out)
        self.relu = nn.ReLU(inplace=True)
        self.down = None
        if stride != 1 or c_in != out:
            self.down = nn.Sequential(nn.Conv2d(c_in, out, 1, stride, bias=False),
                                      nn.BatchNorm2d(out))  # fmt: skip

    def forward(self, x):
        h = self.relu(self.bn1(self.conv1(x)))
        h = self.relu(self.bn2(self.conv2(h)))
        h = self.bn3(self.conv3(h))
        return self.relu(h + (x if self.down is None else self.down(x)))


def resnet50(classes: int = 1000) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64),
                               nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1)]  # fmt: skip
    c_in = 64
    for width, blocks, stride in [(64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)]:
        for i in range(blocks):
            layers.append(Bottleneck(c_in, width, stride if i == 0 else 1))
            c_in = width * 4
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c_in, classes)]
    return nn.Sequential(*layers)


def ten_action_plan(model: nn.Module, layers: list[str]) -> Plan:
    sizes = [(n, model.get_submodule(n).out_channels) for n in layers]
    actions = [PruneAction(layer=n, local_indices=[0], neuron_ids=[0], reason="bench")
               for n, _ in sizes[:10]]  # fmt: skip
    return Plan.create(actions, sizes)


def timed(model, plan, example, repeats, measure="action"):
    times, record = [], None
    for _ in range(repeats):
        m = copy.deepcopy(model)
        opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
        t0 = time.perf_counter()
        record = apply_plan(m, plan, opt, example_inputs=example, measure=measure)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), record


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    net = resnet50().eval()
    convs = [f"{i}.conv{k}" for i in range(4, 20) for k in (1, 2)][:10]
    plan = ten_action_plan(net, convs)
    params = sum(p.numel() for p in net.parameters())
    x = torch.randn(2, 3, 224, 224)
    for measure in ("action", "plan", "none"):
        seconds, _ = timed(net, plan, x, args.repeats, measure)
        print(f"ResNet-50 ({params / 1e6:.1f}M params), 10 prune actions, measure={measure!r}: "
              f"{seconds:.2f} s median of {args.repeats}; graph build + surgery + "
              f"{ {'action': 10, 'plan': 1, 'none': 0}[measure]} probe passes")  # fmt: skip
    mlp = nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(),
                        nn.Linear(128, 10))  # fmt: skip
    sizes = [("0", 256), ("2", 128), ("4", 10)]
    actions = [PruneAction(layer="0" if i < 6 else "2", local_indices=[i], neuron_ids=[
        i if i < 6 else 256 + i], reason="bench") for i in range(10)]  # fmt: skip
    seconds, _ = timed(mlp, Plan.create(actions, sizes), torch.randn(8, 784), args.repeats * 3)
    print(f"MLP 784-256-128-10, 10 prune actions: {seconds * 1000:.1f} ms median")


if __name__ == "__main__":
    main()
