"""Exactly-once reading of pgGit spans (`operation_traces`) and merges, by row version.

Why not a timestamp or an id cursor: a span row is inserted `RUNNING` and later *updated in
place* when it ends, no column says when, `trace_id` is a text primary key, and transactions
commit late and out of order. `recorded_at` is the inserting transaction's *start* time, and
a transaction may start long before it writes, so no time watermark is ever known to be safe.

What PostgreSQL does record is which transaction wrote each row version: the system column
`xmin`. Together with MVCC snapshots that gives an exact change feed:

1. Every poll runs in one REPEATABLE READ READ ONLY transaction and takes its snapshot with
   `pg_current_snapshot()` (xmin, xmax, in-progress xids). Everything read in the poll comes
   from that one snapshot.
2. The state keeps a *base* snapshot B: every row version visible in B has been handled.
   A row version whose writer is not visible in B is new. Row xmins are 32-bit; they are
   widened to 64-bit (xid8) against the current snapshot's xmax, which is exact while the
   row is younger than 2^31 transactions (older ones were handled long ago).
3. Subtransaction ids are not listed in a snapshot's in-progress set, so "not visible in B"
   cannot be decided exactly for xids between B's xmin and xmax. The scan therefore takes
   every version written by an xid >= B.xmin (the oldest transaction still open at B) and
   skips versions it already handled, remembered as {key: xid} in `recent`. `recent` only
   holds versions at or above B.xmin, so it is bounded by what was written since the oldest
   transaction then open began: a transaction left open for an hour keeps an hour of changes
   there. This is the "set of ids above the watermark", with the snapshot's xmin as the
   watermark, so it advances exactly when the open transactions finish.
4. A pass pages through the new versions in key order (`batch` rows per poll). When a pass
   ends, B becomes the snapshot of the pass's first poll: versions committed during a
   multi-poll pass are seen again by the next pass and skipped through `recent`.
5. Without a saved state, B is empty: the first pass reads the whole table in index order
   (the backlog), later passes scan the table for new versions (one sequential pass over
   `operation_traces` per poll; for a large table raise the poll interval).

A span seen `RUNNING` is remembered with its start time (`running`); a span seen ended is
emitted once and forgotten. A span still RUNNING after `running_timeout` is emitted once as
timed out and kept in `timed_out`; if it ends later it is counted, not emitted again.
Limitation: a span ended a *second* time by its writer (`end_performance_trace` called twice)
is indistinguishable from a new span and is emitted again, with identical ids.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from exporter.send.attributes import MAX_JSON_TEXT

log = logging.getLogger(__name__)

XID_MODULUS = 1 << 32
MAX_TREE_DEPTH = 1000


@dataclass(frozen=True)
class Snapshot:
    """A `pg_snapshot` as plain data (64-bit xids)."""

    xmin: int
    xmax: int
    xip: frozenset[int] = frozenset()

    @classmethod
    def parse(cls, text: str) -> Snapshot:
        xmin, xmax, xip = text.split(":")
        return cls(int(xmin), int(xmax), frozenset(int(x) for x in xip.split(",") if x))

    def __str__(self) -> str:
        return f"{self.xmin}:{self.xmax}:{','.join(str(x) for x in sorted(self.xip))}"


def widen_sql(xmax_param: str) -> str:
    """SQL for the 64-bit id of a row's 32-bit xmin, relative to a snapshot's xmax."""
    return (f"(%({xmax_param})s::bigint - ((%({xmax_param})s::bigint %% {XID_MODULUS}"
            f" - t.xmin::text::bigint + {XID_MODULUS}) %% {XID_MODULUS}))")


@dataclass
class ChangeScan:
    """The exactly-once change feed over one table (see the module docstring).

    Keys are the table's unique key as text (span_id, or merge_metric_id as digits).
    """

    base: Snapshot | None = None
    recent: dict[str, int] = field(default_factory=dict)
    pass_start: Snapshot | None = None
    pass_base: Snapshot | None = None
    cursor: str | int | None = None
    in_pass: bool = False

    def begin(self, current: Snapshot) -> None:
        if not self.in_pass:
            self.in_pass = True
            self.pass_start = current
            self.pass_base = self.base
            self.cursor = None

    @property
    def backlog(self) -> bool:
        """The first pass reads everything, in index order (no base to compare with)."""
        return self.pass_base is None

    def seen(self, key: str, xid: int) -> bool:
        """Whether this row version was handled already; marks it handled otherwise."""
        if self.recent.get(key) == xid:
            return True
        if self.pass_start is not None and xid >= self.pass_start.xmin:
            self.recent[key] = xid
        return False

    def advance(self, last_key: str | int | None, got: int, asked: int) -> None:
        if last_key is not None:
            self.cursor = last_key
        if got < asked:
            assert self.pass_start is not None
            self.base = self.pass_start
            self.in_pass = False
            horizon = self.base.xmin
            self.recent = {k: x for k, x in self.recent.items() if x >= horizon}

    def to_json(self) -> dict[str, Any]:
        return {
            "base": str(self.base) if self.base else None,
            "recent": self.recent,
            "pass_start": str(self.pass_start) if self.pass_start else None,
            "pass_base": str(self.pass_base) if self.pass_base else None,
            "cursor": self.cursor,
            "in_pass": self.in_pass,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> ChangeScan:
        if not data:
            return cls()

        def snap(v: str | None) -> Snapshot | None:
            return Snapshot.parse(v) if v else None

        return cls(base=snap(data.get("base")), recent=dict(data.get("recent", {})),
                   pass_start=snap(data.get("pass_start")),
                   pass_base=snap(data.get("pass_base")), cursor=data.get("cursor"),
                   in_pass=bool(data.get("in_pass")))


@dataclass(slots=True)
class SpanRow:
    """One `operation_traces` row as read, timestamps as exact epoch microseconds."""

    span_id: str
    trace_id: str
    parent_span_id: str | None
    operation_type: str
    span_name: str
    span_status: str | None
    start_us: int
    end_us: int | None
    duration_us: int | None
    branch_id: int | None
    branch_name: str | None
    user_name: str | None
    session_id: str | None
    memory_peak_bytes: int | None
    cpu_microseconds: int | None
    error_message: str | None
    error_code: str | None
    error_details: str | None
    attributes: str | None
    attributes_too_large: bool
    xid: int
    root_trace_id: str

    @property
    def ended(self) -> bool:
        return self.end_us is not None


_SPAN_QUERY = """
WITH RECURSIVE batch AS MATERIALIZED (
    SELECT t.span_id, t.trace_id, t.parent_span_id, t.operation_type, t.span_name,
           t.span_status,
           (extract(epoch FROM t.start_time::timestamptz) * 1000000)::bigint AS start_us,
           (extract(epoch FROM t.end_time::timestamptz) * 1000000)::bigint AS end_us,
           t.duration_microseconds, t.branch_id, t.user_name, t.session_id,
           t.memory_peak_bytes, t.cpu_microseconds, t.error_message, t.error_code,
           left(t.error_details::text, {max_json}) AS error_details,
           CASE WHEN octet_length(a.text) > {max_json} THEN NULL ELSE a.text END AS attributes,
           coalesce(octet_length(a.text) > {max_json}, false) AS too_large,
           {xid} AS xid
    FROM {table} t CROSS JOIN LATERAL (SELECT t.attributes::text AS text OFFSET 0) a
    WHERE {where}
    {order}
), up AS (
    SELECT b.span_id AS origin, b.parent_span_id AS parent, b.trace_id AS root, 0 AS depth
    FROM batch b
    UNION ALL
    SELECT up.origin, p.parent_span_id, p.trace_id, up.depth + 1
    FROM up CROSS JOIN LATERAL (
        SELECT p.parent_span_id, p.trace_id FROM {table} p WHERE p.span_id = up.parent OFFSET 0
    ) p
    WHERE up.parent IS NOT NULL AND up.depth < {max_depth}
), roots AS (
    SELECT DISTINCT ON (origin) origin, root FROM up ORDER BY origin, depth DESC
)
SELECT b.span_id, b.trace_id, b.parent_span_id, b.operation_type, b.span_name, b.span_status,
       b.start_us, b.end_us, b.duration_microseconds, b.branch_id, {branch_name},
       b.user_name, b.session_id, b.memory_peak_bytes, b.cpu_microseconds, b.error_message,
       b.error_code, b.error_details, b.attributes, b.too_large, b.xid, r.root
