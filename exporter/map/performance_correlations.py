"""performance_correlations -> active correlations by shared bottleneck and severity."""

from __future__ import annotations

import psycopg
from psycopg import sql

from exporter.map.base import Context, Gauges, Mapping


class PerformanceCorrelations(Mapping):
    collector = "performance_correlations"
    table = "performance_correlations"
    needs = frozenset({"shared_bottleneck", "severity", "is_active"})

    def gauges(self, ctx: Context, conn: psycopg.Connection, table: sql.Composed) -> Gauges:
        rows = conn.execute(sql.SQL(
            """SELECT coalesce(shared_bottleneck, 'unknown'), coalesce(severity, 'INFO'), count(*)
               FROM {} WHERE is_active IS NOT FALSE GROUP BY 1, 2""").format(table))
        return {"pggit_correlations_active": {
            (ctx.gauge_label("shared_bottleneck", b), s): n for b, s, n in rows}}
