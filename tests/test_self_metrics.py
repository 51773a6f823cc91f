"""The exporter's own metrics are rendered from current state: what went away disappears, and a
reader that keeps failing says so everywhere instead of looking healthy while counting nothing.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import psycopg
from prometheus_client import CollectorRegistry, generate_latest

from exporter.counts import INVALID, OVERFLOW, Counts
from exporter.expose.self_metrics import SelfMetrics
from tests.exporter_fixtures import InProcess, parse, total, wait_for, write_config
from tests.test_bad_input import counted, enabled, ready, record


def series(samples: dict, name: str, **labels: str) -> list:
    return [k for k in samples
            if k[0] == name and all((a, b) in k[1] for a, b in labels.items())]


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_a_dropped_tables_series_disappear(
        pggit_dsn: str, run_exporter: Callable[..., InProcess]) -> None:
    record(pggit_dsn)
    with psycopg.connect(pggit_dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO pggit.performance_anomalies (metric_id, operation_type,"
                     " anomaly_type, severity, detected_at) SELECT max(metric_id), 'commit',"
                     " 'COMBINED', 'INFO', d FROM pggit.performance_metrics,"
                     " unnest(ARRAY[localtimestamp, 'infinity']) AS d GROUP BY d")
    exporter = run_exporter(pggit_dsn)
    samples = exporter.caught_up_with(pggit_dsn)
    for name in ("pggit_exporter_lag_seconds", "pggit_exporter_pending_gaps",
                 "pggit_exporter_rows_read_total", "pggit_exporter_invalid_rows_total"):
        assert series(samples, name, table="performance_anomalies"), name
    with psycopg.connect(pggit_dsn, autocommit=True) as conn:
        conn.execute("DROP TABLE pggit.performance_anomalies CASCADE")
    record(pggit_dsn)
    samples = wait_for(lambda: (s := exporter.caught_up_with(pggit_dsn)) and
                       enabled(s, "performance_anomalies") == 0 and s,
                       what="the collector to be disabled")
    for name in ("pggit_exporter_lag_seconds", "pggit_exporter_pending_gaps",
                 "pggit_exporter_rows_read_total", "pggit_exporter_collector_failing",
                 "pggit_exporter_invalid_rows_total"):
        assert not series(samples, name, table="performance_anomalies"), name
    assert series(samples, "pggit_exporter_lag_seconds", table="performance_metrics")


def test_a_disabled_collectors_series_are_absent(
        pggit_dsn: str, run_exporter: Callable[..., InProcess]) -> None:
    exporter = run_exporter(pggit_dsn,
                            database={"disabled_collectors": ["performance_alerts"]})
    record(pggit_dsn)
    samples = exporter.caught_up_with(pggit_dsn)
    assert enabled(samples, "performance_alerts") == 0
    assert not series(samples, "pggit_exporter_collector_failing", collector="performance_alerts")
    for name in ("pggit_exporter_lag_seconds", "pggit_exporter_pending_gaps",
                 "pggit_exporter_rows_read_total"):
        assert not series(samples, name, table="performance_alerts"), name
        assert series(samples, name, table="performance_metrics"), name


def test_a_removed_databases_series_disappear() -> None:
    registry = CollectorRegistry()
    sm = SelfMetrics(registry)
    for db in ("a", "b"):
        health = sm.database(db)
        health.contact(True)
        health.collectors({"performance_metrics": True, "operation_traces": db == "a"})
        health.polled(rows={"performance_metrics": 3}, pending={"performance_metrics": 0},
                      lag={"performance_metrics": 1.5}, took=0.01, at=1.0,
                      counts=Counts({OVERFLOW: {("branch",): 2.0},
                                     INVALID: {("performance_metrics", "null"): 1.0}}))
        sm["pggit_exporter_spans_total"].labels(database=db, result="exported").inc(4)
    sm["pggit_exporter_label_overflow_total"].labels("a", "branch").inc(1)
    sm.database("a").failing({"operation_traces": "boom"})
    before = parse(generate_latest(registry).decode())
    assert total(before, "pggit_exporter_collector_enabled", database="a") == 2
    assert total(before, "pggit_exporter_collector_failing", database="a",
                 collector="operation_traces") == 1
    assert total(before, "pggit_exporter_label_overflow_total", database="a") == 3
    assert total(before, "pggit_exporter_poll_duration_seconds_count", database="a") == 1
    sm.remove("a")
    after = parse(generate_latest(registry).decode())
    assert [k for k in after if ("database", "a") in k[1]] == []
    assert total(after, "pggit_up", database="b") == 1
    assert total(after, "pggit_exporter_spans_total", database="b") == 4


BROKEN_VIEW = """
ALTER TABLE pggit.performance_anomalies RENAME TO anomalies_data;
CREATE VIEW pggit.performance_anomalies AS
  SELECT anomaly_id, operation_type, anomaly_type, detected_at,
         CASE WHEN (SELECT broken FROM pggit.test_switch) THEN (1 / (anomaly_id - anomaly_id))::text
              ELSE severity END AS severity
  FROM pggit.anomalies_data;
