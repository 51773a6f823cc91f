"""Every panel query names only served metrics and agreed recording rules, and parses.

The names are checked with a tokenizer against the catalog and the recording-rule contract;
syntax is checked by the real promtool, which parses each expression as a recording rule.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from exporter.catalog import METRICS, exposed_series_names
from exporter.dashboards.rules import PROMETHEUS_SERIES, RECORDING_RULES
from tests.dashboards_fixtures import (
    RULES_DIR,
    load_dashboards,
    metric_names,
    recorded_rule_names,
    substitute,
    targets,
)

DASHBOARDS = load_dashboards()
EXPRESSIONS = sorted({t["expr"] for _, _, t in targets(DASHBOARDS)})
SERVED = {name for m in METRICS.values() for name in exposed_series_names(m)}
VARIABLE_QUERIES = sorted({v["definition"] for d in DASHBOARDS.values()
                           for v in d["templating"]["list"] if v["type"] == "query"})


def unknown_names(expr: str) -> set[str]:
    return metric_names(expr) - SERVED - set(RECORDING_RULES) - PROMETHEUS_SERIES


def test_tokenizer_finds_metrics_and_ignores_functions_labels_and_strings() -> None:
    expr = ('histogram_quantile(0.99, sum by (le, branch) (rate(foo_bucket{a=~"x|y"}[5m]))) '
            '/ on (job) group_left sum(bar:baz:rate5m offset 1m) or vector(0)')
    assert metric_names(expr) == {"foo_bucket", "bar:baz:rate5m"}


def test_a_metric_missing_from_the_catalog_is_reported() -> None:
    assert unknown_names('rate(pggit_operation_duration_seconds_count{a="b"}[1m]) '
                         '+ pggit_no_such_metric') == {"pggit_no_such_metric"}


def test_every_metric_a_panel_names_is_in_the_catalog_or_the_rule_contract() -> None:
    assert len(EXPRESSIONS) > 80
    problems = {expr: unknown_names(expr) for expr in EXPRESSIONS if unknown_names(expr)}
    assert problems == {}


def test_every_metric_a_variable_query_names_is_served() -> None:
    for query in VARIABLE_QUERIES:
        inner = query.removeprefix("label_values(").rsplit(",", 1)[0]
        assert unknown_names(inner) == set(), query


def test_recording_rules_the_dashboards_use_are_recorded_by_the_rules_files() -> None:
    if not list(RULES_DIR.glob("*.yml")):
        pytest.skip("prometheus/rules/*.yml not written yet")
    used = {n for expr in EXPRESSIONS for n in metric_names(expr) if ":" in n}
    assert used, "the dashboards should read precomputed rules for fleet-wide panels"
    assert used - recorded_rule_names() == set()


def test_every_panel_query_parses_with_promtool(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Debian package prometheus)")
    rules = [{"record": f"dashboard:check_{i}:expr", "expr": substitute(expr)}
             for i, expr in enumerate(EXPRESSIONS)]
    path = tmp_path / "dashboards.rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    result = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(rules)} rules found" in result.stdout


def test_promtool_rejects_a_broken_panel_query(tmp_path: Path) -> None:
    """The check above is only worth something if promtool does fail on bad PromQL."""
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Debian package prometheus)")
    broken = substitute('sum by (le (rate(pggit_up{job=~"$job"}[$__rate_interval]))')
    path = tmp_path / "broken.rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "x", "rules": [
        {"record": "dashboard:broken:expr", "expr": broken}]}]}))
    result = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode != 0
