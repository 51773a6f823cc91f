"""`pggit-exporter render`: the committed rule and Alertmanager files are its default output."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest
import yaml

from exporter import render
from tests.rules_fixtures import ROOT, render_files

PARAMS = ROOT / "prometheus" / "params.yml"
# A raw metric name (not part of a recording rule name) and its optional matchers.
RAW_SELECTION = r"(?<![:\w])(pggit_\w+|up)(?![\w:])(\{[^}]*\})?"


def _args(**kwargs: object) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    render.configure_parser(parser)
    ns = parser.parse_args([])
    for key, value in kwargs.items():
        setattr(ns, key, value)
    return ns


def test_committed_files_are_the_rendering_of_params_yml() -> None:
    params = render.load_params(PARAMS)
    for rel, text in render.render_all(params).items():
        committed = (ROOT / rel).read_text(encoding="utf-8")
        assert committed == text, f"{rel} drifted; run: pggit-exporter render " \
                                  f"--params prometheus/params.yml --out-dir ."


def test_params_yml_spells_out_every_default() -> None:
    assert yaml.safe_load(PARAMS.read_text(encoding="utf-8")) == render.DEFAULTS


def test_check_mode_fails_on_a_hand_edited_file(tmp_path: Path) -> None:
    paths = render_files(tmp_path)
    assert render.run(_args(params=PARAMS, out_dir=tmp_path, check=True)) == 0
    alerts = paths[render.ALERTS_FILE]
    alerts.write_text(alerts.read_text().replace(">= 3", ">= 4"), encoding="utf-8")
    assert render.run(_args(params=PARAMS, out_dir=tmp_path, check=True)) == 1


@pytest.mark.parametrize(("text", "key"), [
    ("alerts:\n  escalation_cuont: 4\n", r"alerts\.escalation_cuont"),
    ("alertmanager:\n  group_wait: soon\n", r"alertmanager\.group_wait"),
], ids=["unknown-parameter", "bad-duration"])
def test_bad_parameter_is_rejected_with_its_key(tmp_path: Path, text: str, key: str) -> None:
    params = tmp_path / "params.yml"
    params.write_text(text)
    with pytest.raises(render.ParamsError, match=key):
        render.load_params(params)
    assert render.run(_args(params=params, out_dir=tmp_path, check=False)) == 2


def test_parameters_reach_the_rules() -> None:
    params = render.merge_params({"alerts": {"escalation_count": 5, "escalation_window": "2h"}})
    rule = next(r for r in render.alert_rules(params) if r["alert"] == "PggitThresholdEscalation")
    assert "offset 2h" in rule["expr"]
    assert rule["expr"].rstrip().endswith(">= 5")


def test_job_and_selector_restrict_every_raw_metric() -> None:
    params = render.merge_params({"job": "pg-prod", "selector": 'env="prod"'})
    groups = render.recording_groups(params) + render.alert_groups(params)
    exprs = [r["expr"] for g in groups for r in g["rules"]]
    selections = [m for e in exprs for m in re.finditer(RAW_SELECTION, e)]
    assert selections
    for match in selections:
        matchers = match.group(2) or ""
        assert 'job="pg-prod"' in matchers, match.group(0)
        if match.group(1) != "up":
            assert 'env="prod"' in matchers, match.group(0)


def test_alertmanager_timing_comes_from_params() -> None:
    params = render.merge_params({"alertmanager": {"group_wait": "1s", "group_interval": "2s"}})
    [route] = render.alertmanager_config(params)["route"]["routes"]
    assert (route["group_wait"], route["group_interval"]) == ("1s", "2s")
