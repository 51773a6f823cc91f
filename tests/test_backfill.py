"""A first start aggregates the existing rows as a replay of them would count them.

Invalid durations, violations at the very threshold, an empty table, a table whose only rows
are still being written, merges (replayed, not aggregated), and the second connection the
backfill scans on (and what happens when it cannot have one).
"""

from __future__ import annotations

import logging
import random
import uuid

import psycopg
import pytest
from psycopg import IsolationLevel
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from exporter.db import sibling
from tests.exporter_fixtures import total, wait_for
from tests.pg_fixtures import create_select_only_role
from tests.test_bad_input import insert_raw, loosen_performance_metrics
from tests.test_exactly_once import assert_exact, record, settle, writer


def test_invalid_durations_are_counted_as_invalid_on_backfill_as_when_read_live(
        pggit_dsn: str, run_exporter) -> None:
    loosen_performance_metrics(pggit_dsn)
    for us in (None, -5, 2000, None, 3000):
        insert_raw(pggit_dsn, us)
    with psycopg.connect(pggit_dsn, autocommit=True) as conn:
        conn.execute("UPDATE pggit.performance_metrics SET cpu_microseconds = 7000,"
                     " error_details = '{}' WHERE duration_microseconds IS NULL")
    exporter = run_exporter(pggit_dsn)
    wait_for(lambda: exporter.poller.caught_up, what="the backfill")
    samples = exporter.samples()
    assert total(samples, "pggit_operation_duration_seconds_count") == 2
    assert total(samples, "pggit_operation_duration_seconds_sum") == 0.005
    assert total(samples, "pggit_exporter_invalid_rows_total", reason="null") == 2
    assert total(samples, "pggit_exporter_invalid_rows_total", reason="negative") == 1
    assert total(samples, "pggit_operation_cpu_seconds_total") == 0
    assert total(samples, "pggit_operation_errors_total") == 0
    insert_raw(pggit_dsn, -1)
    wait_for(lambda: total(exporter.samples(), "pggit_exporter_invalid_rows_total",
                           reason="negative") == 2, what="the live invalid row")


def test_violations_at_the_threshold_match_pggit_alerts_on_backfill(
        pggit_dsn: str, run_exporter) -> None:
    """Thresholds are p99 x multiplier (numeric): 1001 x 1.5 = 1501.5 and 1000 x 2 = 2000.
    pgGit alerts on duration > threshold; the backfill's integer prefilter must agree."""
    with psycopg.connect(pggit_dsn, autocommit=True) as conn:
        for op, p99, multiplier in (("commit", 1001, "1.5"), ("merge", 1000, "2.0")):
            conn.execute(
                """INSERT INTO pggit.performance_baselines
                   (operation_type, baseline_date, calculation_timestamp, sample_count,
                    min_microseconds, max_microseconds, p50_microseconds, p75_microseconds,
                    p90_microseconds, p95_microseconds, p99_microseconds, mean_microseconds,
                    alert_threshold_multiplier)
                   VALUES (%s, current_date, localtimestamp - interval '1 minute', 100,
                           1, %s, 1, 1, 1, 1, %s, 1, %s)""", (op, p99, p99, multiplier))
        for op, us in (("commit", 1501), ("commit", 1502), ("commit", 1500),
                       ("merge", 2000), ("merge", 2001), ("merge", 1999), ("diff", 10**9)):
            conn.execute("SELECT pggit.record_performance_metric(%s, %s)", (op, us))
        alerts = dict(conn.execute(
            "SELECT operation_type, count(*) FROM pggit.performance_alerts"
            " WHERE alert_type = 'THRESHOLD_EXCEEDED' GROUP BY 1").fetchall())
    assert alerts == {"commit": 1, "merge": 1}
    samples = run_exporter(pggit_dsn).caught_up_with(pggit_dsn)
    for op, n in alerts.items():
        assert total(samples, "pggit_operation_baseline_violations_total",
                     operation_type=op) == n


