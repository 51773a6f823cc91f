"""The poll's snapshot: which transactions it sees, and the clocks it was taken at.

One type for every source of a poll. The id cursors of the metrics tables need `xmin` (every
writer below it has ended) and `horizon` (see below); the span change feed needs the whole
`pg_snapshot` (`xmin:xmax:xip`), which it keeps in the checkpoint as text, and the statement's
clock for span timeouts.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import psycopg


@dataclass(frozen=True)
class Snapshot:
    """A `pg_snapshot` as plain data (64-bit xids), with the clocks of the poll.

    `horizon` is the next xid to be assigned when the snapshot was taken, so every transaction
    that had an xid then has one below it. It is not the snapshot's xmax: PostgreSQL sets xmax
    to the newest *completed* xid + 1, so a running transaction newer than that is neither
    below xmax nor among the in-progress xids, and does not hold back a later xmin either.

    Only the xids take part in equality and in the text form: a snapshot restored from a
    checkpoint has no clocks (they are 0), and is still the same snapshot.
    """

    xmin: int
    xmax: int
    xip: frozenset[int] = frozenset()
    horizon: int = field(default=0, compare=False)
    db_now: float = field(default=0.0, compare=False)
    """The transaction's start, `now()`, in Unix seconds: the reference for lag."""
    now: float = field(default=0.0, compare=False)
    """The exporter's wall clock when the snapshot was taken: the reference for grace times."""
    statement_us: int = field(default=0, compare=False)
    """The snapshot statement's own start (Unix microseconds): the reference for span
    timeouts, as exact as the span timestamps it is compared with."""

    @classmethod
    def parse(cls, text: str) -> Snapshot:
        """The text form of `pg_snapshot` (`xmin:xmax:xip,...`), as checkpoints keep it."""
        xmin, xmax, xip = text.split(":")
        return cls(int(xmin), int(xmax), frozenset(int(x) for x in xip.split(",") if x))

    def __str__(self) -> str:
        return f"{self.xmin}:{self.xmax}:{','.join(str(x) for x in sorted(self.xip))}"


_SNAPSHOT = """
SELECT snap::text, base + age((base % 4294967296)::text::xid), db_now, statement_us
  FROM (SELECT s AS snap,
               CASE WHEN pg_snapshot_xmax(s)::text::bigint % 4294967296 >= 3
                    THEN pg_snapshot_xmax(s)::text::bigint
                    ELSE pg_snapshot_xmax(s)::text::bigint - 3 END AS base,
               extract(epoch FROM now())::float8 AS db_now,
               (extract(epoch FROM statement_timestamp()) * 1000000)::bigint AS statement_us
          FROM pg_current_snapshot() s) AS snap"""
"""age() of a 32-bit xid is the next xid minus it (read once per transaction, here after the
snapshot was taken). `base` is xmax, or 3 below it just after the 32-bit counter wrapped,
because the special xids 0-2 have an age() of INT_MAX."""


def take_snapshot(conn: psycopg.Connection, wall: float) -> Snapshot:
    """The snapshot of the transaction open on `conn` (REPEATABLE READ: the first statement
    fixes it, so this is the snapshot every later read of the poll sees)."""
    text, horizon, db_now, statement_us = conn.execute(_SNAPSHOT).fetchone()  # type: ignore[misc]
    parsed = Snapshot.parse(text)
    return Snapshot(parsed.xmin, parsed.xmax, parsed.xip, horizon, db_now, wall, statement_us)
