"""The ids a first-start backfill did not count become gaps: exactly those, at any position.

Holes are found from 64-id bitmaps, so the cases that matter are the edges of those chunks,
chunks with no row at all, the first and the last id, and ids below zero. Each test compares
with the ids actually present in a real table.
"""

from __future__ import annotations

import random
import threading
import time

import psycopg
import pytest
from psycopg import IsolationLevel, sql

from exporter.aggregates import Aggregates
from exporter.config import DEFAULT_BUCKETS
from exporter.labels import LabelCap
from exporter.map.base import Context
from exporter.map.performance_baselines import BaselineHistory
from exporter.map.performance_metrics import HIST, PerformanceMetrics
from exporter.read.backfill import start_cursor
from exporter.read.holes import find_holes
from exporter.read.snapshot import take_snapshot
from tests.exporter_fixtures import total, wait_for
from tests.test_exactly_once import assert_exact, settle


def ranges_missing(present: set[int]) -> list[tuple[int, int]]:
    """Maximal runs of ids between the smallest and largest present id that are absent."""
    out: list[tuple[int, int]] = []
    start = None
    for i in range(min(present), max(present) + 1):
        if i not in present and start is None:
            start = i
        elif i in present and start is not None:
            out.append((start, i - 1))
            start = None
    return out


def chunk(c: int) -> set[int]:
    return set(range(64 * c, 64 * c + 64))


PATTERNS: dict[str, set[int]] = {
    "no-holes": set(range(1, 1000)),
    "chunk-edges": set(range(1, 700)) - {63, 64, 127, 128, 191, 192, 255, 256, 320},
    "whole-chunks-missing": set(range(1, 1000)) - set(range(130, 400)),
    "exact-chunk-missing": set(range(1, 1000)) - chunk(3) - chunk(5),
    "first-chunk-partial": set(range(70, 300)) - {100},
    "last-id-alone": set(range(1, 200)) | {5000},
    "one-id": {42},
    "two-ids-far-apart": {1, 10_000_000},
    "full-chunk-then-gap": chunk(2) | chunk(4),
    "every-other-id": set(range(1, 2000, 2)),
    "below-zero": set(range(-200, -100)) | {-64, -1, 0, 1, 63, 64} | set(range(100, 150)),
    "last-bit-of-chunks": set(range(1, 2000)) - {64 * k + 63 for k in range(0, 31, 3)},
    "first-bit-of-chunks": set(range(1, 2000)) - {64 * k for k in range(1, 31, 3)},
    **{f"random-{missing}-of-1000": {i for i in range(1, 100_000)
                                      if random.Random(i).random() * 1000 >= missing}
       for missing in (1, 10, 100, 600)},
}


@pytest.mark.parametrize("name", PATTERNS)
def test_holes_are_exactly_the_missing_ids(pggit_dsn: str, name: str) -> None:
    present = PATTERNS[name]
    with psycopg.connect(pggit_dsn) as conn:
        conn.execute("CREATE TEMP TABLE ids (id bigint PRIMARY KEY)")
        conn.execute("INSERT INTO ids SELECT unnest(%s::bigint[])", (sorted(present),))
        holes = find_holes(conn, sql.Identifier("ids"), "id", min(present), max(present))
    assert holes == ranges_missing(present)


# --- the backfill's cursor ------------------------------------------------------------------


def insert_ids(conn: psycopg.Connection, ids: list[int]) -> None:
    """performance_metrics rows with the given ids, durations spread over the buckets."""
    conn.execute(
        """INSERT INTO pggit.performance_metrics
           (metric_id, operation_type, duration_microseconds, duration_ms, start_time, end_time,
            branch_id, user_name, recorded_at, period_start)
           SELECT i, (ARRAY['commit', 'merge', 'diff'])[1 + i %% 3], d, d / 1000.0,
                  localtimestamp - interval '1 second', localtimestamp, 1 + i %% 3, 'tester',
                  localtimestamp, date_trunc('day', localtimestamp)
           FROM unnest(%s::bigint[]) i, LATERAL (SELECT 50 + (i * 7919) %% 3000000 AS d) x""",
        (ids,))


