"""merge_performance_metrics: finished merges row by row, merges still running, and the
first start's replay (`exporter.read.merge_traces` reads the same table for traces).

A merge row can be written while the merge runs (completed_at NULL) and completed in place
later, so a row is final once completed, or FAILED/ABANDONED, which may never get a
completion time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import psycopg
from psycopg import sql

from exporter.read.spec import Incremental, Row

FINAL = "(completed_at IS NOT NULL OR merge_status IN ('FAILED', 'ABANDONED'))"

INCREMENTAL = Incremental(
    id_column="merge_metric_id",
    select="source_branch_id, target_branch_id, merge_status, merge_base_calculation_us, "
           "conflict_detection_us, auto_resolution_us, total_merge_us, conflict_count, "
           "auto_resolution_success_count, auto_resolution_failure_count",
    final=FINAL,
    time="coalesce(completed_at, started_at)",
)


def backfill_rows(conn: psycopg.Connection, table: sql.Composed, max_id: int,
                  observe: Callable[[Iterable[Row]], None]) -> None:
    """Every final merge with id <= max_id, shaped like the incremental rows (time 0).

    Merges are few compared with operations, so the first start replays them rather than
    aggregating; a server-side cursor streams them.
    """
    query = sql.SQL("SELECT merge_metric_id, true, {}, 0 FROM {} "
                    "WHERE merge_metric_id <= %s AND {}").format(
        sql.SQL(INCREMENTAL.select), table, sql.SQL(FINAL))
    with conn.cursor(name="pggit_merge_backfill") as cur:
        cur.execute(query, (max_id,))
        observe(cur)


def gauge_rows(conn: psycopg.Connection, table: sql.Composed) -> list[Row]:
    """One row: (merges not final yet,)."""
    return conn.execute(sql.SQL(
        "SELECT count(*) FROM {} WHERE NOT {}").format(table, sql.SQL(FINAL))).fetchall()
