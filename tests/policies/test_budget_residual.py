"""The budget policy on a small ResNet: residual-coupled groups are one unit space, pruned with
one action on their first member, counted once, and applied by surgery to every member."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from engine import NeuronEngine
from engine.plan import Plan, PruneAction, validation_problems
from policies import BudgetPolicy, DeadUnitPolicy, GuardSettings, PolicyConfig, propose_actions
from policies.budget_spaces import collapsed
from policies.guards import Guard


class Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                      nn.BatchNorm2d(cout))  # fmt: skip

    def forward(self, x):
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(out + (x if self.down is None else self.down(x)))


class SmallResNet(nn.Module):
    """A stem, an identity BasicBlock and a downsampling one (8 → 16 channels), a head."""

    def __init__(self):
        super().__init__()
        self.stem, self.bn = nn.Conv2d(3, 8, 3, 1, 1, bias=False), nn.BatchNorm2d(8)
        self.block1, self.block2 = Block(8, 8), Block(8, 16, 2)
        self.fc = nn.Linear(16, 5)

    def forward(self, x):
        x = self.block2(self.block1(F.relu(self.bn(self.stem(x)))))
        return self.fc(x.mean((2, 3)))


GROUP_A = ["stem", "block1.conv2"]  # the 8-channel stream
GROUP_B = ["block2.conv2", "block2.down.0"]  # the 16-channel stream
CONVS = ["stem", "block1.conv1", "block1.conv2", "block2.conv1", "block2.conv2", "block2.down.0"]


def _model(seed: int = 0) -> tuple[SmallResNet, torch.Tensor]:
    torch.manual_seed(seed)
    model = SmallResNet()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):  # trained-looking norms, running statistics set
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.normal_(m.bias, 0.0, 0.3)
    x = torch.randn(256, 3, 8, 8)
    with torch.no_grad():
        for batch in x.split(32):
            model(batch)
    return model.eval(), x


def _tracked(model: nn.Module, x: torch.Tensor) -> NeuronEngine:
    engine = NeuronEngine(model, correlation=True)
    with engine.tracking(), torch.no_grad():
        for batch in x.split(64):
            model(batch)
    return engine


def _widths(model: SmallResNet) -> dict[str, int]:
    return {n: model.get_submodule(n).out_channels for n in CONVS}


def test_layout_of_the_small_resnet_has_two_coupled_groups():
    model, x = _model()
    layout = _tracked(model, x).model_layout()
    assert layout.layers["stem"].coupled == ["block1.conv2"]
    assert layout.layers["block2.conv2"].coupled == ["block2.down.0"]
    assert Guard(layout).why_frozen("stem", "prune").startswith("coupled with")
    assert Guard(layout).why_frozen("stem", "prune", coupled_ok=True) is None
    assert Guard(layout).removable("stem", "prune", coupled_ok=True) == 4  # min_width 4 of 8


def test_surgery_removes_a_unit_of_a_coupled_layer_from_the_whole_group():
    model, x = _model()
    engine = _tracked(model, x)
    layout = engine.model_layout()
    ids = layout.layers["block1.conv2"].neuron_ids
    action = PruneAction(layer="block1.conv2", local_indices=[1, 6], neuron_ids=[ids[1], ids[6]],
                         reason="test")  # fmt: skip
    record = engine.apply(Plan.create([action], layout))
    widths = _widths(model)
    assert widths["stem"] == widths["block1.conv2"] == 6 and model.bn.num_features == 6
    assert model.block1.conv1.in_channels == 6 and model.block2.conv1.in_channels == 6
    assert model.block2.down[0].in_channels == 6
    assert record.widths_after["stem"] == record.widths_after["block1.conv2"] == 6
    assert model(x[:4]).shape == (4, 5)


@pytest.mark.parametrize("allocation", ["uniform", "cost"])
def test_budget_plan_changes_the_coupled_convs_and_applies_with_a_small_change(allocation):
    model, x = _model()
    engine = _tracked(model, x)
    layout = engine.model_layout()
    with torch.no_grad():
        before = model(x)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    settings = {"target_fraction": 0.85, "allocation": allocation, "min_samples": 10}
    plan = engine.propose({"policies": [{"name": "budget", "settings": settings}]})
    assert validation_problems(plan, layout) == []
    kinds = {a.layer: a.kind for a in plan.actions()}
    if allocation == "uniform":  # every conv changes: both streams by one prune each
        assert kinds == {"stem": "prune", "block1.conv1": "fold", "block2.conv1": "fold",
                         "block2.conv2": "prune"}  # fmt: skip
    prunes = [a for a in plan.actions() if a.kind == "prune"]
    assert prunes, "no coupled group was changed"
    for a in prunes:
        assert a.evidence["coupled"] in (GROUP_A, GROUP_B)
        assert a.layer == a.evidence["coupled"][0]  # the group's first member carries it
    after_params = next(iter(plan.actions())).evidence["params_after"]
    assert next(iter(plan.actions())).evidence["reached"]
    names = {n for n, _ in model.named_parameters()}
    record = engine.apply(plan, opt)
    # the group counted once (folds onto bias-less convs add biases, which layouts don't count)
    assert sum(p.numel() for n, p in model.named_parameters() if n in names) == after_params
    widths = _widths(model)
    assert widths["stem"] == widths["block1.conv2"] and widths["block2.conv2"] == widths[
        "block2.down.0"]  # fmt: skip
    changed = [n for n in CONVS if widths[n] < {"block2.conv1": 16, "block2.conv2": 16,
                                                 "block2.down.0": 16}.get(n, 8)]  # fmt: skip
    assert any(n in changed for n in GROUP_A + GROUP_B)
    with torch.no_grad():
        after = model(x)
    change = float((after - before).norm() / before.norm())
    assert change < 0.35, change
    assert record.max_output_change is not None
    opt.step()  # the optimizer was remapped: training goes on


def test_no_coupled_layer_is_silently_skipped():
    model, x = _model()
    engine = _tracked(model, x)
    layout = engine.model_layout()
    snap = engine.snapshot()
    guard = Guard(layout)
    actions = BudgetPolicy(target_fraction=0.85, coupled="skip", min_samples=10).propose(
        snap, layout, guard
    )
    assert {a.kind for a in actions} == {"fold"}
    noted = {n.split("'")[1] for n in guard.notes}
    assert set(GROUP_A + GROUP_B + ["fc"]) <= noted
    assert all("'skip'" in n for n in guard.notes if n.split("'")[1] in GROUP_A + GROUP_B)
    # too few samples: every member of the group is noted, nothing is proposed for it
    guard = Guard(layout)
    assert BudgetPolicy(remove_fraction=0.5, min_samples=10**6).propose(snap, layout, guard) == []
    assert {n.split("'")[1] for n in guard.notes} == set(CONVS) | {"fc"}
    # a protected member freezes its whole group, with a note naming it
    guard = Guard(layout, GuardSettings(protected=["block2.down.0"]))
    actions = BudgetPolicy(remove_fraction=0.5, min_samples=10).propose(snap, layout, guard)
    assert "block2.conv2" not in {a.layer for a in actions} and "stem" in {a.layer for a in actions}
    assert any("'block2.conv2' left alone: coupled with 'block2.down.0': protected" in n
               for n in guard.notes)  # fmt: skip


def test_other_policies_still_leave_coupled_layers_alone():
    model, x = _model()
    with torch.no_grad():
        model.bn.bias[2] = -1e3  # stem channel 2 is dead after its ReLU
    engine = _tracked(model, x)
    layout = engine.model_layout()
    cfg = PolicyConfig([DeadUnitPolicy(min_samples=1),
                        BudgetPolicy(remove_fraction=0.5, min_samples=10)],
                       GuardSettings())  # fmt: skip
    guard_actions = propose_actions(engine.snapshot(), layout, cfg)
    assert all(a.policy == "budget" for a in guard_actions if a.layer in GROUP_A)
    (stem,) = [a for a in guard_actions if a.layer == "stem"]
    assert 2 in stem.local_indices  # the dead channel costs nothing: the budget takes it
    removed = collapsed(layout, {"stem": 4, "block1.conv2": 4})
    assert removed == {"stem": 4}
