"""Exactly-once reading of pgGit spans (`operation_traces`) at a cost set by the changes.

Why not a timestamp or an id cursor alone: a span row is inserted `RUNNING` and later
*updated in place* when it ends, no column says when, `trace_id` is a text primary key, and
transactions commit late and out of order.

What PostgreSQL records is which transaction wrote each row version (`xmin`), and MVCC
snapshots say which transactions a poll can see. The state keeps a *base* snapshot B: every
row version visible in B has been handled. A version is new when its writer is not visible
in B. Subtransaction ids are not listed in a snapshot's in-progress set, so versions written
by xids >= B.xmin are taken and the ones already handled are skipped through `recent`
({key: xid}, only versions at or above the horizon, see `ChangeScan.horizon`).

Finding those versions without reading the whole table is the point of this module:

- *Inserts.* pgGit writes `start_time` from CURRENT_TIMESTAMP: the inserting transaction's
  start, in the writer's zone. A row not visible in B was written by a transaction running
  when B was taken, or started later. So a lower bound on the start of every transaction
  running then (`Bound`: the oldest `xact_start` in `pg_stat_activity`, read just *before*
  the snapshot, and the bound remembered for each prepared transaction) bounds the
  `start_time` of every row still to come, and the `start_time` index finds them: a
  *window* pass reads `start_time >= bound AND xmin >= B.xmin`.
- *Updates* (a span ending in another transaction): a span seen RUNNING is probed by
  `span_id` (unique index) every poll until it ends; spans sent as timed out are probed
  a batch at a time, for a late end.

Reading every backend's `xact_start` needs `pg_read_all_stats` (in `pg_monitor`). Without
it the exact method is a *full* pass (a sequential scan for versions with xmin >= B.xmin),
run at most every `full_pass_interval` seconds; between full passes *quick* passes read a
recent window (`start_time >= now - QUICK_WINDOW`) for low latency, without moving B.
Everything a quick pass handles is remembered in `recent` until a full pass has moved B past
it, so the full pass skips it.

Passes page through their versions in key order (`batch` rows a page); a pass may span
polls. When a window or full pass ends, B becomes the snapshot of the pass's first poll.
Without a saved state B is empty: the first pass reads the whole table in index order (the
backlog).

A span seen `RUNNING` is remembered (`running`); a span seen ended is emitted once and
forgotten. Limitation: a span ended a *second* time by its writer (`end_performance_trace`
called twice) is emitted again, with identical ids, if its row is still in the window.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from exporter.otlp.attributes import MAX_JSON_TEXT
from exporter.read.snapshot import Snapshot

log = logging.getLogger(__name__)

XID_MODULUS = 1 << 32
MAX_TREE_DEPTH = 1000
BOUND_MARGIN = 2.0
"""Seconds taken off the start-time bound: a transaction takes its start time a moment
before it shows in pg_stat_activity, and writer clocks are the server's own."""
QUICK_WINDOW = 10.0
"""Seconds of `start_time` a quick (SELECT-only, between full passes) pass looks back."""

BACKLOG, WINDOW, FULL, QUICK = "backlog", "window", "full", "quick"
MODE_PRIVILEGED = "start_time_window"
MODE_SELECT_ONLY = "periodic_full_scan"
PRIVILEGE_HINT = "GRANT pg_read_all_stats TO <exporter role> (or pg_monitor)"


def widen_sql(xmax_param: str) -> str:
    """SQL for the 64-bit id of a row's 32-bit xmin, relative to a snapshot's xmax."""
    return (f"(%({xmax_param})s::bigint - ((%({xmax_param})s::bigint %% {XID_MODULUS}"
            f" - t.xmin::text::bigint + {XID_MODULUS}) %% {XID_MODULUS}))")


LOCAL_BOUND_SQL = (
    "least(to_timestamp(%(bound)s)::timestamp,"
    " (to_timestamp(%(bound)s) AT TIME ZONE 'UTC')"
    " + (now()::timestamp - (now() AT TIME ZONE 'UTC')))")
"""The bound (Unix seconds) as the writer's local time (the session's zone, set from
`databases[].timezone`). Local time runs backwards when summer time ends, so the bound is
the lower of its local time now and then: a row written after the bound, across the change,
still has a local start_time at or above it."""


@dataclass(frozen=True)
class Bound:
    """What the server says about transactions still running, read before the snapshot.

    `oldest` (Unix seconds) is a lower bound on the start of every transaction that was
    running or not yet started, or None when it cannot be known: this role cannot see other
    sessions, or the server is a hot standby (`recovery`), whose pg_stat_activity lists its
    own sessions and not the primary's transactions whose rows are still to come.
    """

    privileged: bool
    oldest: float | None
    prepared: frozenset[int]
    recovery: bool = False


