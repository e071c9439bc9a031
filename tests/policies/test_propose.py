"""engine.propose and ``python -m engine plan``: statistics → policies → a versioned plan."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from engine import NeuronEngine
from engine.cli import main
from engine.errors import FingerprintMismatchError
from engine.plan import Plan


def _planted_engine() -> NeuronEngine:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, 3)
    )
    with torch.no_grad():
        model[0].bias[[3, 7]] = -1e4
        model[2].weight[5] = model[2].weight[1]
        model[2].bias[5] = model[2].bias[1]
        model[4].weight[0].zero_()  # a constant logit: an output unit, never to be removed
    engine = NeuronEngine(model, correlation=True)
    with engine.tracking(), torch.no_grad():
        for x in torch.randn(512, 8).split(64):
            model(x)
    return engine


CONFIG = {
    "guards": {"min_width": 2},
    "policies": [{"name": "dead"}, {"name": "redundancy", "settings": {"threshold": 0.999}}],
}


def test_engine_propose_uses_the_real_layout_and_guards():
    engine = _planted_engine()
    plan = engine.propose(CONFIG)
    assert [(a.layer, a.local_indices) for a in plan.prune] == [("0", [3, 7])]
    assert [(a.layer, {a.keep, a.remove}) for a in plan.merge] == [("2", {1, 5})]
    assert all(a.layer != "4" for a in plan.actions())
    assert plan.metadata.samples_seen == {"0": 512, "2": 512, "4": 512}
    assert plan.metadata.policies[0]["name"] == "dead"
    assert plan.statistics.widths["0"] == {"before": 16, "after": 14}
    plan.check_fingerprint(engine.layout)
    other = NeuronEngine(nn.Sequential(nn.Linear(8, 15), nn.ReLU(), nn.Linear(15, 3)))
    with pytest.raises(FingerprintMismatchError, match="'0'"):
        plan.check_fingerprint(other.layout)


def test_layout_marks_the_output_layer_and_keeps_consumer_weights():
    engine = _planted_engine()
    layout = engine.model_layout()
    assert [n for n, layer in layout.layers.items() if layer.is_output] == ["4"]
    torch.testing.assert_close(
        layout.layers["2"].consumer_matrix(), engine.model[4].weight.detach().double()
    )
    assert not engine.is_tracking  # hooks were paused and restored


def test_cli_plan_from_a_saved_snapshot_with_layout(tmp_path, capsys):
    engine = _planted_engine()
    engine.snapshot(with_layout=True).save(tmp_path / "stats")
    config = tmp_path / "p.yaml"
    config.write_text(json.dumps(CONFIG))  # JSON is valid YAML
    out = tmp_path / "plan.json"
    assert main(["plan", str(tmp_path / "stats"), "--config", str(config), "-o", str(out)]) == 0
    plan = Plan.load(out)
    assert [(a.layer, a.local_indices) for a in plan.prune] == [("0", [3, 7])]
    assert plan.metadata.notes == []
    assert main(["inspect", str(out)]) == 0
    assert "PRUNE: 2 units" in capsys.readouterr().out


def test_cli_plan_without_layout_is_conservative_and_says_so(tmp_path):
    engine = _planted_engine()
    engine.snapshot().save(tmp_path / "stats")
    out = tmp_path / "plan.json"
    assert main(["plan", str(tmp_path / "stats"), "-o", str(out)]) == 0
    plan = Plan.load(out)
    assert any("no model layout" in note for note in plan.metadata.notes)
    assert all(a.layer != "4" for a in plan.actions())


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["plan", "{missing}"], "summary.json: missing"),
        (["plan", "{stats}", "--config", "{bad}"], "policies.0.name = 'nope': unknown policy"),
        (["inspect", "{bad_plan}"], "field 'prune.0.layer'"),
    ],
)
def test_cli_bad_input_exit_2_one_line(tmp_path, capsys, args, message):
    _planted_engine().snapshot().save(tmp_path / "stats")
    (tmp_path / "bad.yaml").write_text("policies:\n  - name: nope\n")
    bad_plan = Plan.create([], [("0", 16)]).to_json()
    bad_plan["prune"] = [{"kind": "prune", "layer": 5, "local_indices": [1], "neuron_ids": [1],
                          "reason": "x"}]  # fmt: skip
    (tmp_path / "bad_plan.json").write_text(json.dumps(bad_plan))
    paths = {"missing": tmp_path / "nope", "stats": tmp_path / "stats",
             "bad": tmp_path / "bad.yaml", "bad_plan": tmp_path / "bad_plan.json"}  # fmt: skip
    assert main([a.format(**paths) for a in args]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
