"""Every committed row counted once: out-of-order commits, rollbacks, held transactions,
kill -9, database restarts, backfill and retention deletes.

Expected values are computed independently from the database (per operation type and
branch: count, sum and every cumulative bucket), so a single lost or doubled row fails.
"""

from __future__ import annotations

import random
import threading
import time
from bisect import bisect_left
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from exporter.config import DEFAULT_BUCKETS
from tests.exporter_fixtures import (
    ExporterProcess,
    Samples,
    total,
    wait_for,
    write_config,
)

OPS = ("commit", "merge", "rollback", "branch_create", "get_history")
BRANCHES = (1, 2, 3, None)


def record(conn: psycopg.Connection, rng: random.Random) -> None:
    conn.execute(
        "SELECT pggit.record_performance_metric(%s, %s, NULL, %s, 'tester', NULL, %s, NULL, %s)",
        (rng.choice(OPS), int(rng.lognormvariate(7, 1.5)) + 1, rng.choice(BRANCHES),
         rng.randint(0, 50), rng.randint(0, 5000)))


def writer(dsn: str, seed: int, transactions: int, stop: threading.Event | None = None) -> None:
    """Transactions of 1-3 rows, sleeping inside so commits interleave; 20 % roll back."""
    rng = random.Random(seed)
    done = 0
    conn: psycopg.Connection | None = None
    while done < transactions and not (stop and stop.is_set()):
        try:
            if conn is None or conn.closed:
                conn = psycopg.connect(dsn)
            with conn.transaction():
                for _ in range(rng.randint(1, 3)):
                    record(conn, rng)
                time.sleep(rng.random() * 0.02)
                if rng.random() < 0.2:
                    raise psycopg.Rollback()
            done += 1
        except (psycopg.OperationalError, psycopg.Rollback):
            conn = None
            time.sleep(0.2)
    if conn is not None:
        conn.close()


def expected(dsn: str) -> Samples:
    """Count and cumulative buckets per label set, straight from the table.

    Buckets are found by float comparison of seconds against `le`, as Prometheus defines
    them, independently of the exporter's integer-threshold code path.
    """
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            """SELECT m.operation_type, coalesce(b.branch_name, ''), m.duration_microseconds
               FROM pggit.performance_metrics m
               LEFT JOIN pggit.branches b ON b.branch_id = m.branch_id""").fetchall()
    per_bucket: dict[tuple[str, str], list[int]] = {}
    for op, branch, us in rows:
        counts = per_bucket.setdefault((op, branch), [0] * (len(DEFAULT_BUCKETS) + 1))
        counts[bisect_left(DEFAULT_BUCKETS, us / 1e6)] += 1
    out: Samples = {}
    for (op, branch), counts in per_bucket.items():
        labels = (("branch", branch), ("database", "main"), ("operation_type", op))
        out[("pggit_operation_duration_seconds_count", labels)] = sum(counts)
        running = 0
        for le, n in zip((*map(repr, DEFAULT_BUCKETS), "+Inf"), counts, strict=True):
            running += n
            if running:
                out[("pggit_operation_duration_seconds_bucket",
                     tuple(sorted((*labels, ("le", le)))))] = running
    return out


def assert_exact(dsn: str, samples: Samples) -> None:
    want = expected(dsn)
    got = {k: v for k, v in samples.items()
           if k[0] in ("pggit_operation_duration_seconds_count",
                       "pggit_operation_duration_seconds_bucket") and v}
    assert got == want
    with psycopg.connect(dsn) as conn:
        alerts = conn.execute("SELECT count(*) FROM pggit.performance_alerts").fetchone()[0]
    assert total(samples, "pggit_alerts_total") == alerts


