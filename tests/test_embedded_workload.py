"""The embedded server's lifecycle and the live workload, against real PostgreSQL."""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from exporter.demo.embedded import EmbeddedPostgres, EmbeddedPostgresError
from exporter.demo.schema import install_schema
from exporter.demo.workload import Workload
from tests.pg_fixtures import PgTestServer, create_select_only_role

Factory = Callable[..., EmbeddedPostgres]

ALL_TABLES = (
    "performance_metrics", "operation_traces", "performance_baselines", "performance_alerts",
    "merge_performance_metrics", "performance_anomalies", "alert_snooze",
    "alert_notification_queue", "alert_notification_log", "baseline_recalc_execution",
    "performance_baseline_history", "scheduled_job_execution", "performance_correlations",
)


def scalar(dsn: str, query: str) -> object:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(query).fetchone()
    assert row is not None
    return row[0]


def table_counts(dsn: str, tables: tuple[str, ...] = ALL_TABLES) -> dict[str, int]:
    with psycopg.connect(dsn) as conn:
        return {t: conn.execute(f"SELECT count(*) FROM pggit.{t}").fetchone()[0]  # type: ignore[index]
                for t in tables}


def test_start_and_restart_apply_the_configured_settings(pg_server: PgTestServer) -> None:
    pg_server.require_embedded()
    server = EmbeddedPostgres(settings={"work_mem": "8MB"})
    try:
        server.start()
        server.restart()
        dsn = server.dsn()
        assert int(scalar(dsn, "SHOW max_connections")) >= 100  # type: ignore[arg-type]
        assert scalar(dsn, "SHOW TimeZone") == "UTC"
        assert scalar(dsn, "SHOW work_mem") == "8MB"
        assert scalar(dsn, "SHOW listen_addresses") == "127.0.0.1"
        assert scalar(server.socket_dsn(), "SELECT 1") == 1
        assert server.log_path.is_file() and server.log_path.parent == server.data_dir
    finally:
        server.close()


def test_non_superusers_need_a_password_over_tcp(pggit_dsn: str, pg_server: PgTestServer
                                                 ) -> None:
    if pg_server.is_external:
        pytest.skip("authentication rules belong to the external server")
    reader = create_select_only_role(pggit_dsn, "demo_reader", "s3cret-pw")
    assert scalar(reader, "SELECT count(*) FROM pggit.branches") == 8
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(reader.replace("s3cret-pw", "wrong")).close()
    no_password = reader.replace("password=s3cret-pw", "")
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(no_password).close()


def test_select_only_role_cannot_write(pggit_dsn: str) -> None:
    reader = create_select_only_role(pggit_dsn, "demo_reader_ro", "pw-ro")
    with psycopg.connect(reader) as conn:
        conn.execute("SELECT * FROM pggit.performance_alerts, pggit.alert_snooze LIMIT 1")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT pggit.record_performance_metric('commit', 10)")
        conn.rollback()
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("DELETE FROM pggit.performance_metrics")


def test_restart_keeps_port_and_data(pg_server_factory: Factory) -> None:
    server = pg_server_factory()
    dsn = server.create_database("keep")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE t AS SELECT 1 AS x")
    port = server.port
    server.restart()
    assert server.port == port and server.running
    assert scalar(dsn, "SELECT x FROM t") == 1
    server.stop()
    assert not server.running
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(dsn, connect_timeout=2).close()
    server.start()
    assert scalar(dsn, "SELECT x FROM t") == 1


