"""merge_performance_metrics -> merge phase histograms and merge counters.

A merge row can be written while the merge runs (completed_at NULL) and completed in place
later, so a row counts only once it is final: completed, or FAILED/ABANDONED, which may never
get a completion time.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from exporter.map.base import Context, Gauges, Mapping
from exporter.read.spec import Incremental

HIST = "pggit_merge_duration_seconds"
MERGES = "pggit_merges_total"
CONFLICTS = "pggit_merge_conflicts_total"
AUTO = "pggit_merge_auto_resolutions_total"
FINAL = "(completed_at IS NOT NULL OR merge_status IN ('FAILED', 'ABANDONED'))"
PHASES = ("merge_base", "conflict_detection", "auto_resolution", "total")


class MergePerformanceMetrics(Mapping):
    collector = "merge_performance_metrics"
    table = "merge_performance_metrics"
    needs = frozenset({"merge_metric_id", "source_branch_id", "target_branch_id",
                       "merge_base_calculation_us", "conflict_detection_us", "conflict_count",
                       "auto_resolution_us", "auto_resolution_success_count",
                       "auto_resolution_failure_count", "total_merge_us", "merge_status",
                       "started_at", "completed_at"})
    incremental = Incremental(
        id_column="merge_metric_id",
        select="source_branch_id, target_branch_id, merge_status, merge_base_calculation_us, "
               "conflict_detection_us, auto_resolution_us, total_merge_us, conflict_count, "
               "auto_resolution_success_count, auto_resolution_failure_count",
        final=FINAL,
        time="coalesce(completed_at, started_at)",
    )
    counters = (MERGES, CONFLICTS, AUTO)
    aggregate_backfill = True

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

    def backfill(self, ctx: Context, conn: psycopg.Connection, table: sql.Composed,
                 max_id: int) -> None:
        """Merges are few compared with operations; the replay reuses observe() exactly."""
        query = sql.SQL("SELECT merge_metric_id, true, {}, 0 FROM {} "
                        "WHERE merge_metric_id <= %s AND {}").format(
            sql.SQL(self.incremental.select), table, sql.SQL(FINAL))
        with conn.cursor(name="pggit_merge_backfill") as cur:
            cur.execute(query, (max_id,))
            for row in cur:
                self.observe(ctx, row)

    def gauges(self, ctx: Context, conn: psycopg.Connection, table: sql.Composed) -> Gauges:
        (running,) = conn.execute(sql.SQL(
            "SELECT count(*) FROM {} WHERE NOT {}").format(table, sql.SQL(FINAL))).fetchone()
        return {"pggit_merges_running": {(): running}}
