"""performance_baseline_history -> baseline changes by direction and the newest change."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from exporter.counts import NOT_FINITE
from exporter.map.base import Context, Gauges, Mapping
from exporter.read import performance_baseline_history as read
from exporter.read.spec import Row

TOTAL = "pggit_baseline_changes_total"


def direction(percent_change: Any) -> str:
    if percent_change is None or percent_change == 0:
        return "unchanged"
    return "degraded" if percent_change > 0 else "improved"


def _nan(value: Any) -> bool:
    return isinstance(value, Decimal) and value.is_nan()


class PerformanceBaselineHistory(Mapping):
    collector = "performance_baseline_history"
    table = "performance_baseline_history"
    needs = frozenset({"history_id", "operation_type", "percent_change", "calculated_at"})
    incremental = read.INCREMENTAL
    counters = (TOTAL,)
    read_gauges = staticmethod(read.gauge_rows)

    def observe(self, ctx: Context, row: tuple[Any, ...]) -> None:
        key, _, op, change, _ = row
        if _nan(change):
            ctx.invalid(self.table, key, "percent_change", NOT_FINITE, change)
            return
        ctx.agg.inc(TOTAL, (ctx.cap("operation_type", op), direction(change)))

    def gauges(self, ctx: Context, rows: list[Row]) -> Gauges:
        return {"pggit_baseline_last_change_ratio": {
            (ctx.gauge_label("operation_type", op),): float(change) / 100 for op, change in rows}}