def test_kept_data_dir_starts_again_in_a_new_instance(pg_server: PgTestServer) -> None:
    """What `bench --data-dir` and a kept demo do: a second EmbeddedPostgres on the data
    directory a first one stopped and kept. Each instance has a new socket directory, which
    (under root) must be handed to the server account although initdb does not run again."""
    pg_server.require_embedded()
    parent = Path(tempfile.mkdtemp(prefix="pggit-kept-"))
    parent.chmod(0o755)  # the server account must reach the data directory below it
    data_dir = parent / "data"
    try:
        with EmbeddedPostgres(data_dir) as first:
            dsn = first.create_database("kept")
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute("CREATE TABLE t AS SELECT 42 AS x")
        assert (data_dir / "PG_VERSION").is_file()
        with EmbeddedPostgres(data_dir) as second:
            assert second.socket_dir != first.socket_dir
            assert scalar(second.dsn(dbname="kept"), "SELECT x FROM t") == 42
            assert scalar(second.socket_dsn(dbname="kept"), "SELECT x FROM t") == 42
            second.restart()
            assert scalar(second.dsn(dbname="kept"), "SELECT x FROM t") == 42
        assert (data_dir / "PG_VERSION").is_file()
    finally:
        shutil.rmtree(parent, ignore_errors=True)


def test_survives_kill(pg_server_factory: Factory) -> None:
    """SIGKILL loses no committed row, and start() works again, repeatedly."""
    server = pg_server_factory()
    dsn = server.create_database("crash")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE t (x int)")
    for i in range(3):
        victim = psycopg.connect(dsn, autocommit=True)
        victim.execute("INSERT INTO t VALUES (%s)", (i,))
        server.kill()
        assert not server.running
        with pytest.raises(psycopg.OperationalError):
            victim.execute("SELECT 1")
        victim.close()
        server.start()
        assert scalar(dsn, "SELECT count(*) FROM t") == i + 1
    assert "database system was interrupted" in server.log_path.read_text()


def test_close_is_idempotent_and_cleans_up(pg_server: PgTestServer) -> None:
    pg_server.require_embedded()
    with EmbeddedPostgres() as server:
        base, sockets = server.base_dir, server.socket_dir
        assert server.running
    assert not base.exists() and not sockets.exists()
    server.close()
    with pytest.raises(EmbeddedPostgresError):
        server.start()


def test_start_failure_reports_the_log(pg_server: PgTestServer) -> None:
    pg_server.require_embedded()
    server = EmbeddedPostgres(settings={"shared_buffers": "lots"})
    try:
        with pytest.raises(EmbeddedPostgresError, match="shared_buffers"):
            server.start()
    finally:
        server.close()


def test_server_time_zone_is_in_effect(tz_pggit_dsn: str) -> None:
    """pgGit writes local time of the session TimeZone; here New York, not UTC."""
    with psycopg.connect(tz_pggit_dsn) as conn:
        assert conn.execute("SHOW TimeZone").fetchone() == ("America/New_York",)
        metric_id = conn.execute("SELECT pggit.record_performance_metric('commit', 1000)"
                                 ).fetchone()[0]
        end, utc, local = conn.execute(
            "SELECT end_time, CURRENT_TIMESTAMP AT TIME ZONE 'UTC',"
            " CURRENT_TIMESTAMP AT TIME ZONE 'America/New_York'"
            " FROM pggit.performance_metrics WHERE metric_id = %s", (metric_id,)).fetchone()
    assert end == local
    assert utc - end in (timedelta(hours=4), timedelta(hours=5))


def test_other_time_zones(pg_server_factory: Factory) -> None:
    server = pg_server_factory(timezone="Asia/Kolkata")
    assert scalar(server.dsn(), "SHOW TimeZone") == "Asia/Kolkata"
    offset = scalar(server.dsn(), "SELECT now() AT TIME ZONE 'UTC' - LOCALTIMESTAMP")
    assert offset == timedelta(hours=-5, minutes=-30)


def wait_until(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.25)
    return predicate()