FROM batch b JOIN roots r ON r.origin = b.span_id
{branch_join}
{outer_order}
"""
"""One page of spans with the trace id of each span's root.

The parent walk looks each parent up by its key (`OFFSET 0` keeps the lateral subquery a
parameterised index probe): joined as a set, the planner hashes the whole table for every
page, which made reading a backlog quadratic in the table's size. The attributes are cast
to text once (the lateral `a`), not once per use.
"""


class SpanReader:
    """Reads changed span rows and rows by id; owns the query text, not the state."""

    def __init__(self, schema: str, tables: Callable[[str], str]):
        self.schema = schema
        self.tables = tables
        self.table = sql.Identifier(schema, tables("operation_traces"))
        self._branches: sql.Composable | None = None
        self._branches_checked = False

    def _branch_parts(self, conn: psycopg.Connection) -> tuple[sql.Composable, sql.Composable]:
        """Join pgGit's branches for the name when the deployed shape is there (schema trap 2)."""
        if not self._branches_checked:
            self._branches_checked = True
            name = self.tables("branches")
            row = conn.execute(
                "SELECT count(*) FROM information_schema.columns WHERE table_schema = %s "
                "AND table_name = %s AND column_name IN ('branch_id', 'branch_name')",
                (self.schema, name)).fetchone()
            if row and row[0] == 2:
                self._branches = sql.Identifier(self.schema, name)
            else:
                log.info("no %s.%s(branch_id, branch_name): spans carry branch ids only",
                         self.schema, name)
        if self._branches is None:
            return sql.SQL("NULL::text"), sql.SQL("")
        return (sql.SQL("br.branch_name"),
                sql.SQL("LEFT JOIN {} br ON br.branch_id = b.branch_id").format(self._branches))

    def _query(self, conn: psycopg.Connection, where: str, order: str, outer_order: str,
               params: dict[str, Any]) -> list[SpanRow]:
        branch_name, branch_join = self._branch_parts(conn)
        query = sql.SQL(_SPAN_QUERY).format(
            max_json=sql.Literal(MAX_JSON_TEXT), xid=sql.SQL(widen_sql("xmax")),
            table=self.table, where=sql.SQL(where), order=sql.SQL(order),
            max_depth=sql.Literal(MAX_TREE_DEPTH), branch_name=branch_name,
            branch_join=branch_join, outer_order=sql.SQL(outer_order))
        with conn.cursor() as cur:
            cur.execute(query, params)
            return [SpanRow(*r) for r in cur.fetchall()]

    def changed(self, conn: psycopg.Connection, scan: ChangeScan, xmax: int,
                limit: int) -> list[SpanRow]:
        """The next page of new row versions in the current pass, in key order."""
        params: dict[str, Any] = {"xmax": xmax, "limit": limit, "cursor": scan.cursor}
        if scan.backlog:
            # Index order on span_id: the backlog is read in O(batch) per page.
            where = "(%(cursor)s::text IS NULL OR t.span_id > %(cursor)s)"
            order = "ORDER BY t.span_id LIMIT %(limit)s"
            outer = "ORDER BY b.span_id"
        else:
            # Byte order (COLLATE "C") keeps the planner off the span_id index: a filter on
            # xmin matches few rows, and walking the whole index to find them costs a random
            # heap read per row, where one sequential scan and a top-N sort cost far less.
            assert scan.pass_base is not None
            params["bxmin"] = scan.pass_base.xmin
            where = (widen_sql("xmax") + " >= %(bxmin)s AND (%(cursor)s::text IS NULL "
                     "OR t.span_id COLLATE \"C\" > %(cursor)s COLLATE \"C\")")
            order = "ORDER BY t.span_id COLLATE \"C\" LIMIT %(limit)s"
            outer = "ORDER BY b.span_id COLLATE \"C\""
        return self._query(conn, where, order, outer, params)

    def by_ids(self, conn: psycopg.Connection, span_ids: Iterable[str], xmax: int
               ) -> list[SpanRow]:
        ids = list(span_ids)
        if not ids:
            return []
        return self._query(conn, "t.span_id = ANY(%(ids)s)", "", "",
                           {"ids": ids, "xmax": xmax})

    def existing(self, conn: psycopg.Connection, span_ids: Iterable[str]) -> set[str]:
        ids = list(span_ids)
        if not ids:
            return set()
        query = sql.SQL("SELECT span_id FROM {} WHERE span_id = ANY(%s)").format(self.table)
        return {r[0] for r in conn.execute(query, (ids,)).fetchall()}