def test_empty_table_backfills_nothing_and_counts_later_rows_once(
        pggit_dsn: str, run_exporter) -> None:
    exporter = run_exporter(pggit_dsn)
    wait_for(lambda: exporter.poller.caught_up, what="the first poll")
    assert total(exporter.samples(), "pggit_operation_duration_seconds_count") == 0
    writer(pggit_dsn, 12, 10)
    assert_exact(pggit_dsn, settle(exporter.samples, pggit_dsn))


def test_table_whose_only_rows_are_in_flight_counts_them_once_committed(
        pggit_dsn: str, run_exporter) -> None:
    held = psycopg.connect(pggit_dsn)
    rng = random.Random(13)
    for _ in range(3):
        record(held, rng)
    exporter = run_exporter(pggit_dsn)
    wait_for(lambda: exporter.poller.caught_up, what="the first poll")
    assert total(exporter.samples(), "pggit_operation_duration_seconds_count") == 0
    held.commit()
    held.close()
    samples = settle(exporter.samples, pggit_dsn)
    assert total(samples, "pggit_operation_duration_seconds_count") == 3
    assert_exact(pggit_dsn, samples)


MERGE = """INSERT INTO pggit.merge_performance_metrics
             (source_branch_id, target_branch_id, total_merge_us, merge_status, user_name,
              started_at, completed_at)
           VALUES (2, 1, 250000, %s, 'tester', localtimestamp, {completed})
           RETURNING merge_metric_id"""


def test_merges_written_before_the_first_start_are_replayed_once(
        pggit_dsn: str, run_exporter) -> None:
    """The first start replays the final merges (completed, or FAILED without a completion
    time) once each; a merge still running is shown as running and counted once complete."""
    done, failed = MERGE.format(completed="localtimestamp"), MERGE.format(completed="NULL")
    with psycopg.connect(pggit_dsn, autocommit=True) as conn:
        for status in ("SUCCESS", "SUCCESS", "PARTIAL_SUCCESS"):
            conn.execute(done, (status,))
        conn.execute(failed, ("FAILED",))
        running = conn.execute(failed, ("SUCCESS",)).fetchone()[0]
    exporter = run_exporter(pggit_dsn)
    wait_for(lambda: exporter.poller.caught_up, what="the backfill")
    samples = exporter.samples()
    assert total(samples, "pggit_merges_total") == 4
    assert total(samples, "pggit_merges_total", status="FAILED") == 1
    assert total(samples, "pggit_merge_duration_seconds_count", phase="total") == 4
    assert total(samples, "pggit_merges_running") == 1
    with psycopg.connect(pggit_dsn, autocommit=True) as conn:
        conn.execute("UPDATE pggit.merge_performance_metrics SET completed_at = localtimestamp"
                     " WHERE merge_metric_id = %s", (running,))
        wait_for(lambda: total(exporter.samples(), "pggit_merges_total") == 5,
                 what="the merge completed after the start")
        # A later merge, counted on its own, shows the polls in between counted nothing twice.
        conn.execute(done, ("SUCCESS",))
    samples = wait_for(lambda: (s := exporter.samples()) and
                       total(s, "pggit_merges_total") >= 6 and s, what="the later merge")
    assert total(samples, "pggit_merges_total") == 6
    assert total(samples, "pggit_merges_total", status="SUCCESS") == 4


# --- the second connection ------------------------------------------------------------------


def test_second_connection_sees_the_snapshot_not_later_commits(pggit_dsn: str) -> None:
    with psycopg.connect(pggit_dsn) as conn:
        conn.isolation_level = IsolationLevel.REPEATABLE_READ
        conn.read_only = True
        conn.execute("SET TimeZone = 'Asia/Kathmandu'")
        conn.execute("SET LOCAL work_mem = '77MB'")
        seen = conn.execute("SELECT count(*) FROM pggit.performance_metrics").fetchone()[0]
        with psycopg.connect(pggit_dsn, autocommit=True) as other_writer:
            record(other_writer, random.Random(14))
        with sibling(conn) as other:
            assert other is not None
            count, zone, work_mem, read_only = other.execute(
                "SELECT (SELECT count(*) FROM pggit.performance_metrics),"
                " current_setting('TimeZone'), current_setting('work_mem'),"
                " current_setting('transaction_read_only')").fetchone()
    assert (count, zone, work_mem, read_only) == (seen, "Asia/Kathmandu", "77MB", "on")


