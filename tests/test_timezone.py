"""Times are right when the server is not on UTC.

pgGit writes `timestamp without time zone` from CURRENT_TIMESTAMP, i.e. local time in the
writer's session zone. The expected Unix times below come from the database itself
(`extract(epoch FROM now())` in the writer's own transaction, which is what CURRENT_TIMESTAMP
records), so no test compares against this machine's clock.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from tests.exporter_fixtures import InProcess, total, wait_for

NEW_YORK = "America/New_York"
KOLKATA = "Asia/Kolkata"
HOUR = 3600.0


def write_with_now(dsn: str, statement: str, zone: str | None = None) -> float:
    """Run a pgGit writer in one transaction; returns that transaction's now() as Unix time."""
    kwargs: dict[str, Any] = {"options": f"-c TimeZone={zone}"} if zone else {}
    with psycopg.connect(dsn, **kwargs) as conn:
        now = conn.execute("SELECT extract(epoch FROM now())::float8").fetchone()[0]
        conn.execute(statement)
    return now


def workload(dsn: str, zone: str | None = None) -> tuple[float, float]:
    """Ten samples, a baseline, then one violation that makes pgGit write an alert."""
    for i in range(10):
        write_with_now(dsn, f"SELECT pggit.record_performance_metric('commit', {1000 + i})", zone)
    calculated = write_with_now(dsn, "SELECT pggit.calculate_performance_baseline('commit')",
                                zone)
    alerted = write_with_now(dsn, "SELECT pggit.record_performance_metric('commit', 900000)",
                             zone)
    return calculated, alerted


def gauges_for(exporter: InProcess) -> dict:
    return wait_for(
        lambda: (s := exporter.samples()) and
        total(s, "pggit_operation_duration_seconds_count") == 11 and
        total(s, "pggit_alerts_open") == 1 and
        total(s, "pggit_baseline_samples") == 10 and s,
        what="rows, baseline and alert on /metrics")


def assert_times(samples: dict, calculated: float, alerted: float) -> None:
    got_baseline = total(samples, "pggit_baseline_calculated_timestamp_seconds",
                         operation_type="commit", branch="")
    got_alert = total(samples, "pggit_alerts_oldest_open_timestamp_seconds",
                      operation_type="commit")
    assert got_baseline == pytest.approx(calculated, abs=1.0)
    assert got_alert == pytest.approx(alerted, abs=1.0)
    lag = total(samples, "pggit_exporter_lag_seconds", table="performance_metrics")
    assert 0 <= lag < HOUR, f"lag {lag}s: timestamps read in the wrong zone"


def test_times_are_unix_time_on_a_new_york_server(
        tz_pggit_dsn: str, run_exporter: Callable[..., InProcess]) -> None:
    exporter = run_exporter(tz_pggit_dsn)
    wait_for(lambda: exporter.poller.caught_up, what="the first poll")
    calculated, alerted = workload(tz_pggit_dsn)
    assert_times(gauges_for(exporter), calculated, alerted)


def test_timezone_key_overrides_the_server_zone(
        tz_pggit_dsn: str, run_exporter: Callable[..., InProcess]) -> None:
    """Writers in Kolkata on a New York server: only the configured zone reads them right."""
    exporter = run_exporter(tz_pggit_dsn, database={"timezone": KOLKATA})
    wait_for(lambda: exporter.poller.caught_up, what="the first poll")
    calculated, alerted = workload(tz_pggit_dsn, KOLKATA)
    assert_times(gauges_for(exporter), calculated, alerted)


def test_server_zone_is_really_not_utc(tz_pggit_dsn: str) -> None:
    """Guards the two tests above: on a UTC server they would pass without proving anything."""
    with psycopg.connect(tz_pggit_dsn) as conn:
        assert conn.execute("SHOW TimeZone").fetchone()[0] == NEW_YORK
        offset = conn.execute(
            "SELECT extract(epoch FROM localtimestamp - now() AT TIME ZONE 'UTC')").fetchone()[0]
    assert offset <= -4 * HOUR


def test_lag_is_known_right_after_backfill(
        tz_pggit_dsn: str, run_exporter: Callable[..., InProcess]) -> None:
    workload(tz_pggit_dsn)
    exporter = run_exporter(tz_pggit_dsn)
    samples = gauges_for(exporter)
    assert ("pggit_exporter_lag_seconds",
            (("database", "main"), ("table", "performance_metrics"))) in samples
