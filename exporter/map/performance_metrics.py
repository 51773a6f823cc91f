"""performance_metrics -> operation histograms, error/CPU/row counters and violations.

This is the hot path (one row per pgGit operation), so a row is mapped with integer bucket
thresholds and cached label tuples, and the first start aggregates the existing rows in SQL
instead of replaying them.
"""

from __future__ import annotations

import math
import sys
from array import array
from bisect import bisect_right
from collections import Counter
from math import floor
from typing import Any

import psycopg
from psycopg import sql

from exporter.aggregates import Labels, thresholds_us
from exporter.counts import NEGATIVE, NOT_FINITE, NULL
from exporter.map.base import Context, Incremental, Mapping
from exporter.map.performance_baselines import BaselineHistory
from exporter.native import NativeSpec, Positions

HIST = "pggit_operation_duration_seconds"
ERRORS = "pggit_operation_errors_total"
CPU = "pggit_operation_cpu_seconds_total"
ROWS = "pggit_operation_rows_affected_total"
VIOLATIONS = "pggit_operation_baseline_violations_total"


class PerformanceMetrics(Mapping):
    collector = "performance_metrics"
    table = "performance_metrics"
    needs = frozenset({"metric_id", "operation_type", "branch_id", "duration_microseconds",
                       "cpu_microseconds", "rows_affected", "error_details", "recorded_at"})
    incremental = Incremental(
        id_column="metric_id",
        select="operation_type, branch_id, duration_microseconds, cpu_microseconds, "
               "rows_affected, error_details IS NOT NULL",
        time="recorded_at",
    )
    counters = (ERRORS, CPU, ROWS, VIOLATIONS)
    aggregate_backfill = True

    def __init__(self, bounds: tuple[float, ...], baselines: BaselineHistory,
                 native: NativeSpec | None = None):
        self.thresholds = thresholds_us(bounds)
        self.native = NativeSpec() if native is None else native
        self.positions = Positions(self.native, self.thresholds)
        if len(self.positions.thresholds) >= 1 << 15:
            raise ValueError("too many bucket thresholds for the backfill's two-byte positions")
        self.baselines = baselines

    def observe_rows(self, ctx: Context, rows: list[tuple[Any, ...]]) -> None:
        """Map a page of rows with per-series sums flushed once per page.

        Labels, the histogram cell and the lowest baseline threshold are resolved once per
        (operation, branch id) in the page, so a row costs a bucket bisect and a few integer
        additions. Sums stay integer microseconds until the flush, which also makes them add up
        exactly like the aggregate backfill does. Only a row above its operation's lowest
        threshold is judged against the baseline history. Native buckets are filed at the
        flush, all rows of a series at once (see `_Series.flush`). One bisect among both
        kinds of threshold (`exporter.native.Positions`) tells a row's classic and native
        bucket: a bisect of the native thresholds and an int per row less than bisecting
        each kind.
        """
        page: dict[tuple[str, int | None], _Series] = {}
        thresholds, classic_of = self.positions.thresholds, self.positions.classic
        for key, _, op, branch_id, us, cpu, affected, failed, at in rows:
            if us is None or us < 0:
                ctx.invalid(self.table, key, "duration_microseconds",
                            NULL if us is None else NEGATIVE, us)
                continue
            s = page.get((op, branch_id))
            if s is None:
                s = page[(op, branch_id)] = self._series(ctx, op, branch_id)
            position = bisect_right(thresholds, us)
            s.cell[classic_of[position]] += 1
            s.positions.append(position)
            s.us += us
            if failed:
                s.failed += 1
            # Zero and NULL skip both tests; a negative count is left out, as invalid.
            if cpu:
                if cpu > 0:
                    s.cpu += cpu
                else:
                    ctx.invalid(self.table, key, "cpu_microseconds", NEGATIVE, cpu)
            if affected:
                if affected > 0:
                    s.affected += affected
                else:
                    ctx.invalid(self.table, key, "rows_affected", NEGATIVE, affected)
            if us > s.lowest:
                threshold = self.baselines.threshold_at(op, branch_id, at)
                if threshold is not None and us > threshold:
                    s.violations += 1
        for s in page.values():
            s.flush(ctx, self.native, self.positions)

    @staticmethod
    def _labels(ctx: Context, op: str, branch_id: int | None) -> tuple[Labels, tuple[str, ...]]:
        """The series' labels and the names of those folded into __other__ (not yet counted:
        the overflow counter counts rows, and the callers know how many a series stands for)."""
        op_label, op_folded = ctx.cap.fold("operation_type", op)
        branch_label, branch_folded = ctx.cap.fold("branch", ctx.branch_name(branch_id))
        folded = (("operation_type",) if op_folded else ()) + (
            ("branch",) if branch_folded else ())
        return (op_label, branch_label), folded

    def _series(self, ctx: Context, op: str, branch_id: int | None) -> _Series:
        labels, folded = self._labels(ctx, op, branch_id)
        cells = ctx.agg.histograms[HIST]
        cell = cells.get(labels)
        if cell is None:
            cell = cells[labels] = [0] * (len(self.thresholds) + 1) + [0.0]
            # Born at zero: the alert rules count a violation counter's first sample as
            # history, so it must exist before the (operation, branch)'s first violation.
            ctx.agg.touch(VIOLATIONS, labels)
        lowest = self.baselines.min_threshold.get(op)
        return _Series(labels, cell, int(lowest) if lowest is not None and lowest.is_finite()
                       else math.inf, folded)

    def backfill(self, ctx: Context, conn: psycopg.Connection, table: sql.Composed,
                 max_id: int) -> None:
        """One grouped scan for the histograms, one filtered scan for violation candidates.

        The grouped scan aggregates in two stages. SQL sums each series (operation, branch
        id) and hands over each row's bucket position, two bytes a row (`string_agg` of
        `int2send`); Python counts the positions per series (`Counter` over an array, in C).
        Grouping in SQL by series and by bucket, with a hundred native buckets per series,
        built a hash table of some 150 groups per series that cost twice the scan (1M rows:
        1.9 s of a 2.8 s backfill, against 0.5 s with the classic buckets alone).

        The position is the row's place among the classic and native thresholds merged
        (`exporter.native.Positions`; `width_bucket` is `bisect_right`, as `observe_rows`
        files a row), which tells both buckets.

        The series are read one at a time from the result (2 bytes a row in all, 20 MB at 10M
        rows), not all made Python rows at once.

        Rows the incremental path rejects (NULL or negative duration) are counted per series
        and left out of the rest, and negative CPU or row counts and infinite times are
        counted per series, so they are counted as invalid exactly as replaying them would.
        """
        n = len(self.thresholds) + 1
        first = self.native.first
        classic_of, native_of = self.positions.classic, self.positions.native
        rows = conn.execute(sql.SQL(
            """SELECT operation_type, branch_id,
                      count(*) FILTER (WHERE duration_microseconds IS NULL),
                      count(*) FILTER (WHERE duration_microseconds < 0),
                      count(*) FILTER (WHERE NOT isfinite(recorded_at)),
                      sum(duration_microseconds) FILTER (WHERE duration_microseconds >= 0),
                      count(*) FILTER (WHERE duration_microseconds >= 0
                                         AND error_details IS NOT NULL),
                      sum(cpu_microseconds) FILTER (WHERE duration_microseconds >= 0
                                                      AND cpu_microseconds >= 0),
                      sum(rows_affected) FILTER (WHERE duration_microseconds >= 0
                                                   AND rows_affected >= 0),
                      count(*) FILTER (WHERE duration_microseconds >= 0
                                         AND cpu_microseconds < 0),
                      count(*) FILTER (WHERE duration_microseconds >= 0
                                         AND rows_affected < 0),
                      string_agg(int2send(width_bucket(duration_microseconds,
                                                       %(positions)s::bigint[])::int2),
                                 ''::bytea) FILTER (WHERE duration_microseconds >= 0)
               FROM {} WHERE metric_id <= %(max)s
               GROUP BY 1, 2""").format(table),
            {"positions": self.positions.thresholds, "max": max_id})
        key = f"metric_id <= {max_id} (backfill)"
        odd: dict[tuple[str, str], int] = {}
        for (op, branch_id, null, negative, bad_time, total, failed, cpu, affected, bad_cpu,
             bad_rows, positions) in rows:
            for column, bad in ((("duration_microseconds", NULL), null),
                                (("duration_microseconds", NEGATIVE), negative),
                                (("recorded_at", NOT_FINITE), bad_time),
                                (("cpu_microseconds", NEGATIVE), bad_cpu),
                                (("rows_affected", NEGATIVE), bad_rows)):
                odd[column] = odd.get(column, 0) + bad
            if positions is None:
                continue  # only rows with invalid durations
            counted = array("h")
            counted.frombytes(positions)
            if sys.byteorder == "little":
                counted.byteswap()  # int2send writes network order
            counts = [0] * n
            native: Counter[int] = Counter()
            zero = 0
            for position, count in Counter(counted).items():
                counts[classic_of[position]] += count
                index = native_of[position]
                if index:
                    native[first + index] += count
                else:
                    zero += count
            labels, folded = self._labels(ctx, op, branch_id)
            for label in folded:
                ctx.cap.overflowed(label, len(counted))
            ctx.agg.add_buckets(HIST, labels, counts, float(total) / 1e6)
            ctx.agg.add_native(HIST, labels, native, zero)
            ctx.agg.touch(VIOLATIONS, labels)
            for name, amount in ((ERRORS, failed), (CPU, float(cpu or 0) / 1e6),
                                 (ROWS, affected or 0)):
                if amount:
                    ctx.agg.inc(name, labels, float(amount))
        self._count_odd(ctx, key, odd)
        minimum = self.baselines.min_threshold
        if not minimum:
            return
        # Durations are bigints, so `us > floor(threshold)` keeps every row over the threshold
        # without casting each row to numeric; clamped to [-1, max bigint], so negative
        # (invalid) durations stay out as in `observe` and the bound always fits. Comparing
        # with the lowest bound first spares most rows the join. The exact test, against the
        # baseline in force when the row was written, is made below.
        floors = [min(max(floor(v), -1), 2**63 - 1) if v.is_finite() else 2**63 - 1
                  for v in minimum.values()]
        candidates = conn.execute(sql.SQL(
            """SELECT m.operation_type, m.branch_id,
                      extract(epoch FROM m.recorded_at::timestamptz)::float8,
                      m.duration_microseconds
               FROM {} m JOIN unnest(%(ops)s::text[], %(thr)s::bigint[]) AS t(op, thr)
                 ON t.op = m.operation_type
               WHERE m.metric_id <= %(max)s AND m.duration_microseconds > %(lowest)s
                 AND m.duration_microseconds > t.thr"""
        ).format(table), {"ops": list(minimum), "thr": floors, "lowest": min(floors),
                          "max": max_id})
        for op, branch_id, at, us in candidates:
            threshold = self.baselines.threshold_at(op, branch_id, at)
            if threshold is not None and us > threshold:
                ctx.agg.inc(VIOLATIONS, self._labels(ctx, op, branch_id)[0])

    def _count_odd(self, ctx: Context, key: str, odd: dict[tuple[str, str], int]) -> None:
        for (column, reason), rows in odd.items():
            if rows:
                ctx.invalid(self.table, key, column, reason, rows=rows)