def test_backfill_without_a_second_connection_scans_on_one_and_stays_exact(
        pggit_dsn: str, run_exporter, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    caplog.set_level(logging.WARNING, logger="exporter")
    role = f"pggit_one_{uuid.uuid4().hex[:8]}"
    params = conninfo_to_dict(create_select_only_role(pggit_dsn, role, "one-secret"))
    monkeypatch.setenv("PGGIT_TEST_ONE_CONNECTION_PASSWORD", params.pop("password"))
    writer(pggit_dsn, 15, 40)
    with psycopg.connect(pggit_dsn, autocommit=True) as conn:
        conn.execute(f'ALTER ROLE "{role}" CONNECTION LIMIT 1')
        conn.execute("DELETE FROM pggit.performance_metrics WHERE metric_id % 5 = 0")
    exporter = run_exporter(make_conninfo(**params),
                            database={"password_env": "PGGIT_TEST_ONE_CONNECTION_PASSWORD"})
    assert_exact(pggit_dsn, exporter.caught_up_with(pggit_dsn))
    assert any(r.getMessage() == "no second connection; working on one" for r in caplog.records)


def newest_writer_behind_an_older_one(dsn: str, seed: int) -> psycopg.Connection:
    """The race: an older transaction holds an xid, a newer one inserts a lower id and stays
    open, the older one inserts a higher id and commits. The newer writer's xid is then not
    below any snapshot's xmax; returns its still open connection."""
    older = psycopg.connect(dsn)
    older.execute("SELECT pg_current_xact_id()")
    newest = psycopg.connect(dsn)
    record(newest, random.Random(seed))
    record(older, random.Random(seed + 1))
    older.commit()
    older.close()
    return newest


def polls_pass(exporter, n: int = 10) -> None:
    """Wait for `n` more polls: far beyond gap_grace, so a wrongly settled gap is gone."""
    def polls() -> float:
        return total(exporter.samples(), "pggit_exporter_poll_duration_seconds_count")

    before = polls()
    wait_for(lambda: polls() >= before + n, what=f"{n} more polls")


def commit_and_expect_both_rows(exporter, newest: psycopg.Connection) -> None:
    newest.commit()
    newest.close()
    wait_for(lambda: total(exporter.samples(), "pggit_operation_duration_seconds_count") == 2,
             5, what="the newest writer's row")


def test_id_of_the_newest_open_transaction_stays_a_gap_until_it_ends(
        pggit_dsn: str, run_exporter) -> None:
    newest = newest_writer_behind_an_older_one(pggit_dsn, 17)
    exporter = run_exporter(pggit_dsn)
    wait_for(lambda: exporter.poller.caught_up, what="the backfill")
    polls_pass(exporter)
    commit_and_expect_both_rows(exporter, newest)


def test_id_of_the_newest_open_transaction_stays_a_gap_when_noticed_by_a_live_poll(
        pggit_dsn: str, run_exporter) -> None:
    """The same race noticed by the incremental reader: its gap must outlive many polls."""
    exporter = run_exporter(pggit_dsn)
    wait_for(lambda: exporter.poller.caught_up, what="the first poll")
    newest = newest_writer_behind_an_older_one(pggit_dsn, 19)
    wait_for(lambda: total(exporter.samples(), "pggit_operation_duration_seconds_count") == 1,
             what="the older writer's row")
    polls_pass(exporter)
    commit_and_expect_both_rows(exporter, newest)
