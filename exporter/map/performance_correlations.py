"""performance_correlations -> active correlations by shared bottleneck and severity."""

from __future__ import annotations

from exporter.map.base import Context, Gauges, Mapping
from exporter.read import performance_correlations as read
from exporter.read.spec import Row


class PerformanceCorrelations(Mapping):
    collector = "performance_correlations"
    table = "performance_correlations"
    needs = frozenset({"shared_bottleneck", "severity", "is_active"})
    read_gauges = staticmethod(read.gauge_rows)

    def gauges(self, ctx: Context, rows: list[Row]) -> Gauges:
        return {"pggit_correlations_active": {
            (ctx.gauge_label("shared_bottleneck", b), s): n for b, s, n in rows}}
