"""The noise budget: the demo workload, with the shipped rules and default parameters, pages
at most a few times per hour.

Two simulated hours of the workload's own model (`workload.simulate`: its operation weights,
durations, outliers and incidents, without a database) become the series the exporter would
expose, one sample a minute; the real promtool evaluates the committed rules over them and
counts pages in the second hour (the first warms up the 1h windows). A page is a critical
alert that starts firing and is not muted by the inhibit rules (the escalated companions
while PggitThresholdEscalation fires for the same operation type). The exporter has been
polling since before the window, as in steady state.
"""

from __future__ import annotations

import math
import re
import subprocess
from bisect import bisect_left
from pathlib import Path

import pytest
import yaml

from exporter import render
from exporter.config import DEFAULT_BUCKETS
from exporter.demo import workload
from tests.rules_fixtures import ROOT, require_tool

HOURS = 2
BUDGET = 4  # pages per hour: "a few", each one an incident the runbook explains
LABELS = 'job="pggit-exporter",instance="demo:9863",database="main"'
FIRING = 'ALERTS{alertstate="firing"'


def _paging(offset: str = "") -> str:
    """Critical alerts firing and not muted: PggitThresholdEscalation mutes the escalated
    companions of its operation type."""
    escalation = f'{FIRING},alertname="PggitThresholdEscalation"}}{offset}'
    return (f'({escalation} or ({FIRING},severity="critical"}}{offset} '
            f"unless on (job, database, operation_type) {escalation}))")


# Rising edges per minute over the hour: each is a new notification group.
PAGES = (f"sum(count_over_time(({_paging()} unless {_paging(' offset 1m')})[59m:1m]))"
         " or vector(0)")


def demo_operation_types() -> list[workload.OperationType]:
    """The 33 operation types the demo schema installs, as the workload loads them."""
    sql = (ROOT / "exporter" / "demo" / "sql" / "core.sql").read_text(encoding="utf-8")
    rows = re.findall(r"\('(\w+)', '(?:[^']|'')*', '(\w+)', ([\d.]+), (?:true|false)\)", sql)
    return [workload.operation_type(name, category, float(ms)) for name, category, ms in rows]


def threshold_us(op: workload.OperationType) -> float:
    """pgGit's threshold for an undisturbed type: p99 of its durations times 2.0."""
    return 2.0 * op.typical_us * math.exp(2.326 * op.sigma)


def _series(ops: list[workload.OperationType], seed: int) -> tuple[list[dict], dict[str, int]]:
    minutes = HOURS * 60 + 1
    thresholds = {op.name: threshold_us(op) for op in ops}
    bounds = list(DEFAULT_BUCKETS)
    count = {op.name: [0] * minutes for op in ops}
    total = {op.name: [0.0] * minutes for op in ops}
    violations = {op.name: [0] * minutes for op in ops}
    buckets = {op.name: [[0] * minutes for _ in bounds] for op in ops}
    for t, name, us in workload.simulate(ops, HOURS * 3600, seed=seed):
        m = int(t // 60) + 1
        count[name][m] += 1
        total[name][m] += us / 1e6
        violations[name][m] += us > thresholds[name]
        i = bisect_left(bounds, us / 1e6)
        if i < len(bounds):
            buckets[name][i][m] += 1

    def cumulative(values: list[float]) -> str:
        out, run = [], 0.0
        for v in values:
            run += v
            out.append(f"{run:.6g}")
        return " ".join(out)

    series = [{"series": f"pggit_exporter_last_poll_success_timestamp_seconds{{{LABELS}}}",
               "values": f"1+60x{minutes - 1}"},
              {"series": 'pggit_exporter_build_info{job="pggit-exporter",instance="demo:9863",'
                         'version="demo",python_version="3"}', "values": f"1x{minutes - 1}"}]
    for op in ops:
        labels = f'{LABELS},operation_type="{op.name}",branch="main"'
        series.append({"series": f"pggit_baseline_threshold_seconds{{{LABELS},"
                                 f'operation_type="{op.name}",branch=""}}',
                       "values": f"{thresholds[op.name] / 1e6:.6g}x{minutes - 1}"})
        for metric, values in (("pggit_operation_baseline_violations_total", violations),
                               ("pggit_operation_duration_seconds_count", count),
                               ("pggit_operation_duration_seconds_sum", total)):
            series.append({"series": f"{metric}{{{labels}}}",
                           "values": cumulative(values[op.name])})
        below = [0] * minutes
        for bound, per_minute in zip(bounds, buckets[op.name], strict=True):
            below = [b + c for b, c in zip(below, per_minute, strict=True)]
            series.append({"series": f'pggit_operation_duration_seconds_bucket{{{labels},'
                                     f'le="{bound:g}"}}', "values": cumulative(below)})
        series.append({"series": f'pggit_operation_duration_seconds_bucket{{{labels},'
                                 f'le="+Inf"}}', "values": cumulative(count[op.name])})
    return series, _pggit_criticals(violations)


def _pggit_criticals(violations: dict[str, list[int]]) -> dict[str, int]:
    """pgGit's own escalations in the second hour, the reference: an operation type becomes
    CRITICAL when its third violation within an hour arrives (seed 002)."""
    out = {}
    for name, per_minute in violations.items():
        escalated, started = sum(per_minute[1:61]) >= 3, 0
        for m in range(61, len(per_minute)):
            now = sum(per_minute[m - 59:m + 1]) >= 3
            started += now and not escalated
            escalated = now
        if started:
            out[name] = started
    return out


def _count_pages(tmp_path: Path, series: list[dict]) -> int:
    names = [g["name"] for g in render.recording_groups(render.DEFAULTS)
             + render.alert_groups(render.DEFAULTS)]
    test = {
        "rule_files": [str(ROOT / render.RECORDING_FILE), str(ROOT / render.ALERTS_FILE)],
        "evaluation_interval": "1m",
        "group_eval_order": names,
        # The expected value is impossible on purpose: promtool then prints the count.
        "tests": [{"interval": "1m", "input_series": series,
                   "promql_expr_test": [{"expr": PAGES, "eval_time": f"{HOURS * 60}m",
                                         "exp_samples": [{"labels": "{}", "value": -1}]}]}],
    }
    path = tmp_path / "noise.test.yml"
    path.write_text(yaml.safe_dump(test, sort_keys=False), encoding="utf-8")
    result = subprocess.run([require_tool("promtool"), "test", "rules", path.name],
                            capture_output=True, text=True, timeout=600, cwd=tmp_path)
    got = re.search(r"got:\s*\[?\{\} ([0-9.eE+-]+)", result.stdout + result.stderr)
    assert got, result.stdout + result.stderr
    return int(float(got.group(1)))


@pytest.mark.parametrize("seed", [1, 2])
def test_an_hour_of_the_demo_workload_pages_at_most_a_few_times(
        tmp_path: Path, seed: int, record_property: pytest.RecordProperty) -> None:
    ops = demo_operation_types()
    assert len(ops) == 33
    series, reference = _series(ops, seed)
    pages = _count_pages(tmp_path, series)
    record_property("pages_per_hour", pages)
    record_property("pggit_criticals_per_hour", sum(reference.values()))
    print(f"seed {seed}: {pages} pages in the simulated hour; pgGit's own escalations: "
          f"{reference}")
    assert pages <= BUDGET
    # Every page is explainable: it is pgGit's own escalation of the same operation types.
    assert pages <= sum(reference.values()) + 1
