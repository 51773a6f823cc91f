"""Hostile and broken surroundings: least privilege, no database, missing tables, odd values.

Each test builds the bad situation for real (a role, a dead port, a dropped table, a loosened
constraint) and checks what the exporter shows on /metrics and in its logs.
"""

from __future__ import annotations

import io
import json
import logging
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from exporter import logs
from exporter.labels import OTHER, shorten
from tests.exporter_fixtures import (
    ExporterProcess,
    InProcess,
    free_port,
    scrape,
    total,
    wait_for,
    write_config,
)
from tests.pg_fixtures import create_select_only_role

CORE_COLLECTORS = {"performance_metrics", "performance_alerts", "merge_performance_metrics",
                   "performance_baselines", "performance_operation_types"}
LATER_COLLECTORS = {"performance_anomalies", "alert_notification_queue",
                    "alert_notification_log", "baseline_recalc_execution",
                    "performance_baseline_history", "scheduled_job_execution", "alert_snooze",
                    "performance_correlations"}
OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"


def record(dsn: str, op: str = "commit", us: int = 1000, branch_id: int | None = None,
           cpu: int | None = None, rows: int | None = None) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "SELECT pggit.record_performance_metric(%s, %s, p_branch_id => %s,"
            " p_cpu_microseconds => %s, p_rows_affected => %s)", (op, us, branch_id, cpu, rows))


def enabled(samples: dict, collector: str) -> float:
    return total(samples, "pggit_exporter_collector_enabled", collector=collector)


def ready(exporter: InProcess) -> None:
    """Wait for the first successful poll, so later rows are read incrementally."""
    wait_for(lambda: exporter.poller.caught_up, what="the first poll")


def counted(exporter: InProcess, n: float) -> dict:
    """Wait until the histogram holds `n` observations; returns the samples."""
    return wait_for(
        lambda: (s := exporter.samples()) and
        total(s, "pggit_operation_duration_seconds_count") == n and s,
        what=f"{n} observations")


# --- least privilege -------------------------------------------------------------------------


def test_select_only_role_reads_everything(pggit_dsn: str, tmp_path: Path,
                                           run_exporter: Callable[..., InProcess]) -> None:
    role = f"pggit_ro_{uuid.uuid4().hex[:8]}"
    params = conninfo_to_dict(create_select_only_role(pggit_dsn, role, "ro-secret"))
    secret = tmp_path / "password"
    secret.write_text(params.pop("password") + "\n")
    for _ in range(3):
        record(pggit_dsn)
    exporter = run_exporter(make_conninfo(**params), database={"password_file": str(secret)})
    samples = exporter.caught_up_with(pggit_dsn)
    assert {c for c in CORE_COLLECTORS | LATER_COLLECTORS if enabled(samples, c) != 1} == set()
    assert total(samples, "pggit_exporter_errors_total") == 0
    assert total(samples, "pggit_up") == 1


def test_role_without_select_on_a_table_disables_only_that_collector(
        pggit_dsn: str, tmp_path: Path, run_exporter: Callable[..., InProcess]) -> None:
    role = f"pggit_ro_{uuid.uuid4().hex[:8]}"
    params = conninfo_to_dict(create_select_only_role(pggit_dsn, role, "ro-secret"))
    with psycopg.connect(pggit_dsn, autocommit=True) as conn:
        conn.execute(f'REVOKE SELECT ON pggit.performance_correlations FROM "{role}"')
    secret = tmp_path / "password"
    secret.write_text(params.pop("password"))
    record(pggit_dsn)
    exporter = run_exporter(make_conninfo(**params), database={"password_file": str(secret)})
    samples = exporter.caught_up_with(pggit_dsn)
    assert enabled(samples, "performance_correlations") == 0
    assert enabled(samples, "performance_anomalies") == 1


# --- no database -----------------------------------------------------------------------------


