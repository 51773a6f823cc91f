"""The committed rules pass the real `promtool check rules` and their unit tests."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from exporter import render
from tests.rules_fixtures import ROOT, run_tool

TESTS = sorted((ROOT / "prometheus" / "tests").glob("*.test.yml"))


def test_promtool_check_rules_accepts_the_committed_rules() -> None:
    files = [str(ROOT / render.RECORDING_FILE), str(ROOT / render.ALERTS_FILE)]
    result = run_tool("promtool", "check", "rules", *files)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("test_file", TESTS, ids=[p.name for p in TESTS])
def test_promtool_unit_tests_pass(test_file: Path) -> None:
    result = run_tool("promtool", "test", "rules", test_file.name, cwd=test_file.parent)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_fires_in_some_promtool_test() -> None:
    fired = set()
    for path in TESTS:
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                if check.get("exp_alerts"):
                    fired.add(check["alertname"])
    alerts = {r["alert"] for r in render.alert_rules(render.DEFAULTS)}
    assert sorted(alerts - fired) == []


def test_promtool_tests_evaluate_recording_rules_before_alerts() -> None:
    names = [g["name"] for g in render.recording_groups(render.DEFAULTS)
             + render.alert_groups(render.DEFAULTS)]
    for path in TESTS:
        assert yaml.safe_load(path.read_text())["group_eval_order"] == names, path.name