@dataclass(slots=True)
class MergeRow:
    """One completed `merge_performance_metrics` row; times as epoch microseconds."""

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
    started_us: int
    completed_us: int | None
    xid: int


_MERGE_QUERY = """
SELECT t.merge_metric_id, t.source_branch_id, t.target_branch_id, {source}, {target},
       t.merge_base_calculation_us, t.conflict_detection_us, t.conflict_count,
       t.auto_resolution_us, t.auto_resolution_success_count, t.auto_resolution_failure_count,
       t.total_merge_us, t.merge_status, t.user_name, t.session_id,
       (extract(epoch FROM t.started_at::timestamptz) * 1000000)::bigint,
       (extract(epoch FROM t.completed_at::timestamptz) * 1000000)::bigint,
       {xid}
FROM {table} t {joins}
WHERE {where}
ORDER BY t.merge_metric_id LIMIT %(limit)s
"""


class MergeReader:
    """The same change feed over `merge_performance_metrics`, keyed by merge_metric_id.

    Merge rows have a serial key, but are also completed in place (`completed_at`), so the
    id alone would not say when a merge finished; the change feed does.
    """

    def __init__(self, schema: str, tables: Callable[[str], str]):
        self.schema = schema
        self.table_name = tables("merge_performance_metrics")
        self.branches_name = tables("branches")
        self.table = sql.Identifier(schema, self.table_name)
        self.branches = sql.Identifier(schema, self.branches_name)
        self.available: bool | None = None
        self._names = False

    def check(self, conn: psycopg.Connection) -> bool:
        """Whether the table exists; looked up once, a missing table disables merge traces."""
        if self.available is None:
            row = conn.execute(
                "SELECT count(*) FROM information_schema.columns WHERE table_schema = %s "
                "AND table_name = %s", (self.schema, self.table_name)).fetchone()
            self.available = bool(row and row[0])
            if not self.available:
                log.info("no %s.%s: merges are not sent as traces", self.schema,
                         self.table_name)
            row = conn.execute(
                "SELECT count(*) FROM information_schema.columns WHERE table_schema = %s "
                "AND table_name = %s AND column_name IN ('branch_id', 'branch_name')",
                (self.schema, self.branches_name)).fetchone()
            self._names = bool(row and row[0] == 2)
        return self.available

    def changed(self, conn: psycopg.Connection, scan: ChangeScan, xmax: int,
                limit: int) -> list[MergeRow]:
        params: dict[str, Any] = {"xmax": xmax, "limit": limit,
                                  "cursor": scan.cursor if scan.cursor is not None else -1}
        where = "t.merge_metric_id > %(cursor)s"
        if not scan.backlog:
            assert scan.pass_base is not None
            params["bxmin"] = scan.pass_base.xmin
            where += " AND " + widen_sql("xmax") + " >= %(bxmin)s"
        return self._query(conn, where, params)

    def by_ids(self, conn: psycopg.Connection, merge_ids: list[int], xmax: int
               ) -> list[MergeRow]:
        if not merge_ids or not self.check(conn):
            return []
        return self._query(conn, "t.merge_metric_id = ANY(%(ids)s)",
                           {"ids": merge_ids, "xmax": xmax, "limit": len(merge_ids)})

    def _query(self, conn: psycopg.Connection, where: str, params: dict[str, Any]
               ) -> list[MergeRow]:
        if self._names:
            source, target = sql.SQL("sb.branch_name"), sql.SQL("tb.branch_name")
            joins = sql.SQL("LEFT JOIN {b} sb ON sb.branch_id = t.source_branch_id "
                            "LEFT JOIN {b} tb ON tb.branch_id = t.target_branch_id"
                            ).format(b=self.branches)
        else:
            source = target = sql.SQL("NULL::text")
            joins = sql.SQL("")
        query = sql.SQL(_MERGE_QUERY).format(source=source, target=target,
                                             xid=sql.SQL(widen_sql("xmax")), table=self.table,
                                             joins=joins, where=sql.SQL(where))
        with conn.cursor() as cur:
            cur.execute(query, params)
            return [MergeRow(*r) for r in cur.fetchall()]
