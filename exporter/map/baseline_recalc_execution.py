"""baseline_recalc_execution -> finished recalculation runs and the last success per type.

Runs are inserted RUNNING and finished in place, so a run counts once it has left RUNNING.
"""

from __future__ import annotations

from typing import Any

from exporter.map.base import Context, Gauges, Mapping
from exporter.read import baseline_recalc_execution as read
from exporter.read.spec import Row

TOTAL = "pggit_baseline_recalculations_total"


class BaselineRecalcExecution(Mapping):
    collector = "baseline_recalc_execution"
    table = "baseline_recalc_execution"
    needs = frozenset({"execution_id", "operation_type", "status", "start_time", "end_time"})
    incremental = read.INCREMENTAL
    counters = (TOTAL,)
    read_gauges = staticmethod(read.gauge_rows)

    def observe(self, ctx: Context, row: tuple[Any, ...]) -> None:
        _, _, op, status, _ = row
        ctx.agg.inc(TOTAL, (ctx.cap("operation_type", op), status))

    def gauges(self, ctx: Context, rows: list[Row]) -> Gauges:
        return {"pggit_baseline_recalculation_last_success_timestamp_seconds": {
            (ctx.gauge_label("operation_type", op),): at for op, at in rows}}
