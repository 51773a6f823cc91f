"""The real Prometheus reads the native histograms, and their quantiles are exact to 5 %.

Durations are written through pgGit's own writer (`record_performance_metric`): four
operation types, 3,000 log-normal durations each with the demo workload's rare far outliers.
The exporter (in this process, on a real port) is scraped by two real Prometheus servers:
one with `--enable-feature=native-histograms`, which negotiates the protobuf format and reads
the native histograms, and one without, which reads the classic buckets from the text page.
For p50, p90 and p99 of each type, `histogram_quantile` over the native histogram must be
within 5 % of SQL's exact `percentile_disc`; the classic estimate is reported beside it (run
with `-s` to see the table), not asserted: it is what the native histograms fix.
"""

from __future__ import annotations

import math
import random
from pathlib import Path

import psycopg
import pytest

from exporter.dashboards import render_native
from tests.dashboards_fixtures import substitute, targets
from tests.exporter_fixtures import wait_for
from tests.prom_processes import PrometheusServer, find_binary, write_yaml
from tests.test_native_rules import native_rule_files

pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.skipif(find_binary(["prometheus"]) is None,
                       reason="the prometheus binary is not installed (.ci/run installs it)"),
]

# (operation type, median µs, sigma): light operations steady, heavy ones spread, as in the
# demo workload (exporter/demo/workload.py), which also adds 1 % outliers of 8-30x.
OPERATIONS = [("commit", 2_000, 0.3), ("merge", 15_000, 0.5), ("rollback", 120_000, 0.8),
              ("branch_create", 900_000, 0.45)]
ROWS_PER_OPERATION = 3_000
QUANTILES = (0.5, 0.9, 0.99)
TOLERANCE = 0.05


class NativePrometheus(PrometheusServer):
    NAME = "prometheus-native"
    EXTRA_ARGS = ("--enable-feature=exemplar-storage", "--enable-feature=native-histograms")


class ClassicPrometheus(PrometheusServer):
    NAME = "prometheus-classic"


def _write_durations(dsn: str, rows: int = ROWS_PER_OPERATION, seed: int = 13) -> None:
    rng = random.Random(seed)
    with psycopg.connect(dsn, autocommit=True) as conn:
        for op, median, sigma in OPERATIONS:
            durations = []
            for _ in range(rows):
                value = rng.lognormvariate(math.log(median), sigma)
                if rng.random() < 0.01:
                    value *= rng.uniform(8.0, 30.0)
                durations.append(max(1, int(value)))
            conn.execute("SELECT pggit.record_performance_metric(%s, d) "
                         "FROM unnest(%s::bigint[]) AS d", (op, durations))


def _exact(dsn: str, after_id: int = 0) -> dict[tuple[str, float], float]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            """SELECT operation_type, percentile_disc(%s::float8[]) WITHIN GROUP
                        (ORDER BY duration_microseconds)
               FROM pggit.performance_metrics WHERE metric_id > %s
               GROUP BY 1 HAVING count(*) >= 1000""",
            (list(QUANTILES), after_id)).fetchall()
    return {(op, q): us / 1e6 for op, values in rows for q, us in zip(QUANTILES, values,
                                                                     strict=True)}


def _by_operation(prom: PrometheusServer, query: str) -> dict[str, float]:
    result = prom.api("query", query=query)
    assert result.get("status") == "success", result
    return {r["metric"]["operation_type"]: float(r["value"][1])
            for r in result["data"]["result"]}


