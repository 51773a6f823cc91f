"""scheduled_job_execution -> finished job runs and the last success per job.

Runs are inserted RUNNING and finished in place, so a run counts once it has left RUNNING.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from exporter.map.base import Context, Gauges, Mapping
from exporter.read.spec import Incremental

TOTAL = "pggit_scheduled_job_runs_total"


class ScheduledJobExecution(Mapping):
    collector = "scheduled_job_execution"
    table = "scheduled_job_execution"
    needs = frozenset({"job_execution_id", "job_name", "status", "execution_start",
                       "execution_end"})
    incremental = Incremental(id_column="job_execution_id", select="job_name, status",
                              final="status <> 'RUNNING'",
                              time="coalesce(execution_end, execution_start)")
    counters = (TOTAL,)

    def observe(self, ctx: Context, row: tuple[Any, ...]) -> None:
        _, _, job, status, _ = row
        ctx.agg.inc(TOTAL, (ctx.cap("job_name", job), status))

    def gauges(self, ctx: Context, conn: psycopg.Connection, table: sql.Composed) -> Gauges:
        rows = conn.execute(sql.SQL(
            """SELECT job_name, extract(epoch FROM
                      max(coalesce(execution_end, execution_start))::timestamptz)::float8
               FROM {} WHERE status = 'SUCCESS' GROUP BY 1""").format(table))
        return {"pggit_scheduled_job_last_success_timestamp_seconds": {
            (ctx.gauge_label("job_name", job),): at for job, at in rows}}
