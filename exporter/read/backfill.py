"""Where reading starts on a first start: aggregate what exists, or start from now.

A backfill must count every row already committed exactly once and then hand over to the
incremental reader without a seam. Both happen in one snapshot: the aggregate covers the rows
visible up to the largest id, and every id below it that is not visible (a rollback, or a
transaction still open) becomes a gap, which the incremental reader settles as usual.
"""

from __future__ import annotations

import psycopg
from psycopg import sql

from exporter.map.base import Context, Mapping
from exporter.read.cursor import Gap, IdCursor
from exporter.read.incremental import Snapshot


def start_cursor(conn: psycopg.Connection, mapping: Mapping, table: sql.Composed,
                 ctx: Context, snap: Snapshot, position: str) -> IdCursor:
    """A cursor for a table seen for the first time; aggregates its rows into `ctx` if asked."""
    spec = mapping.incremental
    assert spec is not None
    ident = sql.Identifier(spec.id_column)
    lo, hi, count = conn.execute(sql.SQL("SELECT min({id}), max({id}), count(*) FROM {t}").format(
        id=ident, t=table)).fetchone()
    if hi is None or (position == "backfill" and not mapping.aggregate_backfill):
        return IdCursor()
    cursor = IdCursor(max_seen=hi)
    if position == "now":
        return cursor
    mapping.backfill(ctx, conn, table, hi)
    if lo > 1:
        cursor.gaps.append(Gap(1, lo - 1, snap.xmax, snap.now))
    if count != hi - lo + 1:
        holes = conn.execute(sql.SQL(
            """SELECT lo, hi FROM (SELECT {id} + 1 AS lo, lead({id}) OVER (ORDER BY {id}) - 1 AS hi
                                 FROM {t} WHERE {id} <= %s) s
               WHERE hi >= lo""").format(id=ident, t=table), (hi,))
        cursor.gaps.extend(Gap(a, b, snap.xmax, snap.now) for a, b in holes)
    if spec.final is not None:
        running = conn.execute(sql.SQL("SELECT {id} FROM {t} WHERE {id} <= %s AND NOT {f}").format(
            id=ident, t=table, f=sql.SQL(spec.final)), (hi,))
        for (i,) in running:
            cursor.wait(i, snap.now)
    return cursor
