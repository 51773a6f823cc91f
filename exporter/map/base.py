"""What every table mapping provides, and the context a mapping observes rows into.

A mapping knows one pgGit table: which columns it needs, which of the read stage's queries
feed it (`exporter.read`'s module of the same name: the incremental read spec, the gauge
query, the first start's query), how one row becomes observations, and how the first start's
rows are counted. It never sees a connection: the read stage runs every query, in the poll's
snapshot, and hands rows over. The read stage and the poller are the same for all of them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from functools import partial
from math import isfinite
from typing import Any

from exporter.aggregates import Aggregates, Labels
from exporter.counts import INVALID, NOT_FINITE, OVERFLOW, Counts
from exporter.labels import LabelCap
from exporter.read.spec import Aggregate, BackfillRead, GaugeRead, Incremental, Row

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
    read_gauges: GaugeRead | None = None
    """The read stage's current-state query whose rows `gauges` maps, if the table has gauges
    (a `staticmethod` of the function in the table's `exporter.read` module)."""
    read_backfill: BackfillRead | None = None
    """The read stage's first-start query whose rows `observe_backfill` counts."""

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
        to this poll's context for `exporter.read.backfill.start_cursor`; None replays them.

        The read stage's `read_backfill` runs the query and hands its rows to
        `observe_backfill`. performance_metrics still runs its own queries in a
        `backfill(ctx, conn, table, max_id)` (the exception tests/test_layout_imports.py names).
        """
        if not self.aggregate_backfill:
            return None
        read = self.read_backfill
        if read is None:
            return partial(self.backfill, ctx)
        observe = partial(self.observe_backfill, ctx)
        return lambda conn, table, max_id: read(conn, table, max_id, observe)

    def observe_backfill(self, ctx: Context, rows: Iterable[Row]) -> None:
        """The rows of `read_backfill`, which stand for the final rows up to the first start."""

    def gauges(self, ctx: Context, rows: list[Row]) -> Gauges:
        """Current-state series from the rows of `read_gauges`, rebuilt whole so that vanished
        label sets disappear."""
        return {}
