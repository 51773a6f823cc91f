"""Reading completed merges (`merge_performance_metrics`) for merges-as-traces, exactly once.

The table has a BIGSERIAL key and a merge row is completed in place (`completed_at`), which
is what the metrics poller's id cursor already handles exactly: new ids past `max_seen`,
gaps left by transactions still open (settled by snapshot horizon, see
`exporter.read.cursor`) and rows waiting to complete, probed by id. So a poll costs index
lookups for the changes, whatever the table's size, and needs no privilege beyond SELECT.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from exporter.read.cursor import IdCursor
from exporter.read.incremental import Result, read_table
from exporter.read.snapshot import Snapshot
from exporter.read.spec import Incremental

log = logging.getLogger(__name__)

TABLE = "merge_performance_metrics"


@dataclass(slots=True)
class MergeRow:
    """One `merge_performance_metrics` row; times as epoch microseconds.

    `bad` names a timestamp the merge cannot be sent with ('infinity', year 1): such a row
    is counted as invalid and not sent.
    """

    merge_metric_id: int
    source_branch_id: int
    target_branch_id: int
    source_branch: str | None
    target_branch: str | None
    merge_base_us: int | None
    conflict_detection_us: int | None
    conflict_count: int | None
    auto_resolution_us: int | None
    auto_resolution_success_count: int | None
    auto_resolution_failure_count: int | None
    total_merge_us: int
    merge_status: str
    user_name: str | None
    session_id: str | None
    started_us: int | None
    completed_us: int | None
    bad: str | None = None


def _epoch_us(column: str) -> str:
    return (f"CASE WHEN {column} BETWEEN '1970-01-01' AND '2262-01-01' THEN "
            f"(extract(epoch FROM {column}::timestamptz) * 1000000)::bigint END")


def _bad(column: str) -> str:
    return (f"WHEN NOT isfinite({column}) THEN '{column}:not_finite' "
            f"WHEN {column} NOT BETWEEN '1970-01-01' AND '2262-01-01' "
            f"THEN '{column}:out_of_range' ")


class MergeReader:
    """Owns the query text; the read position (an `IdCursor`) is the caller's state."""

    def __init__(self, schema: str, tables: Callable[[str], str], branch_names: bool):
        self.table = sql.Identifier(schema, tables(TABLE))
        if branch_names:
            branches = sql.Identifier(schema, tables("branches")).as_string(None)
            names = (f"(SELECT b.branch_name FROM {branches} b "
                     f"WHERE b.branch_id = source_branch_id), "
                     f"(SELECT b.branch_name FROM {branches} b "
                     f"WHERE b.branch_id = target_branch_id)")
        else:
            names = "NULL::text, NULL::text"
        self.spec = Incremental(
            id_column="merge_metric_id",
            select=("source_branch_id, target_branch_id, " + names + ", "
                    "merge_base_calculation_us, conflict_detection_us, conflict_count, "
                    "auto_resolution_us, auto_resolution_success_count, "
                    "auto_resolution_failure_count, total_merge_us, merge_status, user_name, "
                    "session_id, " + _epoch_us("started_at") + ", "
                    + _epoch_us("completed_at") + ", CASE " + _bad("started_at")
                    + _bad("completed_at") + "END"),
            final="completed_at IS NOT NULL")

    def read(self, conn: psycopg.Connection, cursor: IdCursor, snap: Snapshot, batch: int,
             max_rows: int, grace: float, observe: Callable[[list[MergeRow]], None]
             ) -> Result:
        """Hand every newly completed merge to `observe` once (see `read_table`)."""
        return read_table(conn, self.spec, self.table, cursor, snap, batch, max_rows, grace,
                          lambda rows: observe([MergeRow(r[0], *r[2:-1]) for r in rows]))

    def by_ids(self, conn: psycopg.Connection, merge_ids: list[int]) -> list[MergeRow]:
        if not merge_ids:
            return []
        query = sql.SQL("SELECT merge_metric_id, {cols} FROM {table} "
                        "WHERE merge_metric_id = ANY(%s)").format(
            cols=sql.SQL(self.spec.select), table=self.table)
        return [MergeRow(*r) for r in conn.execute(query, (merge_ids,)).fetchall()]

    def migrate(self, conn: psycopg.Connection, handled: Callable[[int, int], bool],
                snap: Snapshot, observe: Callable[[list[MergeRow]], None]) -> IdCursor:
        """Build the id cursor from a version-1 change feed, once: one pass over the table.

        `handled(merge_metric_id, xid)` says whether the old feed had consumed that row
        version. Completed merges it had not are handed over now; running ones wait.
        """
        query = sql.SQL("SELECT merge_metric_id, completed_at IS NOT NULL, "
                        "(%(xmax)s::bigint - ((%(xmax)s::bigint %% 4294967296"
                        " - t.xmin::text::bigint + 4294967296) %% 4294967296)), {cols} "
                        "FROM {table} t ORDER BY merge_metric_id").format(
            cols=sql.SQL(self.spec.select), table=self.table)
        xmax = conn.execute("SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint"
                            ).fetchone()[0]  # type: ignore[index]
        cursor = IdCursor()
        new: list[MergeRow] = []
        ids: list[int] = []
        for row in conn.execute(query, {"xmax": xmax}).fetchall():
            merge_id, done, xid = row[0], row[1], row[2]
            ids.append(merge_id)
            if not done:
                cursor.wait(merge_id, snap.now)
            elif not handled(merge_id, xid):
                new.append(MergeRow(merge_id, *row[3:]))
        cursor.advance(ids, snap.horizon, snap.now)
        observe(new)
        log.info("merges-as-traces read position migrated to an id cursor",
                 extra={"max_id": cursor.max_seen, "sent_now": len(new)})
        return cursor


def changescan_handled(data: dict[str, Any]) -> Callable[[int, int], bool]:
    """Whether a version-1 `ChangeScan` state had consumed a merge row version."""
    from exporter.read.operation_traces import ChangeScan

    scan = ChangeScan.from_json(data)

    def handled(merge_id: int, xid: int) -> bool:
        if scan.recent.get(str(merge_id)) == xid:
            return True
        if scan.in_pass:
            assert scan.pass_start is not None
            cursor = scan.cursor if scan.cursor is not None else -1
            if int(cursor) >= merge_id and xid < scan.pass_start.xmin:
                return True
            return scan.pass_base is not None and xid < scan.pass_base.xmin
        return scan.base is not None and xid < scan.base.xmin

    return handled
