"""Where reading starts on a first start: aggregate what exists, or start from now.

A backfill must count every row already committed exactly once and then hand over to the
incremental reader without a seam. Both happen in one snapshot: the aggregate covers the rows
visible up to the largest id, and every id below it that is not visible (a rollback, or a
transaction still open) becomes a gap, which the incremental reader settles as usual.

The largest and smallest ids come from the primary key's ends, not from a scan, so the work is
the mapping's aggregate (a scan of the table) and the search for holes (a scan of the key,
`exporter.read.holes`). They run at once, on the poll's connection and on a second one that
imports its snapshot (`exporter.db.sibling`), so both see exactly the same rows.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import psycopg
from psycopg import sql

from exporter.db import sibling
from exporter.read.cursor import Gap, IdCursor
from exporter.read.holes import find_holes
from exporter.read.snapshot import Snapshot
from exporter.read.spec import Aggregate, Incremental

BACKFILL_SETTINGS = {
    # The scans cost enough to trigger JIT compilation with inlining and optimisation, which
    # costs more than it saves on these simple expressions (1.3 s of 3 s at 10M rows).
    "jit": "off",
    # Backfills group by label values and holes by chunks of 64 ids, so the groups are few
    # compared with the rows, but the planner cannot know it (it guesses a tenth of the rows
    # or all of them) and, given the memory, sorts every row to group them: 26 s instead of
    # 3 s for the aggregate at 10M rows. Hashing is always right here.
    "enable_sort": "off",
    # The hole scan's hash table has a group per 64 ids (65 MB at 10M rows); with the default
    # 4 MB it spills to disk and takes half again as long.
    "work_mem": "128MB",
}


@contextmanager
def local_settings(conn: psycopg.Connection, settings: dict[str, str]) -> Iterator[None]:
    """Settings for the backfill's statements only; the rest of the poll keeps the session's.

    They are transaction-local, so if a statement fails the poll's rollback undoes them too.
    """
    names = list(settings)
    old = conn.execute(sql.SQL("SELECT {}").format(sql.SQL(", ").join(
        sql.SQL("current_setting({})").format(sql.Literal(n)) for n in names))).fetchone()
    _set_local(conn, settings)
    yield
    _set_local(conn, dict(zip(names, old, strict=True)))


def _set_local(conn: psycopg.Connection, settings: dict[str, str]) -> None:
    conn.execute(sql.SQL("SELECT {}").format(sql.SQL(", ").join(
        sql.SQL("set_config({}, {}, true)").format(sql.Literal(n), sql.Literal(v))
        for n, v in settings.items())))


def _aggregate_and_find_holes(conn: psycopg.Connection, aggregate: Aggregate,
                              table: sql.Composed, id_column: str, lo: int, hi: int
                              ) -> list[tuple[int, int]]:
    """The table's aggregate on `conn` while a second connection, in the same snapshot,
    looks for the holes: two scans of different kinds (heap and key) at once."""
    with sibling(conn) as other:
        if other is None:
            aggregate(conn, table, hi)
            return find_holes(conn, table, id_column, lo, hi)
        with ThreadPoolExecutor(1) as pool:
            holes = pool.submit(find_holes, other, table, id_column, lo, hi)
            aggregate(conn, table, hi)
            return holes.result()


def start_cursor(conn: psycopg.Connection, spec: Incremental, table: sql.Composed,
                 snap: Snapshot, position: str, aggregate: Aggregate | None) -> IdCursor:
    """A cursor for a table seen for the first time.

    With `position` "backfill", `aggregate` (the table's mapping bound to its context, see
    `exporter.map.base.Mapping.aggregate`) counts the existing rows; a table without one is
    read from its first id instead.
    """
    ident = sql.Identifier(spec.id_column)
    lo, hi = conn.execute(sql.SQL("SELECT min({id}), max({id}) FROM {t}").format(
        id=ident, t=table)).fetchone()
    if hi is None or (position == "backfill" and aggregate is None):
        return IdCursor()
    cursor = IdCursor(max_seen=hi)
    if position == "now":
        return cursor
    assert aggregate is not None
    if lo > 1:
        cursor.gaps.append(Gap(1, lo - 1, snap.horizon, snap.now))
    with local_settings(conn, BACKFILL_SETTINGS):
        holes = _aggregate_and_find_holes(conn, aggregate, table, spec.id_column, lo, hi)
    cursor.gaps.extend(Gap(a, b, snap.horizon, snap.now) for a, b in holes)
    if spec.final is not None:
        running = conn.execute(sql.SQL("SELECT {id} FROM {t} WHERE {id} <= %s AND NOT {f}").format(
            id=ident, t=table, f=sql.SQL(spec.final)), (hi,))
        for (i,) in running:
            cursor.wait(i, snap.now)
    return cursor
