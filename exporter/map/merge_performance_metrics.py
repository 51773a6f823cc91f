"""merge_performance_metrics -> merge phase histograms and merge counters.

A merge row can be written while the merge runs (completed_at NULL) and completed in place
later, so a row counts only once it is final (`exporter.read.merge_performance_metrics.FINAL`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from exporter.map.base import Context, Gauges, Mapping
from exporter.read import merge_performance_metrics as read
from exporter.read.spec import Row

HIST = "pggit_merge_duration_seconds"
MERGES = "pggit_merges_total"
CONFLICTS = "pggit_merge_conflicts_total"
AUTO = "pggit_merge_auto_resolutions_total"
PHASES = ("merge_base", "conflict_detection", "auto_resolution", "total")


class MergePerformanceMetrics(Mapping):
    collector = "merge_performance_metrics"
    table = "merge_performance_metrics"
    needs = frozenset({"merge_metric_id", "source_branch_id", "target_branch_id",
                       "merge_base_calculation_us", "conflict_detection_us", "conflict_count",
                       "auto_resolution_us", "auto_resolution_success_count",
                       "auto_resolution_failure_count", "total_merge_us", "merge_status",
                       "started_at", "completed_at"})
    incremental = read.INCREMENTAL
    counters = (MERGES, CONFLICTS, AUTO)
    aggregate_backfill = True
    read_backfill = staticmethod(read.backfill_rows)
    read_gauges = staticmethod(read.gauge_rows)

    def observe(self, ctx: Context, row: tuple[Any, ...]) -> None:
        source, target, status, *phases_us, conflicts, ok, failed = row[2:-1]
        source_name, target_name = ctx.branch(source), ctx.branch(target)
        for phase, us in zip(PHASES, phases_us, strict=True):
            if us is not None and us >= 0:
                ctx.agg.observe(HIST, (phase, status, target_name), us / 1e6)
        ctx.agg.inc(MERGES, (source_name, target_name, status))
        if conflicts:
            ctx.agg.inc(CONFLICTS, (source_name, target_name), conflicts)
        if ok:
            ctx.agg.inc(AUTO, ("success",), ok)
        if failed:
            ctx.agg.inc(AUTO, ("failure",), failed)

    def observe_backfill(self, ctx: Context, rows: Iterable[Row]) -> None:
        """Merges are few compared with operations; the replay reuses observe() exactly."""
        for row in rows:
            self.observe(ctx, row)

    def gauges(self, ctx: Context, rows: list[Row]) -> Gauges:
        [(running,)] = rows
        return {"pggit_merges_running": {(): running}}
