"""What every table mapping provides, and the context a mapping observes rows into.

A mapping knows one pgGit table: which columns it needs, how to read it incrementally (or
only as gauges), how one row becomes observations, and how to aggregate the existing rows on
a first start. The read stage and the poller are the same for all of them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial
from math import isfinite
from typing import Any

import psycopg
from psycopg import sql

from exporter.aggregates import Aggregates, Labels
from exporter.counts import INVALID, NOT_FINITE, OVERFLOW, Counts
from exporter.labels import LabelCap
from exporter.read.spec import Aggregate, Incremental

log = logging.getLogger("exporter.map")

Gauges = dict[str, dict[Labels, float]]


class Context:
    """Everything a mapping needs while observing rows of one poll."""

    def __init__(self, database: str, published: Aggregates, cap: LabelCap,
                 branch_name: Callable[[int | None], str], counts: Counts | None = None):
        self.database = database
        self.counts = Counts() if counts is None else counts.copy()
        self.cap = cap.counting(lambda label, rows: self.counts.inc(OVERFLOW, (label,), rows))
        self.branch_name = branch_name
        self._published = published
        self._agg: Aggregates | None = None

    def invalid(self, table: str, key: Any, column: str, reason: str, value: Any = None,
                rows: int = 1) -> None:
        """A row (or `rows` rows of a backfill group) with a value that cannot be mapped as
        it is: counted in the poll's copy of the exporter's counters, with one log line."""
        self.counts.inc(INVALID, (table, reason), rows)
        log.warning("invalid row", extra={"database": self.database, "table": table,
                                          "key": key, "column": column, "reason": reason,
                                          "value": repr(value), "rows": rows})

    @property
    def agg(self) -> Aggregates:
        """The poll's own copy of the aggregates, made when a mapping first needs it.

        A failed poll must leave the published state untouched, so mappings never write to
        it; copying lazily spares the many polls of a quiet database that observe nothing.
        """
        if self._agg is None:
            self._agg = self._published.copy()
        return self._agg

    def result(self) -> Aggregates:
        """What the poll ends with: its copy if anything was observed, else the published."""
        return self._published if self._agg is None else self._agg

    def branch(self, branch_id: int | None) -> str:
        return self.cap("branch", self.branch_name(branch_id))

    def gauge_label(self, label: str, value: str | None) -> str:
        """Label values for gauges go through the cap without spending it (see LabelCap.peek)."""
        return self.cap.peek(label, value)

    def gauge_branch(self, branch_id: int | None) -> str:
        return self.cap.peek("branch", self.branch_name(branch_id))


class Mapping:
    """Base class: subclasses set the attributes and override what their table supports."""

    collector: str = ""
    table: str = ""
    needs: frozenset[str] = frozenset()
    incremental: Incremental | None = None
    counters: tuple[str, ...] = ()
    aggregate_backfill: bool = False

    def observe(self, ctx: Context, row: tuple[Any, ...]) -> None:
        """One final row (id, final flag, then `incremental.select` columns, then time)."""

    def observe_rows(self, ctx: Context, rows: list[tuple[Any, ...]]) -> None:
        """A page of final rows; a hot table overrides this to resolve labels once per page."""
        for row in rows:
            self.observe(ctx, row)

    def observe_page(self, ctx: Context, rows: list[tuple[Any, ...]]) -> None:
        """What the reader hands over: rows whose time is +-infinity (pgGit's timestamps
        accept them) are counted as invalid and otherwise mapped as usual (the reader leaves
        them out of the lag), then the page goes to `observe_rows`."""
        if self.incremental is not None and self.incremental.time is not None:
            for row in rows:
                at = row[-1]
                if at is not None and not isfinite(at):
                    ctx.invalid(self.table, row[0], self.incremental.time, NOT_FINITE, at)
        self.observe_rows(ctx, rows)

    def aggregate(self, ctx: Context) -> Aggregate | None:
        """How a first start counts the rows that already exist (`aggregate_backfill`), bound
        to this poll's context for `exporter.read.backfill.start_cursor`; None replays them."""
        return partial(self.backfill, ctx) if self.aggregate_backfill else None

    def backfill(self, ctx: Context, conn: psycopg.Connection, table: sql.Composed,
                 max_id: int) -> None:
        """Aggregate the final rows with id <= max_id in one query instead of replaying them."""

    def gauges(self, ctx: Context, conn: psycopg.Connection, table: sql.Composed) -> Gauges:
        """Current-state series, rebuilt whole so that vanished label sets disappear."""
        return {}
