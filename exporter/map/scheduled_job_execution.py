"""scheduled_job_execution -> finished job runs and the last success per job.

Runs are inserted RUNNING and finished in place, so a run counts once it has left RUNNING.
"""

from __future__ import annotations

from typing import Any

from exporter.map.base import Context, Gauges, Mapping
from exporter.read import scheduled_job_execution as read
from exporter.read.spec import Row

TOTAL = "pggit_scheduled_job_runs_total"


class ScheduledJobExecution(Mapping):
    collector = "scheduled_job_execution"
    table = "scheduled_job_execution"
    needs = frozenset({"job_execution_id", "job_name", "status", "execution_start",
                       "execution_end"})
    incremental = read.INCREMENTAL
    counters = (TOTAL,)
    read_gauges = staticmethod(read.gauge_rows)

    def observe(self, ctx: Context, row: tuple[Any, ...]) -> None:
        _, _, job, status, _ = row
        ctx.agg.inc(TOTAL, (ctx.cap("job_name", job), status))

    def gauges(self, ctx: Context, rows: list[Row]) -> Gauges:
        return {"pggit_scheduled_job_last_success_timestamp_seconds": {
            (ctx.gauge_label("job_name", job),): at for job, at in rows}}
