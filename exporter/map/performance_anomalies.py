"""performance_anomalies -> pggit_anomalies_total by operation, type and severity."""

from __future__ import annotations

from typing import Any

from exporter.map.base import Context, Mapping
from exporter.read import performance_anomalies as read

TOTAL = "pggit_anomalies_total"


class PerformanceAnomalies(Mapping):
    collector = "performance_anomalies"
    table = "performance_anomalies"
    needs = frozenset({"anomaly_id", "operation_type", "anomaly_type", "severity",
                       "detected_at"})
    incremental = read.INCREMENTAL
    counters = (TOTAL,)

    def observe(self, ctx: Context, row: tuple[Any, ...]) -> None:
        _, _, op, anomaly_type, severity, _ = row
        ctx.agg.inc(TOTAL, (ctx.cap("operation_type", op), anomaly_type, severity))