def settle(read: Callable[[], Samples], dsn: str) -> Samples:
    """Wait for the count to match the table, then for more polls to prove it stays."""
    deadline = time.monotonic() + 60
    while True:
        want = sum(v for (n, _), v in expected(dsn).items()
                   if n == "pggit_operation_duration_seconds_count")
        got = total(read(), "pggit_operation_duration_seconds_count")
        if got == want:
            break
        if time.monotonic() > deadline:
            pytest.fail(f"the exporter shows {got} rows, the table has {want}")
        time.sleep(0.2)
    time.sleep(1.0)
    return read()


def test_concurrent_writers_committing_out_of_order_are_counted_once(
        pggit_dsn: str, run_exporter) -> None:
    exporter = run_exporter(pggit_dsn)
    held = psycopg.connect(pggit_dsn)
    held_rollback = psycopg.connect(pggit_dsn)
    rng = random.Random(7)
    record(held, rng)
    record(held_rollback, rng)
    threads = [threading.Thread(target=writer, args=(pggit_dsn, seed, 40)) for seed in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wait_for(lambda: exporter.poller.cursors["performance_metrics"].gaps, 10,
             what="the held transactions' ids to be pending gaps")
    time.sleep(1.0)
    held_rollback.rollback()
    held.commit()
    held.close()
    held_rollback.close()
    samples = settle(exporter.samples, pggit_dsn)
    assert_exact(pggit_dsn, samples)


def test_row_committed_after_many_polls_is_counted_once(pggit_dsn: str, run_exporter) -> None:
    exporter = run_exporter(pggit_dsn)
    held = psycopg.connect(pggit_dsn)
    record(held, random.Random(1))
    with psycopg.connect(pggit_dsn) as conn:
        record(conn, random.Random(2))
    wait_for(lambda: total(exporter.samples(), "pggit_operation_duration_seconds_count") == 1,
             what="the later row")
    def polls() -> float:
        return total(exporter.samples(), "pggit_exporter_poll_duration_seconds_count")

    before = polls()
    wait_for(lambda: polls() > before, what="more polls")
    time.sleep(2.0)
    held.commit()
    held.close()
    samples = settle(exporter.samples, pggit_dsn)
    assert total(samples, "pggit_operation_duration_seconds_count") == 2
    assert_exact(pggit_dsn, samples)


def test_kill_9_mid_batch_and_restart_loses_and_doubles_nothing(
        pggit_dsn: str, tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "cfg.yml", pggit_dsn, tmp_path / "state", batch_size=20,
                       poll_interval="50ms")
    stop = threading.Event()
    threads = [threading.Thread(target=writer, args=(pggit_dsn, seed, 10**9, stop))
               for seed in range(4)]
    for t in threads:
        t.start()
    last_seen = 0.0
    try:
        for round_ in range(4):
            proc = ExporterProcess(cfg)
            try:
                time.sleep(0.5 + random.Random(round_).random())
                now = total(proc.samples(), "pggit_operation_duration_seconds_count")
                assert now >= last_seen, "a counter went backwards after a restart"
                last_seen = now
                proc.kill9()
            finally:
                proc.close()
    finally:
        stop.set()
        for t in threads:
            t.join()
    proc = ExporterProcess(cfg)
    try:
        samples = settle(proc.samples, pggit_dsn)
        assert total(samples, "pggit_operation_duration_seconds_count") >= last_seen
        assert_exact(pggit_dsn, samples)
    finally:
        proc.close()


def test_database_restart_under_load_recovers_and_stays_exact(
        pg_server, pggit_dsn: str, run_exporter) -> None:
    server = pg_server.require_embedded()
    exporter = run_exporter(pggit_dsn, retry_backoff_max="1s")
    stop = threading.Event()
    threads = [threading.Thread(target=writer, args=(pggit_dsn, seed, 10**9, stop))
               for seed in range(4)]
    for t in threads:
        t.start()
    try:
        time.sleep(1.0)
        server.stop(mode="fast")
        wait_for(lambda: total(exporter.samples(), "pggit_up") == 0, 30, what="pggit_up 0")
        assert total(exporter.samples(), "pggit_exporter_errors_total", stage="connect") > 0
        server.start()
        wait_for(lambda: total(exporter.samples(), "pggit_up") == 1, 60, what="pggit_up 1")
        time.sleep(1.0)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert_exact(pggit_dsn, settle(exporter.samples, pggit_dsn))


def test_backfill_counts_existing_rows_and_a_transaction_open_at_start(
        pggit_dsn: str, run_exporter) -> None:
    threads = [threading.Thread(target=writer, args=(pggit_dsn, seed, 30)) for seed in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    held = psycopg.connect(pggit_dsn)
    record(held, random.Random(3))
    with psycopg.connect(pggit_dsn) as conn:
        record(conn, random.Random(4))
    exporter = run_exporter(pggit_dsn)
    wait_for(lambda: exporter.poller.caught_up, what="backfill")
    held.commit()
    held.close()
    assert_exact(pggit_dsn, settle(exporter.samples, pggit_dsn))


def test_backfilled_rows_are_judged_by_the_baseline_in_force_when_written(
        pggit_dsn: str, run_exporter) -> None:
    with psycopg.connect(pggit_dsn, autocommit=True) as conn:
        for i in range(20):
            conn.execute("SELECT pggit.record_performance_metric('commit', %s)", (1000 + i,))
        conn.execute("SELECT pggit.calculate_performance_baseline('commit')")
        for _ in range(3):
            conn.execute("SELECT pggit.record_performance_metric('commit', 5000)")
        for i in range(40):
            conn.execute("SELECT pggit.record_performance_metric('commit', %s)", (9000 + i,))
        conn.execute("SELECT pggit.calculate_performance_baseline('commit')")
        conn.execute("SELECT pggit.record_performance_metric('commit', 6000)")
        alerts = conn.execute("SELECT count(*) FROM pggit.performance_alerts "
                              "WHERE alert_type = 'THRESHOLD_EXCEEDED'").fetchone()[0]
    exporter = run_exporter(pggit_dsn)
    samples = exporter.caught_up_with(pggit_dsn)
    assert alerts >= 3
    assert total(samples, "pggit_operation_baseline_violations_total") == alerts


def test_violations_equal_pggit_threshold_alerts_on_live_rows(
        pggit_dsn: str, run_exporter) -> None:
    exporter = run_exporter(pggit_dsn)
    rng = random.Random(11)
    with psycopg.connect(pggit_dsn, autocommit=True) as conn:
        for round_ in range(3):
            for _ in range(30):
                conn.execute("SELECT pggit.record_performance_metric('merge', %s, NULL, %s)",
                             (int(rng.lognormvariate(8, 0.3)), rng.choice(BRANCHES)))
            conn.execute("SELECT pggit.calculate_performance_baseline('merge', %s)",
                         (None if round_ != 1 else 2,))
            for _ in range(5):
                conn.execute("SELECT pggit.record_performance_metric('merge', %s, NULL, %s)",
                             (int(rng.lognormvariate(9.5, 0.5)), rng.choice(BRANCHES)))
        alerts = conn.execute("SELECT count(*) FROM pggit.performance_alerts "
                              "WHERE alert_type = 'THRESHOLD_EXCEEDED'").fetchone()[0]
    samples = exporter.caught_up_with(pggit_dsn)
    assert alerts > 0
    assert total(samples, "pggit_operation_baseline_violations_total") == alerts


def test_retention_delete_never_makes_a_counter_go_down(pggit_dsn: str, run_exporter) -> None:
    writer(pggit_dsn, 5, 30)
    exporter = run_exporter(pggit_dsn)
    before = total(exporter.caught_up_with(pggit_dsn), "pggit_operation_duration_seconds_count")
    with psycopg.connect(pggit_dsn, autocommit=True) as conn:
        conn.execute("DELETE FROM pggit.performance_metrics "
                     "WHERE metric_id < (SELECT max(metric_id) FROM pggit.performance_metrics)")
        record(conn, random.Random(9))
    wait_for(lambda: total(exporter.samples(), "pggit_operation_duration_seconds_count")
             == before + 1, what="the new row after the delete")
    time.sleep(1.0)
    assert total(exporter.samples(), "pggit_operation_duration_seconds_count") == before + 1


def test_start_position_now_counts_only_rows_after_start(pggit_dsn: str, run_exporter) -> None:
    writer(pggit_dsn, 6, 10)
    exporter = run_exporter(pggit_dsn, start_position="now")
    wait_for(lambda: exporter.poller.caught_up, what="first poll")
    assert total(exporter.samples(), "pggit_operation_duration_seconds_count") == 0
    with psycopg.connect(pggit_dsn, autocommit=True) as conn:
        record(conn, random.Random(8))
    wait_for(lambda: total(exporter.samples(), "pggit_operation_duration_seconds_count") == 1,
             what="the row written after start")


def test_merge_running_then_completed_is_counted_once_when_complete(
        pggit_dsn: str, run_exporter) -> None:
    exporter = run_exporter(pggit_dsn)
    with psycopg.connect(pggit_dsn, autocommit=True) as conn:
        merge_id = conn.execute(
            """INSERT INTO pggit.merge_performance_metrics
               (source_branch_id, target_branch_id, total_merge_us, merge_status, user_name,
                started_at, merge_base_calculation_us)
               VALUES (2, 1, 1, 'SUCCESS', 'tester', localtimestamp, 1500)
               RETURNING merge_metric_id""").fetchone()[0]
        wait_for(lambda: total(exporter.samples(), "pggit_merges_running") == 1,
                 what="the running merge")
        assert total(exporter.samples(), "pggit_merges_total") == 0
        conn.execute("""UPDATE pggit.merge_performance_metrics
                        SET completed_at = localtimestamp, total_merge_us = 250000,
                            conflict_detection_us = 20000, conflict_count = 3,
                            auto_resolution_success_count = 2, auto_resolution_failure_count = 1
                        WHERE merge_metric_id = %s""", (merge_id,))
    wait_for(lambda: total(exporter.samples(), "pggit_merges_total") == 1, what="the merge")
    time.sleep(1.0)
    s = exporter.samples()
    assert total(s, "pggit_merges_total", source_branch="develop", target_branch="main",
                 status="SUCCESS") == 1
    assert total(s, "pggit_merge_conflicts_total") == 3
    assert total(s, "pggit_merge_auto_resolutions_total", result="success") == 2
    assert total(s, "pggit_merge_duration_seconds_count", phase="total") == 1
    assert total(s, "pggit_merge_duration_seconds_sum", phase="total") == pytest.approx(0.25)


def test_first_start_backfills_a_million_rows_exactly(pggit_dsn: str, run_exporter) -> None:
    with psycopg.connect(pggit_dsn, autocommit=True) as conn:
        conn.execute(
            """INSERT INTO pggit.performance_metrics
               (operation_type, duration_microseconds, duration_ms, start_time, end_time,
                branch_id, user_name, recorded_at, period_start, cpu_microseconds)
               SELECT (ARRAY['commit','merge','rollback','get_history'])[1 + g % 4],
                      d, d / 1000.0, localtimestamp - interval '1 hour', localtimestamp,
                      1 + g % 3, 'bulk', localtimestamp, date_trunc('day', localtimestamp),
                      g % 7
               FROM generate_series(1, 1000000) g,
                    LATERAL (SELECT 50 + (g::bigint * 7919) % 2000000 AS d) x""")
        conn.execute("DELETE FROM pggit.performance_metrics WHERE metric_id % 1000 = 0")
    exporter = run_exporter(pggit_dsn)
    samples = exporter.caught_up_with(pggit_dsn, timeout=120)
    assert total(samples, "pggit_operation_duration_seconds_count") == 999_000
    assert_exact(pggit_dsn, samples)
    assert total(samples, "pggit_exporter_rows_read_total") < 1000

