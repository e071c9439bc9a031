"""YAML policy configuration: safe loading, validation, messages naming the bad item."""

from __future__ import annotations

import pytest

from engine import ConfigurationError
from policies import DEFAULT_CONFIG, load_config, parse_config


def test_default_config_loads_every_policy_in_order():
    cfg = load_config()
    assert [p.name for p in cfg.policies] == ["dead", "low_activity", "redundancy", "saturation"]
    assert cfg.guards.min_width == 4 and cfg.guards.min_keep_fraction == 0.25
    described = cfg.describe()
    assert described[-1]["name"] == "guards"
    assert described[2]["settings"]["threshold"] == 0.95
    assert load_config(DEFAULT_CONFIG).describe() == described


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("surprise: 1\n", r"surprise = 1: Extra inputs are not permitted"),
        ("version: 2\n", r"version = 2: Input should be 1"),
        ("policies:\n  - name: nope\n", r"policies\.0\.name = 'nope': unknown policy; known"),
        (
            "policies:\n  - name: dead\n    settings: {firing_threshold: high}\n",
            r"policies\.0\.settings \(dead\)\.firing_threshold = 'high': Input should be a valid",
        ),
        (
            "policies:\n  - name: redundancy\n    settings: {treshold: 0.9}\n",
            r"policies\.0\.settings \(redundancy\)\.treshold = 0\.9: Extra inputs",
        ),
        (
            "policies:\n  - name: budget\n    settings: {remove_fraction: 0.5, target_params: 9}\n",
            r"give exactly one of remove_fraction, fractions, target_params",
        ),
        (
            "policies:\n  - name: budget\n    settings: {fractions: {fc1: 1.5}}\n",
            r"fractions\['fc1'\] = 1\.5: must be in \[0, 1\)",
        ),
        ("guards: {min_width: 0}\n", r"guards\.min_width = 0: Input should be greater than"),
        ("- just\n- a list\n", r"expected a mapping at the top level"),
        ("policies: [\n", r"not valid YAML at line 2"),
        ("!!python/object/apply:os.system ['echo hi']\n", r"not valid YAML"),
    ],
)
def test_bad_configs_are_refused_with_the_item_named(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigurationError, match=message) as info:
        load_config(path)
    assert str(path) in str(info.value)


def test_missing_file_and_disabled_policies(tmp_path):
    with pytest.raises(ConfigurationError, match="no such policy configuration file"):
        load_config(tmp_path / "nope.yaml")
    cfg = parse_config({"policies": [{"name": "dead", "enabled": False}, {"name": "saturation"}]})
    assert [p.name for p in cfg.policies] == ["saturation"]