def test_backfill_cursor_has_a_gap_for_every_id_not_counted(pggit_dsn: str) -> None:
    present = set(range(5, 2000)) - {63, 64, 127, 128} - set(range(300, 520)) - {1999}
    with psycopg.connect(pggit_dsn, autocommit=True) as conn:
        insert_ids(conn, sorted(present))
    mapping = PerformanceMetrics(DEFAULT_BUCKETS, BaselineHistory())
    ctx = Context("main", Aggregates({HIST: DEFAULT_BUCKETS}), LabelCap(500, 200), str)
    with psycopg.connect(pggit_dsn) as conn:
        conn.isolation_level = IsolationLevel.REPEATABLE_READ
        conn.read_only = True
        snap = take_snapshot(conn, 0.0)
        session = conn.execute("SELECT current_setting('enable_sort'),"
                               " current_setting('work_mem')").fetchone()
        cursor = start_cursor(conn, mapping.incremental,
                              sql.Identifier("pggit", "performance_metrics"), snap, "backfill",
                              mapping.aggregate(ctx))
        after = conn.execute("SELECT current_setting('enable_sort'),"
                             " current_setting('work_mem')").fetchone()
    assert cursor.max_seen == 1998
    assert [(g.lo, g.hi) for g in cursor.gaps] == [(1, 4), *ranges_missing(present)]
    cells = ctx.result().histograms[HIST].values()
    assert sum(sum(cell[:-1]) for cell in cells) == len(present)
    assert ctx.counts.values == {}
    assert after == session


def hold(dsn: str, ids: list[int]) -> psycopg.Connection:
    """A transaction that has inserted rows with these ids and is still open."""
    conn = psycopg.connect(dsn)
    insert_ids(conn, ids)
    return conn


def fence(dsn: str) -> None:
    """Commit a transaction newer than the held ones, as a busy database always does, so that
    they are below the next snapshot's xmax (when they are not, see
    test_id_of_the_newest_open_transaction_stays_a_gap_until_it_ends)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_current_xact_id()")


def test_rows_in_flight_at_chunk_edges_and_ends_are_counted_once(
        pggit_dsn: str, run_exporter) -> None:
    held_ids = [1, 64, 255, 700]
    rolled_back_ids = [63, 128, 129]
    committed = set(range(2, 700)) - set(range(192, 256)) - {64, 63, 128, 129}
    with psycopg.connect(pggit_dsn, autocommit=True) as conn:
        insert_ids(conn, sorted(committed))
        conn.execute("SELECT setval('pggit.performance_metrics_metric_id_seq', 1000)")
    held = hold(pggit_dsn, held_ids)
    rolled_back = hold(pggit_dsn, rolled_back_ids)
    fence(pggit_dsn)
    exporter = run_exporter(pggit_dsn)
    wait_for(lambda: exporter.poller.caught_up, what="the backfill")
    assert total(exporter.samples(), "pggit_operation_duration_seconds_count") == len(committed)
    gaps = [(g.lo, g.hi) for g in exporter.poller.cursors["performance_metrics"].gaps]
    assert gaps[0] == (1, 1)
    assert (192, 255) in gaps and (128, 129) in gaps and (63, 64) in gaps
    rolled_back.rollback()
    rolled_back.close()
    held.commit()
    held.close()
    samples = settle(exporter.samples, pggit_dsn)
    assert total(samples, "pggit_operation_duration_seconds_count") == len(committed) + 4
    assert_exact(pggit_dsn, samples)


def test_rows_committed_while_the_backfill_runs_are_counted_once(
        pggit_dsn: str, run_exporter) -> None:
    """Transactions open at start, into holes and past the end, commit at random moments
    while the backfill's scans run: the aggregate, the holes and the gaps all come from one
    snapshot, so none is lost or doubled whichever scan it races."""
    with psycopg.connect(pggit_dsn, autocommit=True) as conn:
        insert_ids(conn, [i for i in range(1, 200_001) if i % 97])
        conn.execute("SELECT setval('pggit.performance_metrics_metric_id_seq', 300000)")
    held = [hold(pggit_dsn, [97 * k, 200_000 + 97 * k]) for k in range(1, 41)]
    fence(pggit_dsn)
    rng = random.Random(16)

    def commit_one_by_one() -> None:
        for conn in held:
            time.sleep(rng.random() * 0.03)
            conn.commit()
            conn.close()

    committer = threading.Thread(target=commit_one_by_one)
    exporter = run_exporter(pggit_dsn)
    committer.start()
    committer.join()
    wait_for(lambda: exporter.poller.caught_up, 60, what="the backfill")
    samples = settle(exporter.samples, pggit_dsn)
    assert total(samples, "pggit_operation_duration_seconds_count") == 200_000 - 2061 + 80
    assert_exact(pggit_dsn, samples)
