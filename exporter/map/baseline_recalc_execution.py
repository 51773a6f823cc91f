"""baseline_recalc_execution -> finished recalculation runs and the last success per type.

Runs are inserted RUNNING and finished in place, so a run counts once it has left RUNNING.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from exporter.map.base import Context, Gauges, Mapping
from exporter.read.spec import Incremental

TOTAL = "pggit_baseline_recalculations_total"


class BaselineRecalcExecution(Mapping):
    collector = "baseline_recalc_execution"
    table = "baseline_recalc_execution"
    needs = frozenset({"execution_id", "operation_type", "status", "start_time", "end_time"})
    incremental = Incremental(id_column="execution_id", select="operation_type, status",
                              final="status <> 'RUNNING'", time="coalesce(end_time, start_time)")
    counters = (TOTAL,)

    def observe(self, ctx: Context, row: tuple[Any, ...]) -> None:
        _, _, op, status, _ = row
        ctx.agg.inc(TOTAL, (ctx.cap("operation_type", op), status))

    def gauges(self, ctx: Context, conn: psycopg.Connection, table: sql.Composed) -> Gauges:
        rows = conn.execute(sql.SQL(
            """SELECT operation_type,
                      extract(epoch FROM max(coalesce(end_time, start_time))::timestamptz)::float8
               FROM {} WHERE status = 'SUCCESS' GROUP BY 1""").format(table))
        return {"pggit_baseline_recalculation_last_success_timestamp_seconds": {
            (ctx.gauge_label("operation_type", op),): at for op, at in rows}}
