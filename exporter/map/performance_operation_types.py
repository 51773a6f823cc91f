"""performance_operation_types -> pggit_operation_type_info, the lookup as an info metric."""

from __future__ import annotations

from exporter.map.base import Context, Gauges, Mapping
from exporter.read import performance_operation_types as read
from exporter.read.spec import Row


class PerformanceOperationTypes(Mapping):
    collector = "performance_operation_types"
    table = "performance_operation_types"
    needs = frozenset({"operation_type", "category", "is_tracked"})
    read_gauges = staticmethod(read.gauge_rows)

    def gauges(self, ctx: Context, rows: list[Row]) -> Gauges:
        return {"pggit_operation_type_info": {
            (ctx.gauge_label("operation_type", op), category, "true" if tracked else "false"): 1
            for op, category, tracked in rows}}
