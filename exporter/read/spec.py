"""What the read stage needs to know about a table, and the shapes of a table's other reads.

The read stage runs every query; a mapping (`exporter.map`) only names the reads whose rows
it maps and turns rows into observations. These types live here, upstream, so that read/
needs nothing from map/ and dependencies point one way.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

Row = tuple[Any, ...]


@dataclass(frozen=True)
class Incremental:
    """How to read a table row by row past a read position.

    `select` lists the columns after the id; `final` is a SQL condition for rows that will not
    change any more (rows updated in place, like a merge still running, wait until it holds);
    `time` is the column whose newest value measures lag.
    """

    id_column: str
    select: str
    final: str | None = None
    time: str | None = None


GaugeRead = Callable[[psycopg.Connection, sql.Composed], list[Row]]
"""A table's current-state query (conn, table) -> rows, run once per gauge interval."""

BackfillRead = Callable[
    [psycopg.Connection, sql.Composed, int, Callable[[Iterable[Row]], None]], None]
"""A table's first-start query (conn, table, max_id, observe): hands the rows that stand for
the final rows with id <= max_id to `observe`, streamed, while the query is open."""

Aggregate = Callable[[psycopg.Connection, sql.Composed, int], None]
"""A table's whole first-start aggregate (conn, table, max_id): its read and its mapping
bound together, run by `exporter.read.backfill.start_cursor`."""
