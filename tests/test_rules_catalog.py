"""The rules name only catalog metrics, label and annotate every alert, and ship runbooks."""

from __future__ import annotations

import re

import pytest

from exporter import catalog, render
from tests.rules_fixtures import ROOT

PARAMS = render.load_params(ROOT / "prometheus" / "params.yml")
ALERTS = render.alert_rules(PARAMS)
RECORDED = set(render.recording_names(PARAMS))
EXPOSED = {name for m in catalog.METRICS.values() for name in catalog.exposed_series_names(m)}
# The recording rules the dashboards engineer builds on (the brief's contract).
CONTRACT = [
    "operation_type:pggit_operations:rate5m", "operation_type:pggit_operations:rate1h",
    "operation_type:pggit_operation_errors:ratio_rate5m",
    "operation_type:pggit_operation_errors:ratio_rate1h",
    *(f"operation_type:pggit_operation_duration_seconds:{q}_{w}"
      for q in ("p50", "p95", "p99") for w in ("5m", "1h")),
    "operation_type:pggit_operation_duration_seconds:mean5m",
    "branch_operation_type:pggit_operations:rate5m",
    "branch_operation_type:pggit_operation_errors:ratio_rate5m",
    *(f"branch_operation_type:pggit_operation_duration_seconds:{q}_{w}"
      for q in ("p50", "p95", "p99") for w in ("5m", "1h")),
    *(f"phase:pggit_merge_duration_seconds:{q}_{w}"
      for q in ("p50", "p95", "p99") for w in ("5m", "1h")),
    "target_branch:pggit_merges:rate5m", "target_branch:pggit_merge_duration_seconds:p99_5m",
]


def _texts() -> list[str]:
    groups = render.recording_groups(PARAMS) + render.alert_groups(PARAMS)
    out = []
    for rule in (r for g in groups for r in g["rules"]):
        out.append(rule["expr"])
        out.extend(rule.get("annotations", {}).values())
    return out


def test_every_metric_the_rules_name_is_in_the_catalog_or_recorded() -> None:
    names = {n for t in _texts() for n in re.findall(r"\b(?:pggit_\w+|\w+:\w+:\w+)\b", t)}
    assert names
    unknown = sorted(n for n in names
                     if n not in EXPOSED and n not in RECORDED)
    assert unknown == []


def test_the_dashboard_contract_names_are_recorded() -> None:
    assert [n for n in CONTRACT if n not in RECORDED] == []


@pytest.mark.parametrize("rule", ALERTS, ids=[r["alert"] for r in ALERTS])
def test_alert_carries_severity_alert_type_and_annotations(rule: dict) -> None:
    assert re.fullmatch(r"Pggit[A-Z][A-Za-z0-9]+", rule["alert"])
    assert rule["labels"]["severity"] in ("critical", "warning", "info")
    assert rule["labels"]["alert_type"]
    assert set(rule["annotations"]) == {"summary", "description", "runbook_url"}
    if "operation_type" in rule["expr"]:
        assert "$labels.operation_type" in rule["annotations"]["description"]


@pytest.mark.parametrize("rule", ALERTS, ids=[r["alert"] for r in ALERTS])
def test_runbook_url_points_at_a_shipped_runbook_section(rule: dict) -> None:
    url = rule["annotations"]["runbook_url"]
    base = PARAMS["runbook_base_url"].rstrip("/") + "/"
    assert url.startswith(base)
    page, _, anchor = url.removeprefix(base).partition("#")
    text = (ROOT / "runbooks" / page).read_text(encoding="utf-8")
    assert "## How to confirm" in text and "## What to do" in text
    if anchor:
        assert f"## {anchor.capitalize()}" in text


def test_readme_lists_every_recording_rule_and_alert() -> None:
    readme = (ROOT / "prometheus" / "README.md").read_text(encoding="utf-8")
    missing = [n for n in sorted(RECORDED) + [r["alert"] for r in ALERTS]
               if f"`{n}`" not in readme]
    assert missing == []


def test_runbooks_and_prometheus_yml_select_the_rules_job() -> None:
    pages = [*(ROOT / "runbooks").glob("*.md"), ROOT / "prometheus" / "prometheus.yml"]
    jobs = {m for page in pages
            for m in re.findall(r'job(?:="|_name: )([\w.-]+)', page.read_text(encoding="utf-8"))}
    assert jobs == {PARAMS["job"]}
