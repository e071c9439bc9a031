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


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("policies:\n  - name: dead\n    settings: {firing_threshold: yes}\n",
         r"firing_threshold = True: Input should be a valid number"),
        ("policies:\n  - name: dead\n    settings: {min_samples: true}\n",
         r"min_samples = True: Input should be a valid integer"),
        ("guards: {min_width: '4'}\n", r"guards\.min_width = '4': Input should be a valid integer"),
        ("guards: {allow_output_changes: 1}\n",
         r"guards\.allow_output_changes = 1: Input should be a valid boolean"),
        ("policies:\n  - name: dead\n    enabled: 'no'\n",
         r"policies\.0\.enabled = 'no': Input should be a valid boolean"),
        ("policies:\n  - name: redundancy\n    settings: {allow_negative: 'yes'}\n",
         r"allow_negative = 'yes': Input should be a valid boolean"),
        ("policies:\n  - name: dead\n    settings: {firing_threshold: 1}\n",
         r"firing_threshold = 1: Input should be less than 1"),
        ("policies:\n  - name: dead\n    settings: {constant_tolerance: .inf}\n",
         r"constant_tolerance = inf: Input should be a finite number"),
        ("guards:\n  min_width: 4\n  min_width: 1\n",
         r"not valid YAML at line 3, column 3: duplicate key 'min_width' "
         r"\(first given at line 2\)"),
        ("policies:\n  - name: dead\n    settings: {min_samples: 1, min_samples: 2}\n",
         r"line 3, column 32: duplicate key 'min_samples' \(first given at line 3\)"),
    ],
)  # fmt: skip
def test_config_types_are_strict_and_duplicate_keys_refused(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigurationError, match=message):
        load_config(path)


def test_ints_are_still_numbers_for_float_settings(tmp_path):
    path = tmp_path / "ok.yaml"
    path.write_text(
        "guards: {min_keep_fraction: 0}\npolicies:\n  - name: redundancy\n"
        "    settings: {threshold: 1, max_fraction: 1}\n  - name: dead\n"
        "    settings: {firing_threshold: 0}\n"
    )
    cfg = load_config(path)
    assert cfg.policies[0].settings.threshold == 1.0
    assert isinstance(cfg.policies[0].settings.threshold, float)
    assert cfg.guards.min_keep_fraction == 0.0