def test_workload_fills_every_table(pggit_dsn: str) -> None:
    workload = Workload(pggit_dsn, seed=7, ops_per_second=150, outlier_probability=0.03,
                        maintenance_interval=0.5)
    workload.start()
    try:
        assert workload.later_tables is True
        filled = wait_until(lambda: all(table_counts(pggit_dsn).values()), timeout=25)
        assert filled, table_counts(pggit_dsn)
    finally:
        workload.stop()
    assert not workload.running
    counts = workload.counts()
    db = table_counts(pggit_dsn)
    # Everything the workload counted was committed, and nothing else was written.
    assert db["performance_metrics"] == counts["metrics"]
    assert db["operation_traces"] == counts["spans"]
    assert db["merge_performance_metrics"] == counts["merges"]
    assert db["performance_alerts"] == counts["alerts"]
    assert counts.get("statement_errors", 0) == 0, counts
    with psycopg.connect(pggit_dsn) as conn:
        statuses = dict(conn.execute("SELECT span_status, count(*) FROM pggit.operation_traces"
                                     " GROUP BY 1").fetchall())
        assert statuses.get("SUCCESS", 0) > 0 and statuses.get("FAILED", 0) > 0
        assert conn.execute("SELECT count(*) FROM pggit.performance_metrics"
                            " WHERE error_details IS NOT NULL").fetchone()[0] > 0
        assert conn.execute("SELECT count(*) FROM pggit.performance_alerts"
                            " WHERE alert_type = 'THRESHOLD_EXCEEDED'").fetchone()[0] > 0
        depth = conn.execute(
            "WITH RECURSIVE t AS (SELECT span_id, 1 AS d FROM pggit.operation_traces"
            "  WHERE parent_span_id IS NULL UNION ALL SELECT o.span_id, t.d + 1"
            "  FROM pggit.operation_traces o JOIN t ON o.parent_span_id = t.span_id)"
            " SELECT max(d) FROM t").fetchone()[0]
        assert 3 <= depth <= 5
        # Children never end after their parent.
        assert conn.execute(
            "SELECT count(*) FROM pggit.operation_traces c JOIN pggit.operation_traces p"
            " ON c.parent_span_id = p.span_id WHERE c.end_time > p.end_time").fetchone() == (0,)
        assert conn.execute("SELECT count(DISTINCT operation_type) FROM"
                            " pggit.performance_metrics").fetchone()[0] >= 15
        assert conn.execute("SELECT count(DISTINCT branch_id) FROM"
                            " pggit.performance_metrics").fetchone()[0] >= 5


def test_workload_on_core_only_database(pggit_core_dsn: str) -> None:
    counts = Workload(pggit_core_dsn, seed=3, ops_per_second=100, maintenance_interval=0.5
                      ).run_for(3)
    assert counts["metrics"] > 100 and counts["spans"] > 0 and counts["merges"] > 0
    assert counts.get("baselines", 0) > 0
    assert counts.get("statement_errors", 0) == 0, counts
    assert "jobs" not in counts and "anomalies" not in counts


def test_workload_survives_restart_and_kill(pg_server_factory: Factory) -> None:
    server = pg_server_factory()
    dsn = server.create_database("pggit")
    install_schema(dsn)
    workload = Workload(dsn, seed=11, ops_per_second=100, maintenance_interval=0.5)
    workload.start()
    try:
        assert wait_until(lambda: workload.metrics > 50, timeout=10)
        server.restart()
        before = workload.metrics
        assert wait_until(lambda: workload.metrics > before + 50, timeout=15)
        server.kill()
        time.sleep(0.5)
        server.start()
        before = workload.metrics
        assert wait_until(lambda: workload.metrics > before + 50, timeout=15)
        assert workload.running
    finally:
        workload.stop()
    counts = workload.counts()
    assert counts.get("reconnects", 0) >= 2
    assert counts.get("thread_restarts", 0) == 0
    assert not workload.running


def test_workload_timestamps_follow_the_server_zone(tz_pggit_dsn: str) -> None:
    Workload(tz_pggit_dsn, seed=5, ops_per_second=80).run_for(1.5)
    with psycopg.connect(tz_pggit_dsn) as conn:
        newest, local = conn.execute(
            "SELECT max(recorded_at), LOCALTIMESTAMP FROM pggit.performance_metrics"
        ).fetchone()
    assert isinstance(newest, datetime) and timedelta(0) <= local - newest < timedelta(minutes=1)