class _Series:
    """One (operation, branch id)'s sums within a page, added to the aggregates at the end.

    `lowest` is the floor of the operation's lowest baseline threshold: a duration not above
    it cannot exceed any of the operation's thresholds, so most rows skip the history lookup.
    A series with a folded label counts into a cell of its own first: several values share
    the `__other__` cell, and the overflow counter needs this series' rows alone.
    """

    __slots__ = ("affected", "cell", "cpu", "failed", "folded", "labels", "lowest", "positions",
                 "target", "us", "violations")

    def __init__(self, labels: Labels, target: list[float], lowest: float,
                 folded: tuple[str, ...]):
        self.labels = labels
        self.target = target
        self.cell = [0] * len(target) if folded else target
        self.lowest = lowest
        self.folded = folded
        self.positions: list[int] = []
        self.us = self.failed = self.cpu = self.affected = self.violations = 0

    def flush(self, ctx: Context, native: NativeSpec, positions: Positions) -> None:
        """Add the page's sums; the native buckets count the page's rows of the series by
        their positions in one pass of C code (`NativeCell.add_positions`)."""
        agg, labels, target = ctx.agg, self.labels, self.target
        agg.native_cell(HIST, labels).add_positions(native, positions, self.positions)
        if self.folded:
            rows = sum(self.cell)
            for i, count in enumerate(self.cell):
                target[i] += count
            for label in self.folded:
                ctx.cap.overflowed(label, rows)
        target[-1] += self.us / 1e6
        for name, amount in ((ERRORS, self.failed), (CPU, self.cpu / 1e6),
                             (ROWS, self.affected), (VIOLATIONS, self.violations)):
            if amount:
                agg.inc(name, labels, amount)
