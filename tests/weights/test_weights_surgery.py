"""Comparisons across (hand-simulated) surgery are aligned by neuron ID; the tracker's listener
hooks write before/after snapshots and the change log."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from weights_helpers import grow_unit, remove_units, surgery_record

from engine import NeuronEngine
from engine.surgery.records import SurgeryListener
from engine.weights import (
    UnitAxis,
    WeightShapeMismatchError,
    WeightTracker,
    capture_weights,
    compare_snapshots,
)


def make_engine():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 3)
    )  # fmt: skip
    engine = NeuronEngine(model)
    with engine.tracking():
        model(torch.randn(16, 6))
    return model, engine


def run_surgery(model, engine, tracker, step=100, epoch=2):
    """Prune units 1 and 5 of layer '0', merge its unit 2 into unit 3, grow layer '2' from
    its unit 0. Returns the weights needed for the expected changes."""
    widths = dict(engine.layout)
    w2, w4 = model[2].weight.detach().clone(), model[4].weight.detach().clone()
    tracker.before_surgery(model, plan=None, step=step, epoch=epoch)
    prune = remove_units(model, engine, 0, 2, [1, 5])  # locals after: 0,2,3,4,6,7
    merge = remove_units(model, engine, 0, 2, [1], merged_into=[2])  # old unit 2 → old unit 3
    grow = grow_unit(model, engine, 2, 4, parent=0)
    merge.index, grow.index = 1, 2
    record = surgery_record(engine, [prune, merge, grow], widths, step=step, epoch=epoch)
    tracker.after_surgery(model, record)
    return w2, w4


def test_tracker_satisfies_the_listener_protocol(tmp_path):
    _, engine = make_engine()
    assert isinstance(WeightTracker(engine, tmp_path), SurgeryListener)


def test_comparison_after_prune_merge_grow_is_aligned_by_neuron_id(tmp_path):
    model, engine = make_engine()
    tracker = WeightTracker(engine, tmp_path)
    w2, w4 = run_surgery(model, engine, tracker)
    before, after = tracker.get("before-surgery"), tracker.get("after-surgery")
    assert before.ids("0").tolist() == list(range(8))
    assert after.ids("0").tolist() == [0, 3, 4, 6, 7]
    cmp = compare_snapshots(before, after, lineage=tracker.lineage)
    # untouched units report zero change although units around them were removed
    assert cmp.tensors["0.weight"].l2 == 0.0 and cmp.tensors["0.bias"].l2 == 0.0
    assert cmp.neurons["0"].ids.tolist() == [0, 3, 4, 6, 7]
    assert cmp.neurons["0"].l2.abs().max().item() == 0.0
    # the fold changed only the survivor's consumer column: Δ = the absorbed column
    assert cmp.tensors["2.weight"].l1 == pytest.approx(w2[:, 2].double().abs().sum().item())
    assert cmp.tensors["2.weight"].by_ids
    # Net2Net halved the parent's consumer column: Δ = −column / 2
    assert cmp.tensors["4.weight"].l1 == pytest.approx(w4[:, 0].double().abs().sum().item() / 2)
    units = cmp.units["0"]
    assert (units.kept, units.removed, units.merged) == (5, [1, 5], {3: [2]})
    grown = engine.neurons.ids("2")[-1]
    assert cmp.units["2"].added == [grown] and cmp.units["2"].grown_from == {grown: 8}
    assert (units.width_a, units.width_b) == (8, 5)
    assert cmp.neurons["2"].ids.tolist() == list(range(8, 14))  # survivors only
    # unit 8's row changed only where the fold added the absorbed column to survivor 3's
    assert cmp.neurons["2"].of(8)["l1"] == pytest.approx(abs(w2[0, 2].item()))


def test_change_log_lines_describe_each_action(tmp_path):
    model, engine = make_engine()
    tracker = WeightTracker(engine, tmp_path)
    run_surgery(model, engine, tracker, step=100, epoch=2)
    tracker.flush()
    lines = (tmp_path / "changes.jsonl").read_text().splitlines()
    assert len(lines) == 3
    prune, merge, grow = tracker.changes()
    assert (prune.kind, prune.step, prune.epoch, prune.removed_ids) == ("prune", 100, 2, [1, 5])
    assert prune.shapes_before == {"0.weight": [8, 6]} and prune.params_delta == -2 * 7 - 2 * 6
    assert merge.merged_into == {3: [2]}
    assert grow.added_ids == [engine.neurons.ids("2")[-1]] and grow.parents == [8]
    snaps = tracker.snapshots()
    assert [s.entry.trigger for s in snaps] == ["before_surgery", "after_surgery"]
    assert (prune.snapshot_before, prune.snapshot_after) == (snaps[0].seq, snaps[1].seq)
    assert tracker.store.lineage[2] == {"event": "merged", "layer": "0", "into": 3}


def test_comparisons_span_surgery_and_reload_from_disk(tmp_path):
    model, engine = make_engine()
    tracker = WeightTracker(engine, tmp_path)
    tracker.on_epoch(0, step=0)
    run_surgery(model, engine, tracker, step=50, epoch=1)
    with torch.no_grad():
        model[0].weight[0].add_(1.0)  # unit with ID 0 trains on
    tracker.on_epoch(1, step=60)
    tracker.close()
    fresh = WeightTracker(model, tmp_path)  # no engine: everything read back from the run
    first, last = fresh.get(0), fresh.get(-1)
    cmp = fresh.compare(first, last)
    change = cmp.neurons["0"]
    assert change.of(0)["l1"] == pytest.approx(6.0, rel=1e-6)
    assert [change.of(i)["l2"] for i in (3, 4, 6, 7)] == [0.0] * 4
    assert cmp.units["0"].merged == {3: [2]}  # lineage stored in the run index
    series = fresh.compare_consecutive()
    assert len(series) == 3 and series[0].total.l2 == 0.0


def test_conv_bn_flatten_axes_and_alignment(tmp_path):
    torch.manual_seed(1)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
        nn.Linear(4 * 4 * 4, 3),
    )  # fmt: skip
    engine = NeuronEngine(model)
    with engine.tracking():
        model(torch.randn(8, 3, 4, 4))
    tracker = WeightTracker(engine, tmp_path)
    before = tracker.snapshot("before")
    axes = before.entry.axes
    assert axes["4.weight"] == [
        UnitAxis(dim=0, layer="4"),
        UnitAxis(dim=1, layer="0", columns_per_unit=16),
    ]
    assert axes["1.running_var"] == [UnitAxis(dim=0, layer="0")]
    keep = [0, 2, 3]
    conv, bn, fc = model[0], model[1], model[4]
    new_conv, new_bn, new_fc = nn.Conv2d(3, 3, 3, padding=1), nn.BatchNorm2d(3), nn.Linear(48, 3)
    cols = torch.cat([torch.arange(16) + 16 * k for k in keep])
    with torch.no_grad():
        new_conv.weight.copy_(conv.weight[keep])
        new_conv.bias.copy_(conv.bias[keep])
        for name in ("weight", "bias", "running_mean", "running_var"):
            getattr(new_bn, name).copy_(getattr(bn, name)[keep])
        new_fc.weight.copy_(fc.weight[:, cols])
        new_fc.bias.copy_(fc.bias)
    model[0], model[1], model[4] = new_conv, new_bn, new_fc
    engine.neurons.remove("0", [1])
    after = tracker.snapshot("after")
    cmp = compare_snapshots(before, after, include_buffers=True)
    assert {n: t.l2 for n, t in cmp.tensors.items()} == dict.fromkeys(cmp.tensors, 0.0)
    assert "1.running_mean" in cmp.tensors and "1.num_batches_tracked" in cmp.skipped
    assert cmp.units["0"].removed == [1] and cmp.neurons["0"].ids.tolist() == [0, 2, 3]
    assert sorted(cmp.neurons["0"].tensors) == ["0.bias", "0.weight", "1.bias", "1.running_mean",
                                                 "1.running_var", "1.weight"]  # fmt: skip


def test_shape_mismatch_without_ids_is_a_typed_error_naming_the_tensor():
    a = capture_weights(nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2)))
    b = capture_weights(nn.Sequential(nn.Linear(3, 5), nn.Linear(5, 2)))
    with pytest.raises(WeightShapeMismatchError, match=r"'0.weight'.*\[4, 3\] vs \[5, 3\]"):
        compare_snapshots(a, b)
    cmp = compare_snapshots(a, b, on_unaligned="skip")
    assert set(cmp.tensors) == {"1.bias"} and "axis 0" in cmp.skipped["0.bias"]


def test_batchnorm_models_compare_without_error():
    torch.manual_seed(2)
    model = nn.Sequential(nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3), nn.ReLU())
    a = capture_weights(model)
    model.train()
    model(torch.randn(4, 2, 5, 5))  # running stats and num_batches_tracked change
    cmp = compare_snapshots(a, capture_weights(model), include_buffers=True)
    assert cmp.tensors["1.running_mean"].l2 > 0
    assert cmp.skipped["1.num_batches_tracked"].startswith("not floating point")