def read_bound(conn: psycopg.Connection) -> Bound:
    """Read in its own short transaction, which must end before the poll's snapshot: a
    transaction running when the snapshot is taken is then either listed here or started
    after this read. Prepared transactions are read second, so one prepared in between is
    seen there."""
    privileged, oldest, recovery = conn.execute(
        "SELECT pg_has_role('pg_read_all_stats', 'USAGE'),"
        " extract(epoch FROM least(min(xact_start), statement_timestamp()))::float8,"
        " pg_is_in_recovery()"
        " FROM pg_stat_activity").fetchone()  # type: ignore[misc]
    prepared = frozenset(r[0] for r in conn.execute(
        "SELECT transaction::text::bigint FROM pg_prepared_xacts").fetchall())
    conn.rollback()
    usable = bool(privileged) and not recovery
    return Bound(usable, oldest if usable else None, prepared, bool(recovery))


@dataclass
class ChangeScan:
    """The exactly-once change feed over `operation_traces` (see the module docstring).

    `bound` is the start-time bound (Unix seconds) read before `base` was taken; `prepared`
    maps each prepared transaction (32-bit xid) to the bound it was first seen under;
    `full_at` is when the last full pass began (Unix seconds).
    """

    base: Snapshot | None = None
    bound: float | None = None
    recent: dict[str, int] = field(default_factory=dict)
    pass_start: Snapshot | None = None
    pass_base: Snapshot | None = None
    pass_bound: float | None = None
    pass_kind: str | None = None
    cursor: str | int | None = None
    in_pass: bool = False
    prepared: dict[int, float] = field(default_factory=dict)
    last_bound: float | None = None
    full_at: float = 0.0

    def oldest(self, found: Bound) -> float | None:
        """The bound for this poll: running transactions and prepared ones, less a margin."""
        if found.oldest is None:
            return None
        fallback = self.last_bound if self.last_bound is not None else 0.0
        self.prepared = {x: self.prepared.get(x, fallback) for x in found.prepared}
        bound = min([found.oldest, *self.prepared.values()]) - BOUND_MARGIN
        self.last_bound = bound
        return bound

    def begin(self, current: Snapshot, found: Bound, now: float,
              full_pass_interval: float, quick_window: float = QUICK_WINDOW) -> None:
        """Start a pass unless one is under way; its kind follows from what is known."""
        if self.in_pass:
            return
        bound = self.oldest(found)
        self.in_pass = True
        self.pass_start = current
        self.pass_base = self.base
        self.cursor = None
        self.pass_bound = bound
        if self.base is None:
            self.pass_kind = BACKLOG
        elif bound is not None and self.bound is not None:
            self.pass_kind = WINDOW
        elif bound is not None or now - self.full_at >= full_pass_interval:
            self.pass_kind = FULL
            self.full_at = now
        else:
            self.pass_kind = QUICK
            self.pass_bound = now - quick_window

    @property
    def backlog(self) -> bool:
        """The first pass reads everything, in index order (no base to compare with)."""
        return self.pass_base is None

    @property
    def window(self) -> float | None:
        """The start-time bound the current pass reads from, or None for a full scan."""
        if self.pass_kind == WINDOW:
            return self.bound
        if self.pass_kind == QUICK:
            return self.pass_bound
        return None

    @property
    def horizon(self) -> int | None:
        """Versions at or above this xid are remembered once handled: the lowest xid a
        current or next pass reads. None: nothing to remember yet."""
        if self.in_pass:
            snap = self.pass_base if self.pass_base is not None else self.pass_start
        else:
            snap = self.base
        return None if snap is None else snap.xmin

    def seen(self, key: str, xid: int) -> bool:
        """Whether this row version was handled already; marks it handled otherwise."""
        if self.recent.get(key) == xid:
            return True
        horizon = self.horizon
        if horizon is not None and xid >= horizon:
            self.recent[key] = xid
        return False

    def advance(self, last_key: str | int | None, got: int, asked: int) -> None:
        if last_key is not None:
            self.cursor = last_key
        if got < asked:
            assert self.pass_start is not None
            self.in_pass = False
            if self.pass_kind != QUICK:
                self.base = self.pass_start
                self.bound = self.pass_bound
                horizon = self.base.xmin
                self.recent = {k: x for k, x in self.recent.items() if x >= horizon}

    def to_json(self) -> dict[str, Any]:
        return {
            "base": str(self.base) if self.base else None,
            "bound": self.bound,
            "recent": self.recent,
            "pass_start": str(self.pass_start) if self.pass_start else None,
            "pass_base": str(self.pass_base) if self.pass_base else None,
            "pass_bound": self.pass_bound,
            "pass_kind": self.pass_kind,
            "cursor": self.cursor,
            "in_pass": self.in_pass,
            "prepared": [[x, b] for x, b in self.prepared.items()],
            "last_bound": self.last_bound,
            "full_at": self.full_at,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> ChangeScan:
        """Also reads version 1 files, which have no bounds: their next pass is full (or a
        backlog, mid-way), after which window passes take over."""
        if not data:
            return cls()

        def snap(v: str | None) -> Snapshot | None:
            return Snapshot.parse(v) if v else None

        pass_base = snap(data.get("pass_base"))
        in_pass = bool(data.get("in_pass"))
        kind = data.get("pass_kind") or ((FULL if pass_base else BACKLOG) if in_pass else None)
        return cls(base=snap(data.get("base")), bound=data.get("bound"),
                   recent=dict(data.get("recent", {})),
                   pass_start=snap(data.get("pass_start")), pass_base=pass_base,
                   pass_bound=data.get("pass_bound"), pass_kind=kind,
                   cursor=data.get("cursor"), in_pass=in_pass,
                   prepared={int(x): float(b) for x, b in data.get("prepared", [])},
                   last_bound=data.get("last_bound"), full_at=float(data.get("full_at", 0.0)))


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
    bad: str | None = None

    @property
    def ended(self) -> bool:
        return self.end_us is not None


_SPAN_QUERY = """
WITH RECURSIVE batch AS MATERIALIZED (
    SELECT t.span_id, t.trace_id, t.parent_span_id, t.operation_type, t.span_name,
           t.span_status,
           CASE WHEN v.bad IS NULL THEN
               (extract(epoch FROM t.start_time::timestamptz) * 1000000)::bigint END AS start_us,
           CASE WHEN v.bad IS NULL THEN
               (extract(epoch FROM t.end_time::timestamptz) * 1000000)::bigint END AS end_us,
           t.duration_microseconds, t.branch_id, t.user_name, t.session_id,
           t.memory_peak_bytes, t.cpu_microseconds, t.error_message, t.error_code,
           left(t.error_details::text, {max_json}) AS error_details,
           CASE WHEN octet_length(a.text) > {max_json} THEN NULL ELSE a.text END AS attributes,
           coalesce(octet_length(a.text) > {max_json}, false) AS too_large,
           {xid} AS xid, v.bad
    FROM {table} t CROSS JOIN LATERAL (SELECT t.attributes::text AS text OFFSET 0) a
    CROSS JOIN LATERAL (SELECT CASE
        WHEN NOT isfinite(t.start_time) THEN 'start_time:not_finite'
        WHEN t.start_time NOT BETWEEN {lowest} AND {highest} THEN 'start_time:out_of_range'
        WHEN NOT isfinite(t.end_time) THEN 'end_time:not_finite'
        WHEN t.end_time NOT BETWEEN {lowest} AND {highest} THEN 'end_time:out_of_range'
        END AS bad) v
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
       b.error_code, b.error_details, b.attributes, b.too_large, b.xid, r.root, b.bad
FROM batch b JOIN roots r ON r.origin = b.span_id
{branch_join}
{outer_order}
"""
"""One page of spans with the trace id of each span's root.

The parent walk looks each parent up by its key (`OFFSET 0` keeps the lateral subquery a
parameterised index probe): joined as a set, the planner hashes the whole table for every
page, which made reading a backlog quadratic in the table's size. The attributes are cast
to text once (the lateral `a`), not once per use. `bad` names a timestamp the span cannot be
sent with (pgGit accepts 'infinity' and year-1 times); such a row is counted, not read.
"""

LOWEST_TIME = "'1970-01-01'::timestamp"
HIGHEST_TIME = "'2262-01-01'::timestamp"
"""Times outside this range do not fit OTLP's unsigned 64-bit nanoseconds."""


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
            lowest=sql.SQL(LOWEST_TIME), highest=sql.SQL(HIGHEST_TIME),
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
            return self._query(conn, where, order, outer, params)
        # Byte order (COLLATE "C") keeps the planner off the span_id index: walking it in
        # order to find the few matching rows costs a random heap read per row of the table.
        # A window pass is served by the start_time index instead; a full pass is one
        # sequential scan and a top-N sort.
        assert scan.pass_base is not None
        params["bxmin"] = scan.pass_base.xmin
        where = (widen_sql("xmax") + " >= %(bxmin)s AND (%(cursor)s::text IS NULL "
                 "OR t.span_id COLLATE \"C\" > %(cursor)s COLLATE \"C\")")
        window = scan.window
        if window is not None:
            params["bound"] = window
            where += " AND t.start_time >= " + LOCAL_BOUND_SQL
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