def test_native_quantiles_are_within_five_percent_of_sql(
        pggit_dsn: str, run_exporter, tmp_path: Path) -> None:
    _write_durations(pggit_dsn)
    exact = _exact(pggit_dsn)
    assert {op for op, _ in exact} == {op for op, _, _ in OPERATIONS}
    exporter = run_exporter(pggit_dsn)
    rows = len(OPERATIONS) * ROWS_PER_OPERATION
    config = write_yaml(tmp_path / "prometheus.yml", {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [{"job_name": "pggit", "static_configs": [
            {"targets": [f"127.0.0.1:{exporter.port}"]}]}]})
    with NativePrometheus(config, tmp_path) as native, \
            ClassicPrometheus(config, tmp_path) as classic:
        native.wait_ready()
        classic.wait_ready()
        wait_for(lambda: _by_operation(native, "histogram_count(sum by (operation_type) "
                                               "(pggit_operation_duration_seconds))")
                 == {op: ROWS_PER_OPERATION for op, _, _ in OPERATIONS},
                 timeout=90, what=f"native Prometheus to see {rows} rows")
        wait_for(lambda: sum(_by_operation(classic, "sum by (operation_type) "
                                                    "(pggit_operation_duration_seconds_count)")
                             .values()) == rows,
                 timeout=90, what=f"classic Prometheus to see {rows} rows")
        lines = [f"{'operation':<14} {'q':>5} {'exact':>10} {'native':>10} {'err':>7} "
                 f"{'classic':>10} {'err':>7}"]
        worst = 0.0
        for q in QUANTILES:
            got = _by_operation(native, f"histogram_quantile({q}, sum by (operation_type) "
                                        "(pggit_operation_duration_seconds))")
            old = _by_operation(classic, f"histogram_quantile({q}, sum by (operation_type, le) "
                                         "(pggit_operation_duration_seconds_bucket))")
            for op, _, _ in OPERATIONS:
                want = exact[(op, q)]
                error = got[op] / want - 1
                worst = max(worst, abs(error))
                lines.append(f"{op:<14} {q:>5} {want:>10.6f} {got[op]:>10.6f} {error:>+7.1%} "
                             f"{old[op]:>10.6f} {old[op] / want - 1:>+7.1%}")
        print("\n" + "\n".join(lines))
        assert worst <= TOLERANCE, "\n".join(lines)


def test_native_rules_and_dashboards_answer_from_the_real_prometheus(
        pggit_dsn: str, run_exporter, tmp_path: Path) -> None:
    """The rules rendered with `native_histograms: true` all evaluate, their per-operation
    p50/p90/p99 are within 5 % of SQL over the rows of the window, and every query of the
    native dashboards runs without an error."""
    rules = native_rule_files(tmp_path)
    _write_durations(pggit_dsn, rows=1, seed=1)
    exporter = run_exporter(pggit_dsn)
    wait_for(lambda: exporter.poller.caught_up, what="the exporter to read the first rows")
    config = write_yaml(tmp_path / "prometheus.yml", {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(p) for p in rules],
        "scrape_configs": [{"job_name": "pggit-exporter", "static_configs": [
            {"targets": [f"127.0.0.1:{exporter.port}"]}]}]})
    with NativePrometheus(config, tmp_path) as native:
        native.wait_ready()
        wait_for(lambda: len(_by_operation(native, "histogram_count(sum by (operation_type) "
                                                   "(pggit_operation_duration_seconds))"))
                 == len(OPERATIONS), timeout=60, what="the first rows in Prometheus")
        with psycopg.connect(pggit_dsn) as conn:
            (first_rows,) = conn.execute(
                "SELECT max(metric_id) FROM pggit.performance_metrics").fetchone()
        _write_durations(pggit_dsn)
        exact = _exact(pggit_dsn, first_rows)
        recorded = "operation_type:pggit_operation_duration_seconds:p{}_5m"
        wait_for(lambda: all(
            abs(_by_operation(native, recorded.format(round(q * 100)))[op] / exact[(op, q)] - 1)
            <= TOLERANCE for q in QUANTILES for op, _, _ in OPERATIONS),
            timeout=90, what="recorded native quantiles within 5 % of SQL")
        health = native.api("rules")["data"]["groups"]
        bad = [(r["name"], r.get("lastError")) for g in health for r in g["rules"]
               if r["health"] != "ok"]
        assert not bad
        failed = []
        for name, panel, target in targets(render_native()):
            answer = native.api("query", query=substitute(target["expr"]))
            if answer.get("status") != "success":
                failed.append((name, panel["title"], answer.get("error")))
        assert not failed
