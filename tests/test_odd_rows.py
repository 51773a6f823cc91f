"""Odd values pgGit's own constraints accept never stop a reader.

Timestamps accept 'infinity', '-infinity' and year 1; numerics without infinity still accept
'NaN' (and 'NaN' > 0 is true, so it passes the CHECKs). Each row below is inserted into the
deployed schema as it stands, with no constraint loosened; a normal row written after it must
be counted as usual, and the odd one mapped or counted in pggit_exporter_invalid_rows_total.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from exporter.poller import state_file
from tests.exporter_fixtures import InProcess, db_count, total, wait_for, write_config
from tests.test_bad_input import counted, ready, record

METRIC = """INSERT INTO pggit.performance_metrics (operation_type, duration_microseconds,
              duration_ms, start_time, end_time, user_name, period_start, recorded_at,
              cpu_microseconds, rows_affected)
            VALUES ('odd', 2000, 2, %(start)s, %(end)s, 'tester', %(start)s, %(at)s,
                    %(cpu)s, %(rows)s)"""


def odd_metric(dsn: str, at: str = "now", start: str = "-infinity", end: str = "infinity",
               cpu: int | None = None, rows: int | None = None) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(METRIC, {"at": at, "start": start, "end": end, "cpu": cpu, "rows": rows})


def invalid(samples: dict, table: str, reason: str) -> float:
    return total(samples, "pggit_exporter_invalid_rows_total", table=table, reason=reason)


def healthy(exporter: InProcess) -> None:
    """Nothing failed, and the checkpoint on disk is valid JSON (infinity would not be)."""
    samples = exporter.samples()
    assert total(samples, "pggit_exporter_errors_total", stage="read") == 0
    assert total(samples, "pggit_exporter_errors_total", stage="checkpoint") == 0
    assert total(samples, "pggit_exporter_collector_failing") == 0
    assert total(samples, "pggit_up") == 1
    path = state_file(exporter.cfg.state_dir, "main")
    json.loads(path.read_text())


@pytest.mark.parametrize("at", ["infinity", "-infinity"])
def test_metric_recorded_at_infinity_is_counted_and_the_rows_after_it_are_read(
        pggit_dsn: str, run_exporter: Callable[..., InProcess], at: str) -> None:
    exporter = run_exporter(pggit_dsn)
    ready(exporter)
    odd_metric(pggit_dsn, at=at)
    record(pggit_dsn, "commit", 1000)
    samples = counted(exporter, 2)
    assert invalid(samples, "performance_metrics", "not_finite") == 1
    lag = total(samples, "pggit_exporter_lag_seconds", table="performance_metrics")
    assert 0 <= lag < 3600
    record(pggit_dsn, "commit", 1000)
    counted(exporter, 3)
    healthy(exporter)


def test_year_one_and_infinite_start_end_times_are_mapped_as_usual(
        pggit_dsn: str, run_exporter: Callable[..., InProcess]) -> None:
    exporter = run_exporter(pggit_dsn)
    ready(exporter)
    odd_metric(pggit_dsn, at="0001-01-01 00:00:00", start="0001-01-01", end="infinity")
    record(pggit_dsn, "commit", 1000)
    samples = counted(exporter, 2)
    assert total(samples, "pggit_exporter_invalid_rows_total") == 0
    assert total(samples, "pggit_operation_duration_seconds_count", operation_type="odd") == 1
    healthy(exporter)


def test_negative_cpu_and_rows_are_counted_as_invalid_and_the_duration_kept(
        pggit_dsn: str, run_exporter: Callable[..., InProcess]) -> None:
    exporter = run_exporter(pggit_dsn)
    ready(exporter)
    odd_metric(pggit_dsn, cpu=-5, rows=-7)
    record(pggit_dsn, "commit", 1000, cpu=3000, rows=2)
    samples = counted(exporter, 2)
    assert invalid(samples, "performance_metrics", "negative") == 2
    assert total(samples, "pggit_operation_cpu_seconds_total") == 0.003
    assert total(samples, "pggit_operation_rows_affected_total") == 2
    healthy(exporter)


def test_odd_metric_rows_count_the_same_on_backfill_as_when_read_live(
        pggit_dsn: str, run_exporter: Callable[..., InProcess]) -> None:
    for at in ("infinity", "-infinity", "0001-01-01"):
        odd_metric(pggit_dsn, at=at, cpu=-1)
    record(pggit_dsn, "commit", 1000)
    exporter = run_exporter(pggit_dsn)
    samples = counted(exporter, 4)
    assert invalid(samples, "performance_metrics", "not_finite") == 2
    assert invalid(samples, "performance_metrics", "negative") == 3
    assert total(samples, "pggit_operation_cpu_seconds_total") == 0
    healthy(exporter)


def test_nan_baseline_multiplier_judges_no_violation_like_pggit(
        pggit_dsn: str, run_exporter: Callable[..., InProcess]) -> None:
    with psycopg.connect(pggit_dsn, autocommit=True) as conn:
        conn.execute(
            """INSERT INTO pggit.performance_baselines (operation_type, baseline_date,
                   calculation_timestamp, sample_count, min_microseconds, max_microseconds,
                   p50_microseconds, p75_microseconds, p90_microseconds, p95_microseconds,
                   p99_microseconds, mean_microseconds, stddev_microseconds,
                   alert_threshold_multiplier)
               VALUES ('commit', current_date, localtimestamp - interval '1 hour', 10, 1, 10,
                       5, 6, 7, 8, 9, 'NaN', 'NaN', 'NaN')""")
    record(pggit_dsn, "commit", 5000)
    exporter = run_exporter(pggit_dsn)
    samples = counted(exporter, 1)
    record(pggit_dsn, "commit", 6000)
    samples = counted(exporter, 2)
    assert total(samples, "pggit_operation_baseline_violations_total") == 0
    alerts = db_count(pggit_dsn, "SELECT count(*) FROM pggit.performance_alerts")
    assert alerts == 0, "pgGit itself never alerts on a NaN threshold"
    healthy(exporter)


def _metric_id(conn: psycopg.Connection) -> int:
    conn.execute("SELECT pggit.record_performance_metric('commit', 1000)")
    return conn.execute("SELECT max(metric_id) FROM pggit.performance_metrics").fetchone()[0]


def test_alert_created_at_infinity_is_counted_and_later_alerts_read(
        pggit_dsn: str, run_exporter: Callable[..., InProcess]) -> None:
    exporter = run_exporter(pggit_dsn)
    ready(exporter)
    with psycopg.connect(pggit_dsn, autocommit=True) as conn:
        metric_id = _metric_id(conn)
        for at in ("infinity", "-infinity", "now"):
            conn.execute("INSERT INTO pggit.performance_alerts (metric_id, operation_type,"
                         " alert_type, actual_duration_microseconds, created_at)"
                         " VALUES (%s, 'commit', 'THRESHOLD_EXCEEDED', 5000, %s)",
                         (metric_id, at))
    samples = wait_for(lambda: (s := exporter.samples()) and
                       total(s, "pggit_alerts_total") == 3 and s, what="3 alerts")
    assert invalid(samples, "performance_alerts", "not_finite") == 2
    wait_for(lambda: total(exporter.samples(), "pggit_alerts_open") == 3, what="open gauge")
    healthy(exporter)


def test_notification_queue_with_infinite_created_at_keeps_its_gauges(
        pggit_dsn: str, run_exporter: Callable[..., InProcess]) -> None:
    with psycopg.connect(pggit_dsn, autocommit=True) as conn:
        for at in ("infinity", "-infinity", "0001-01-01"):
            conn.execute("INSERT INTO pggit.alert_notification_queue (message_body, created_at)"
                         " VALUES ('x', %s)", (at,))
    exporter = run_exporter(pggit_dsn)
    samples = wait_for(lambda: (s := exporter.samples()) and
                       total(s, "pggit_notification_queue_depth", status="pending") == 3 and s,
                       what="the queue depth")
    age = total(samples, "pggit_notification_queue_oldest_pending_age_seconds")
    assert age > 60 * 365 * 86400, "the year-1 row is the oldest finite one"
    healthy(exporter)


def test_nan_baseline_change_is_counted_as_invalid(
        pggit_dsn: str, run_exporter: Callable[..., InProcess]) -> None:
    exporter = run_exporter(pggit_dsn)
    ready(exporter)
    with psycopg.connect(pggit_dsn, autocommit=True) as conn:
        for change in ("NaN", "12.5"):
            conn.execute("INSERT INTO pggit.performance_baseline_history (operation_type,"
                         " percent_change, calculated_at) VALUES ('commit', %s, 'infinity')",
                         (change,))
    samples = wait_for(lambda: (s := exporter.samples()) and
                       total(s, "pggit_baseline_changes_total") == 1 and s,
                       what="the finite change")
    assert total(samples, "pggit_baseline_changes_total", direction="degraded") == 1
    wait_for(lambda: invalid(exporter.samples(), "performance_baseline_history",
                             "not_finite") == 3, what="NaN change and two infinite times")
    healthy(exporter)


def test_negative_delivery_time_and_infinite_times_in_the_later_tables(
        pggit_dsn: str, run_exporter: Callable[..., InProcess]) -> None:
    exporter = run_exporter(pggit_dsn)
    ready(exporter)
    with psycopg.connect(pggit_dsn, autocommit=True) as conn:
        metric_id = _metric_id(conn)
        conn.execute("INSERT INTO pggit.alert_notification_log (webhook_type, status,"
                     " delivery_time_ms, sent_at) VALUES ('slack', 'sent', -20, '-infinity'),"
                     " ('slack', 'sent', 30, localtimestamp)")
        conn.execute("INSERT INTO pggit.performance_anomalies (metric_id, operation_type,"
                     " anomaly_type, severity, z_score, detected_at) VALUES"
                     " (%s, 'commit', 'COMBINED', 'INFO', 'Infinity', 'infinity'),"
                     " (%s, 'commit', 'COMBINED', 'INFO', 'NaN', localtimestamp)",
                     (metric_id, metric_id))
        conn.execute("INSERT INTO pggit.scheduled_job_execution (job_name, cron_schedule,"
                     " execution_start, execution_end, status) VALUES"
                     " ('cleanup', '* * * * *', '-infinity', 'infinity', 'SUCCESS')")
    samples = wait_for(lambda: (s := exporter.samples()) and
                       total(s, "pggit_notification_deliveries_total") == 2 and
                       total(s, "pggit_anomalies_total") == 2 and
                       total(s, "pggit_scheduled_job_runs_total") == 1 and s,
                       what="every row read")
    assert total(samples, "pggit_notification_delivery_seconds_total") == 0.03
    assert invalid(samples, "alert_notification_log", "negative") == 1
    assert invalid(samples, "alert_notification_log", "not_finite") == 1
    assert invalid(samples, "performance_anomalies", "not_finite") == 1
    assert invalid(samples, "scheduled_job_execution", "not_finite") == 1
    healthy(exporter)


def test_invalid_rows_are_counted_once_across_a_restart(pggit_dsn: str, tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "cfg.yml", pggit_dsn, tmp_path / "state")
    first = InProcess(cfg)
    try:
        ready(first)
        odd_metric(pggit_dsn, at="infinity")
        counted(first, 1)
    finally:
        first.stop()
    second = InProcess(cfg)
    try:
        record(pggit_dsn, "commit", 1000)
        samples = counted(second, 2)
        assert invalid(samples, "performance_metrics", "not_finite") == 1
    finally:
        second.stop()