"""


def test_a_reader_that_keeps_failing_shows_everywhere_and_the_others_go_on(
        pggit_dsn: str, run_exporter: Callable[..., InProcess]) -> None:
    """A view that divides by zero stands for any read that fails but for the connection."""
    with psycopg.connect(pggit_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE pggit.test_switch (broken boolean)")
        conn.execute("INSERT INTO pggit.test_switch VALUES (true)")
        conn.execute(BROKEN_VIEW)
        conn.execute("SELECT pggit.record_performance_metric('commit', 1000)")
        conn.execute("INSERT INTO pggit.anomalies_data (metric_id, operation_type,"
                     " anomaly_type, severity) SELECT max(metric_id), 'commit', 'COMBINED',"
                     " 'INFO' FROM pggit.performance_metrics")
    exporter = run_exporter(pggit_dsn, retry_backoff_max="1s")
    samples = wait_for(lambda: (s := exporter.samples()) and total(
        s, "pggit_exporter_collector_failing", collector="performance_anomalies") == 1 and s,
        what="the collector to show as failing")
    assert total(samples, "pggit_exporter_collector_failing", collector="performance_metrics") == 0
    record(pggit_dsn)
    counted(exporter, 2)
    code, body = get(exporter.port, "/readyz")
    assert code == 503
    failing = json.loads(body)["databases"][0]["collectors_failing"]
    assert "division by zero" in failing["performance_anomalies"]
    _, page = get(exporter.port, "/")
    assert "performance_anomalies FAILING" in page and "division by zero" in page
    assert total(exporter.samples(), "pggit_exporter_errors_total", stage="read") >= 1

    with psycopg.connect(pggit_dsn, autocommit=True) as conn:
        conn.execute("UPDATE pggit.test_switch SET broken = false")
    samples = wait_for(lambda: (s := exporter.samples()) and
                       total(s, "pggit_anomalies_total") == 1 and s, what="the anomaly read")
    assert total(samples, "pggit_exporter_collector_failing") == 0
    ready(exporter)
    wait_for(lambda: get(exporter.port, "/readyz")[0] == 200, what="ready again")


def test_a_collector_disabled_after_a_restart_hides_its_counted_series(
        pggit_dsn: str, tmp_path: Path) -> None:
    with psycopg.connect(pggit_dsn, autocommit=True) as conn:
        conn.execute("SELECT pggit.record_performance_metric('commit', 1000)")
        conn.execute("INSERT INTO pggit.performance_alerts (metric_id, operation_type,"
                     " alert_type, actual_duration_microseconds) SELECT max(metric_id),"
                     " 'commit', 'THRESHOLD_EXCEEDED', 5000 FROM pggit.performance_metrics")
    first = InProcess(write_config(tmp_path / "a.yml", pggit_dsn, tmp_path / "state"))
    try:
        assert total(first.caught_up_with(pggit_dsn), "pggit_alerts_total") == 1
    finally:
        first.stop()
    second = InProcess(write_config(tmp_path / "b.yml", pggit_dsn, tmp_path / "state",
                                    database={"disabled_collectors": ["performance_alerts"]}))
    try:
        samples = second.caught_up_with(pggit_dsn)
        assert not series(samples, "pggit_alerts_total")
        assert total(samples, "pggit_operation_duration_seconds_count") == 1
    finally:
        second.stop()