def test_unreachable_database_keeps_serving_with_up_zero(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "cfg.yml", f"host=127.0.0.1 port={free_port()} dbname=x user=x",
                       tmp_path / "state", retry_backoff_max="500ms",
                       database={"connect_timeout": "1s"})
    proc = ExporterProcess(cfg)
    try:
        first = wait_for(lambda: (s := proc.samples()) and
                         total(s, "pggit_exporter_errors_total", stage="connect") >= 1 and s,
                         what="a connect error")
        later = wait_for(lambda: (s := proc.samples()) and
                         total(s, "pggit_exporter_errors_total", stage="connect") >
                         total(first, "pggit_exporter_errors_total", stage="connect") and s,
                         what="retries")
        assert proc.proc.poll() is None
        assert total(later, "pggit_up", database="main") == 0
        assert total(later, "pggit_exporter_errors_total", stage="read") == 0
        assert total(later, "pggit_exporter_build_info") == 1
    finally:
        proc.close()


# --- missing tables --------------------------------------------------------------------------


def test_missing_later_tables_disable_their_collectors_only(
        pggit_core_dsn: str, run_exporter: Callable[..., InProcess],
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="exporter")
    for _ in range(2):
        record(pggit_core_dsn)
    exporter = run_exporter(pggit_core_dsn)
    samples = exporter.caught_up_with(pggit_core_dsn)
    assert {c: enabled(samples, c) for c in LATER_COLLECTORS} == dict.fromkeys(
        LATER_COLLECTORS, 0)
    assert {c: enabled(samples, c) for c in CORE_COLLECTORS} == dict.fromkeys(CORE_COLLECTORS, 1)
    record(pggit_core_dsn)
    exporter.caught_up_with(pggit_core_dsn)
    disabled = [r.collector for r in caplog.records if r.getMessage() == "collector disabled"]
    assert sorted(disabled) == sorted(LATER_COLLECTORS)
    assert all("not found" in r.reason for r in caplog.records
               if r.getMessage() == "collector disabled")


def test_table_dropped_while_running_disables_it_and_core_goes_on(
        pggit_dsn: str, run_exporter: Callable[..., InProcess]) -> None:
    record(pggit_dsn)
    exporter = run_exporter(pggit_dsn)
    assert enabled(exporter.caught_up_with(pggit_dsn), "performance_anomalies") == 1
    with psycopg.connect(pggit_dsn, autocommit=True) as conn:
        conn.execute("DROP TABLE pggit.performance_anomalies CASCADE")
    record(pggit_dsn)
    samples = wait_for(lambda: (s := exporter.caught_up_with(pggit_dsn)) and
                       enabled(s, "performance_anomalies") == 0 and s,
                       what="the collector to be disabled")
    assert total(samples, "pggit_operation_duration_seconds_count") == 2
    assert total(samples, "pggit_up") == 1


# --- NULL, zero and huge values ----------------------------------------------------------------


