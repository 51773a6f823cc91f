"""performance_operation_types -> pggit_operation_type_info, the lookup as an info metric."""

from __future__ import annotations

import psycopg
from psycopg import sql

from exporter.map.base import Context, Gauges, Mapping


class PerformanceOperationTypes(Mapping):
    collector = "performance_operation_types"
    table = "performance_operation_types"
    needs = frozenset({"operation_type", "category", "is_tracked"})

    def gauges(self, ctx: Context, conn: psycopg.Connection, table: sql.Composed) -> Gauges:
        rows = conn.execute(sql.SQL(
            "SELECT operation_type, coalesce(category, ''), coalesce(is_tracked, true) FROM {}"
        ).format(table))
        return {"pggit_operation_type_info": {
            (ctx.gauge_label("operation_type", op), category, "true" if tracked else "false"): 1
            for op, category, tracked in rows}}
