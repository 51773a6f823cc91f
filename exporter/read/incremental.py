"""Reading one table past its cursor, inside the poll's snapshot, exactly once.

Each poll first looks again at the pending ranges (gaps and waiting rows), then reads new
rows past `max_seen` in id order, then settles gaps whose writers have all ended. Every row
handed to the mapping is final and has never been handed over before.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from math import isfinite
from operator import itemgetter

import psycopg
from psycopg import sql

from exporter.read.cursor import IdCursor
from exporter.read.snapshot import Snapshot
from exporter.read.spec import Incremental, Row

_TIME = itemgetter(-1)


def finite_epoch(time: str) -> str:
    """SQL for a timestamp expression as Unix time, NULL where it is +-infinity."""
    return (f"CASE WHEN isfinite({time}) "
            f"THEN extract(epoch FROM ({time})::timestamptz)::float8 END")


def _select(spec: Incremental, table: sql.Composed) -> sql.Composed:
    final = sql.SQL(spec.final or "true")
    when = sql.SQL(f"extract(epoch FROM ({spec.time})::timestamptz)::float8"
                   if spec.time else "NULL::float8")
    return sql.SQL("SELECT {id}, {final}, {cols}, {when} FROM {table}").format(
        id=sql.Identifier(spec.id_column), final=final, cols=sql.SQL(spec.select),
        when=when, table=table)


@dataclass
class Result:
    """What one table's read produced in a poll."""

    rows: int = 0
    newest: float | None = None
    backlog: bool = False
    settled_gaps: int = 0

    def took(self, rows: list[Row]) -> None:
        """Count a page handed to the mapping and the newest time in it.

        Times of +-infinity (pgGit's timestamps accept them) say nothing about lag and could
        not be saved in the checkpoint's JSON, so the newest finite time counts; the mapping
        counts such rows as invalid (`Mapping.observe_page`).
        """
        if not rows:
            return
        self.rows += len(rows)
        try:
            newest = max(map(_TIME, rows))
        except TypeError:
            newest = None
        if newest is None or not isfinite(newest):
            newest = max((r[-1] for r in rows if r[-1] is not None and isfinite(r[-1])),
                         default=None)
        if newest is not None and (self.newest is None or newest > self.newest):
            self.newest = newest


def read_table(conn: psycopg.Connection, spec: Incremental, table: sql.Composed,
               cursor: IdCursor, snap: Snapshot, batch: int, max_rows: int, grace: float,
               observe: Callable[[list[Row]], None]) -> Result:
    """Hand every newly final row to `observe` once, a page at a time, and move the cursor.

    Pages are fetched in binary (numbers arrive without text parsing) and handed over whole,
    so the per-row cost is the mapping's own; a page without holes moves the cursor in O(1).
    """
    result = Result()
    base = _select(spec, table)
    ident = sql.Identifier(spec.id_column)

    if cursor.gaps or cursor.waiting:
        lows, highs = cursor.pending_ranges()
        query = sql.SQL("{base} JOIN unnest(%s::bigint[], %s::bigint[]) AS r(lo, hi) "
                        "ON {id} BETWEEN r.lo AND r.hi").format(base=base, id=ident)
        final: list[Row] = []
        still: dict[int, float] = {}
        for row in conn.execute(query, (lows, highs), binary=True):
            if row[1]:
                final.append(row)
            else:
                still[row[0]] = cursor.waiting.get(row[0], snap.now)
        cursor.found({r[0] for r in final} | set(still))
        cursor.waiting.update(still)
        result.settled_gaps = cursor.settle(snap.xmin, snap.now, grace, set(still))
        result.took(final)
        observe(final)

    query = sql.SQL("{base} WHERE {id} > %s ORDER BY {id} LIMIT %s").format(base=base, id=ident)
    read = 0
    while True:
        page = conn.execute(query, (cursor.max_seen, batch), binary=True).fetchall()
        if not page:
            break
        if not cursor.extend(page[-1][0], len(page)):
            cursor.advance([r[0] for r in page], snap.horizon, snap.now)
        rows = page
        if spec.final is not None:
            for row in page:
                if not row[1]:
                    cursor.wait(row[0], snap.now)
            rows = [r for r in page if r[1]]
        result.took(rows)
        observe(rows)
        read += len(page)
        if len(page) < batch:
            break
        if read >= max_rows:
            result.backlog = True
            break
    return result