def loosen_performance_metrics(dsn: str) -> None:
    """Drop the deployed checks, as a looser (older or hand-made) deployment would lack them."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("""ALTER TABLE pggit.performance_metrics
                          ALTER COLUMN duration_microseconds DROP NOT NULL,
                          DROP CONSTRAINT chk_duration_positive,
                          DROP CONSTRAINT chk_duration_consistency,
                          DROP CONSTRAINT chk_time_order""")


def insert_raw(dsn: str, us: int | None, op: str = "raw") -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            """INSERT INTO pggit.performance_metrics (operation_type, duration_microseconds,
                   duration_ms, start_time, end_time, user_name, period_start)
               VALUES (%s, %s, 0, localtimestamp, localtimestamp, 'tester',
                       date_trunc('day', localtimestamp))""", (op, us))


def test_null_cpu_and_rows_leave_those_counters_alone(
        pggit_dsn: str, run_exporter: Callable[..., InProcess]) -> None:
    exporter = run_exporter(pggit_dsn)
    ready(exporter)
    record(pggit_dsn, "commit", 1000, cpu=5000, rows=7)
    record(pggit_dsn, "commit", 1000, cpu=None, rows=None)
    samples = counted(exporter, 2)
    assert total(samples, "pggit_operation_cpu_seconds_total", operation_type="commit") == 0.005
    assert total(samples, "pggit_operation_rows_affected_total", operation_type="commit") == 7
    assert total(samples, "pggit_exporter_invalid_rows_total") == 0


def test_null_duration_is_skipped_and_counted_as_invalid(
        pggit_dsn: str, run_exporter: Callable[..., InProcess]) -> None:
    loosen_performance_metrics(pggit_dsn)
    exporter = run_exporter(pggit_dsn)
    ready(exporter)
    insert_raw(pggit_dsn, None)
    insert_raw(pggit_dsn, 2000)
    samples = counted(exporter, 1)
    assert total(samples, "pggit_operation_duration_seconds_sum") == 0.002
    wait_for(lambda: total(exporter.samples(), "pggit_exporter_invalid_rows_total",
                           reason="null") == 1, what="the invalid row to be counted")


def test_zero_duration_lands_in_the_first_bucket(
        pggit_dsn: str, run_exporter: Callable[..., InProcess]) -> None:
    loosen_performance_metrics(pggit_dsn)
    exporter = run_exporter(pggit_dsn)
    ready(exporter)
    insert_raw(pggit_dsn, 0)
    samples = counted(exporter, 1)
    assert total(samples, "pggit_operation_duration_seconds_bucket", le="0.0001") == 1
    assert total(samples, "pggit_operation_duration_seconds_sum") == 0


@pytest.mark.parametrize("us", [3_600_000_000_000, 9_223_372_036_854_775_807],
                         ids=["six-weeks", "max-bigint"])
def test_huge_duration_lands_only_in_inf(pggit_dsn: str, run_exporter: Callable[..., InProcess],
                                         us: int) -> None:
    loosen_performance_metrics(pggit_dsn)
    exporter = run_exporter(pggit_dsn)
    ready(exporter)
    insert_raw(pggit_dsn, us)
    samples = counted(exporter, 1)
    assert total(samples, "pggit_operation_duration_seconds_bucket", le="60.0") == 0
    assert total(samples, "pggit_operation_duration_seconds_bucket", le="+Inf") == 1
    assert total(samples, "pggit_operation_duration_seconds_sum") == pytest.approx(us / 1e6)


def test_backfill_buckets_zero_and_huge_like_the_incremental_reader(
        pggit_dsn: str, run_exporter: Callable[..., InProcess]) -> None:
    loosen_performance_metrics(pggit_dsn)
    for us in (0, 50, 9_223_372_036_854_775_807):
        insert_raw(pggit_dsn, us)
    samples = counted(run_exporter(pggit_dsn), 3)
    assert total(samples, "pggit_operation_duration_seconds_bucket", le="0.0001") == 2
    assert total(samples, "pggit_operation_duration_seconds_bucket", le="60.0") == 2
    assert total(samples, "pggit_operation_duration_seconds_bucket", le="+Inf") == 3


# --- hostile label values ----------------------------------------------------------------------

HOSTILE = [
    'say "hi"',
    "back\\slash\\",
    "line\nbreak",
    "tab\there",
    "ünïcødé ✓ 漢字 🚀",
    "} # EOF",
    'a="b",c',
]


def hostile_exporter(dsn: str, run_exporter: Callable[..., InProcess]) -> tuple[InProcess, set]:
    long_ops = ["x" * 10_000 + "-one", "x" * 10_000 + "-two"]
    exporter = run_exporter(dsn)
    ready(exporter)
    with psycopg.connect(dsn, autocommit=True) as conn:
        branch_id = conn.execute(
            "INSERT INTO pggit.branches (branch_name, created_by) VALUES (%s, 'tester')"
            " RETURNING branch_id", ('feature/"quoted"\\\n✓',)).fetchone()[0]
    for op in HOSTILE + long_ops:
        record(dsn, op, 1000, branch_id=branch_id)
    counted(exporter, len(HOSTILE) + len(long_ops))
    expected = set(HOSTILE) | {shorten(op, 200) for op in long_ops}
    return exporter, expected


def op_values(families: object) -> set[str]:
    return {s.labels["operation_type"] for f in families  # type: ignore[attr-defined]
            if f.name == "pggit_operation_duration_seconds" for s in f.samples}


def test_hostile_label_values_survive_the_text_format(
        pggit_dsn: str, run_exporter: Callable[..., InProcess]) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    exporter, expected = hostile_exporter(pggit_dsn, run_exporter)
    families = list(text_string_to_metric_families(scrape(exporter.port)))
    assert op_values(families) == expected
    branches = {s.labels["branch"] for f in families
                if f.name == "pggit_operation_duration_seconds" for s in f.samples}
    assert branches == {'feature/"quoted"\\\n✓'}


def test_hostile_label_values_survive_openmetrics(
        pggit_dsn: str, run_exporter: Callable[..., InProcess]) -> None:
    exporter, expected = hostile_exporter(pggit_dsn, run_exporter)
    assert op_values(parse_openmetrics(scrape(exporter.port, OPENMETRICS))) == expected


def test_long_label_values_are_cut_with_a_hash() -> None:
    a, b = shorten("x" * 10_000 + "-one", 200), shorten("x" * 10_000 + "-two", 200)
    assert len(a) == len(b) == 200
    assert a != b
    assert a.startswith("x" * 191 + "~")


# --- the label cap -----------------------------------------------------------------------------

CAPPED_OPS = [f"op_{i}" for i in range(8)]


def cap_config(dsn: str, tmp_path: Path, name: str) -> Path:
    return write_config(tmp_path / name, dsn, tmp_path / "state", max_label_values=5,
                        database={"disabled_collectors": ["performance_operation_types"]})


def test_label_cap_folds_excess_values_into_other(
        pggit_dsn: str, run_exporter: Callable[..., InProcess]) -> None:
    exporter = run_exporter(pggit_dsn, max_label_values=5,
                            database={"disabled_collectors": ["performance_operation_types"]})
    ready(exporter)
    for op in CAPPED_OPS:
        record(pggit_dsn, op)
    record(pggit_dsn, CAPPED_OPS[-1])
    samples = counted(exporter, 9)
    by_op = {op: total(samples, "pggit_operation_duration_seconds_count", operation_type=op)
             for op in [*CAPPED_OPS, OTHER]}
    assert by_op == {**dict.fromkeys(CAPPED_OPS[:5], 1), **dict.fromkeys(CAPPED_OPS[5:], 0),
                     OTHER: 4}
    assert total(samples, "pggit_exporter_label_overflow_total",
                 label="operation_type") == 4


def test_label_cap_counts_folded_rows_on_backfill_as_when_read_live(
        pggit_dsn: str, run_exporter: Callable[..., InProcess]) -> None:
    """The backfill folds whole groups at once; the overflow counter must still count rows."""
    for op in CAPPED_OPS:
        record(pggit_dsn, op)
        record(pggit_dsn, op)
    exporter = run_exporter(pggit_dsn, max_label_values=5,
                            database={"disabled_collectors": ["performance_operation_types"]})
    samples = counted(exporter, 16)
    assert total(samples, "pggit_operation_duration_seconds_count", operation_type=OTHER) == 6
    assert total(samples, "pggit_exporter_label_overflow_total",
                 label="operation_type") == 6


def test_label_cap_counts_folded_alerts_on_backfill_one_per_alert(
        pggit_dsn: str, run_exporter: Callable[..., InProcess]) -> None:
    record(pggit_dsn, CAPPED_OPS[0])
    with psycopg.connect(pggit_dsn, autocommit=True) as conn:
        for op in CAPPED_OPS:
            conn.execute("INSERT INTO pggit.performance_alerts (metric_id, operation_type, "
                         "alert_type, actual_duration_microseconds) "
                         "SELECT (SELECT max(metric_id) FROM pggit.performance_metrics), %s, "
                         "'THRESHOLD_EXCEEDED', 5000 FROM generate_series(1, 2)", (op,))
    exporter = run_exporter(pggit_dsn, max_label_values=5,
                            database={"disabled_collectors": ["performance_operation_types"]})
    samples = wait_for(lambda: (s := exporter.samples()) and
                       total(s, "pggit_alerts_total") == 16 and s, what="16 alerts")
    assert total(samples, "pggit_alerts_total", operation_type=OTHER) == 6
    assert total(samples, "pggit_exporter_label_overflow_total", label="operation_type") == 6


def test_label_cap_mapping_is_stable_across_a_restart(pggit_dsn: str, tmp_path: Path) -> None:
    first = InProcess(cap_config(pggit_dsn, tmp_path, "a.yml"))
    try:
        ready(first)
        for op in CAPPED_OPS:
            record(pggit_dsn, op)
        counted(first, 8)
    finally:
        first.stop()
    for op in reversed(CAPPED_OPS):  # new values first: they must not take freed slots
        record(pggit_dsn, op)
    second = InProcess(cap_config(pggit_dsn, tmp_path, "b.yml"))
    try:
        samples = counted(second, 16)
        by_op = {op: total(samples, "pggit_operation_duration_seconds_count", operation_type=op)
                 for op in [*CAPPED_OPS, OTHER]}
        assert by_op == {**dict.fromkeys(CAPPED_OPS[:5], 2),
                         **dict.fromkeys(CAPPED_OPS[5:], 0), OTHER: 6}
    finally:
        second.stop()


def test_overflow_counter_counts_rows_not_gauge_refreshes(
        pggit_dsn: str, run_exporter: Callable[..., InProcess]) -> None:
    exporter = run_exporter(pggit_dsn, max_label_values=5, gauge_interval="200ms")
    ready(exporter)
    time.sleep(1.0)  # several gauge refreshes, no rows at all
    assert total(exporter.samples(), "pggit_exporter_label_overflow_total") == 0


# --- secrets never logged ----------------------------------------------------------------------

PASSWORD = "Pw-7f3a9c-never-log-me"


@pytest.mark.parametrize("log_format", ["logfmt", "json"])
@pytest.mark.parametrize("source", ["password_file", "env_dsn"])
def test_password_never_appears_in_logs(tmp_path: Path, log_format: str, source: str) -> None:
    dsn = f"host=127.0.0.1 port={free_port()} dbname=pggit user=exporter"
    secret = tmp_path / "password"
    secret.write_text(PASSWORD + "\n")
    db: dict[str, object] = {"connect_timeout": "1s"}
    env: dict[str, str] = {}
    if source == "password_file":
        db["password_file"] = str(secret)
    else:
        env["PGGIT_EXPORTER_DSN"] = f"{dsn} password={PASSWORD}"
    cfg = write_config(tmp_path / "cfg.yml", dsn, tmp_path / "state", log_format=log_format,
                       log_level="debug", retry_backoff_max="300ms", database=db)
    proc = ExporterProcess(cfg, env=env)
    try:
        wait_for(lambda: total(proc.samples(), "pggit_exporter_errors_total",
                               stage="connect") >= 2, what="connection failures")
        scrape(proc.port)
        assert proc.terminate() == 0
    finally:
        proc.close()
    lines = [ln for ln in cfg.with_suffix(".log").read_text().splitlines() if ln.strip()]
    assert any("poll failed" in ln for ln in lines)
    assert [ln for ln in lines if PASSWORD in ln] == []
    if log_format == "json":
        for line in lines:
            assert isinstance(json.loads(line), dict), line


@pytest.mark.parametrize("error", [
    f"connection failed: host=db password={PASSWORD}",
    f"connection failed: host=db password={PASSWORD} dbname=pggit",
    f"connection failed: host=db password='{PASSWORD} with space' user=x",
    f"connection failed: postgresql://exporter:{PASSWORD}@db:5432/pggit",
], ids=["at-end", "in-middle", "quoted", "uri"])
@pytest.mark.parametrize("log_format", ["logfmt", "json"])
def test_secret_inside_a_logged_value_is_scrubbed_and_the_line_stays_valid(
        error: str, log_format: str) -> None:
    """Errors can echo a connection string; the secret goes, the line keeps its format."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.JsonFormatter() if log_format == "json" else logs.LogfmtFormatter())
    logger = logging.getLogger(f"exporter.test.scrub.{log_format}")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.error("poll failed", extra={"error": error, "stage": "connect"})
    finally:
        logger.removeHandler(handler)
    line = stream.getvalue().rstrip("\n")
    assert PASSWORD not in line
    assert "\n" not in line
    if log_format == "json":
        assert json.loads(line)["stage"] == "connect"
    else:
        assert line.endswith("stage=connect")
