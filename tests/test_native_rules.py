"""Rules and dashboards over native histograms: one rewrite for both, checked by promtool.

The real Prometheus evaluating them is in tests/test_native_prometheus.py.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

from exporter import render
from exporter.dashboards import dump, render_native
from exporter.native_rules import HISTOGRAMS, to_native
from tests.dashboards_fixtures import REPO, targets
from tests.prom_processes import find_binary

NATIVE_DIR = REPO / "grafana" / "dashboards-native"
UNTOUCHED = ("histogram_quantile(0.5, sum by (le) "
             "(rate(pggit_exporter_poll_duration_seconds_bucket[1m])))")
"""The exporter's own poll histogram is a classic one: it stays as it is."""
CLASSIC_SERIES = re.compile(rf"\b({'|'.join(HISTOGRAMS)})_(bucket|count|sum)\b")


def native_params() -> dict:
    return render.merge_params({"native_histograms": True})


def native_rule_files(tmp_path: Path) -> list[Path]:
    files = []
    for rel, text in render.render_all(native_params()).items():
        if rel.startswith("prometheus/rules/"):
            path = tmp_path / Path(rel).name
            path.write_text(text, encoding="utf-8")
            files.append(path)
    return files


@pytest.mark.parametrize(("classic", "native"), [
    ('histogram_quantile(0.9, sum by (job, operation_type, le) '
     '(rate(pggit_operation_duration_seconds_bucket{job="j"}[5m])))',
     'histogram_quantile(0.9, sum by (job, operation_type) '
     '(rate(pggit_operation_duration_seconds{job="j"}[5m])))'),
    ('sum by (le) (increase(pggit_span_duration_seconds_bucket{a="b"}[$__rate_interval]))',
     'sum (increase(pggit_span_duration_seconds{a="b"}[$__rate_interval]))'),
    ('sum by (le, phase) (rate(pggit_merge_duration_seconds_bucket[1m]))',
     'sum by (phase) (rate(pggit_merge_duration_seconds[1m]))'),
    ('sum(rate(pggit_operation_duration_seconds_sum{x="1"}[5m])) / '
     'sum(rate(pggit_operation_duration_seconds_count{x="1"}[5m]))',
     'sum(histogram_sum(rate(pggit_operation_duration_seconds{x="1"}[5m]))) / '
     'sum(histogram_count(rate(pggit_operation_duration_seconds{x="1"}[5m])))'),
    ('increase(pggit_operation_duration_seconds_count{j="x"}[12h] offset 12h)',
     'histogram_count(increase(pggit_operation_duration_seconds{j="x"}[12h] offset 12h))'),
    ('pggit_operation_duration_seconds_count{j="x"} - '
     '(pggit_operation_duration_seconds_count{j="x"} offset 5m or '
     'pggit_operation_duration_seconds_count{j="x"} * 0)',
     'histogram_count(pggit_operation_duration_seconds{j="x"}) - '
     '(histogram_count(pggit_operation_duration_seconds{j="x"} offset 5m) or '
     'histogram_count(pggit_operation_duration_seconds{j="x"}) * 0)'),
    ('min_over_time(pggit_operation_duration_seconds_count{j="x"}[5m])',
     'min_over_time(histogram_count(pggit_operation_duration_seconds{j="x"})[5m:])'),
    ('label_values(pggit_operation_duration_seconds_count{job=~"$job"}, branch)',
     'label_values(pggit_operation_duration_seconds{job=~"$job"}, branch)'),
    (UNTOUCHED, UNTOUCHED),
])
def test_each_form_of_classic_query_has_its_native_twin(classic: str, native: str) -> None:
    assert to_native(classic) == native


def test_a_query_mixing_native_and_classic_buckets_is_refused() -> None:
    with pytest.raises(ValueError, match="mixes"):
        to_native("pggit_operation_duration_seconds_bucket / pggit_exporter_poll_"
                  "duration_seconds_bucket")


def test_committed_native_dashboards_are_the_rendering() -> None:
    rendered = render_native()
    assert {p.stem for p in NATIVE_DIR.glob("*.json")} == set(rendered), (
        "run: python -m exporter.dashboards")
    for name, dashboard in rendered.items():
        assert (NATIVE_DIR / f"{name}.json").read_text(encoding="utf-8") == dump(dashboard), (
            f"{name}.json is stale; run python -m exporter.dashboards")


def test_nothing_native_reads_a_classic_series_of_the_duration_histograms(
        tmp_path: Path) -> None:
    for name, _, target in targets(render_native()):
        assert not CLASSIC_SERIES.search(target["expr"]), (name, target["expr"])
    for path in native_rule_files(tmp_path):
        for group in yaml.safe_load(path.read_text(encoding="utf-8"))["groups"]:
            for rule in group["rules"]:
                assert not CLASSIC_SERIES.search(rule["expr"]), rule


def test_native_rules_record_p50_p90_p99_per_operation_and_keep_every_classic_name(
        tmp_path: Path) -> None:
    classic = set(render.recording_names(render.DEFAULTS))
    recorded = set()
    for path in native_rule_files(tmp_path):
        for group in yaml.safe_load(path.read_text(encoding="utf-8"))["groups"]:
            recorded |= {r["record"] for r in group["rules"] if "record" in r}
    assert classic <= recorded
    for window in render.DEFAULTS["recording"]["windows"]:
        for q in ("p50", "p90", "p99"):
            assert f"operation_type:pggit_operation_duration_seconds:{q}_{window}" in recorded


@pytest.mark.skipif(find_binary(["promtool"]) is None,
                    reason="promtool is not installed (.ci/run installs it)")
def test_native_rules_pass_promtool(tmp_path: Path) -> None:
    files = native_rule_files(tmp_path)
    result = subprocess.run([find_binary(["promtool"]), "check", "rules", *map(str, files)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
