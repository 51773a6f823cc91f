"""performance_alerts -> alerts created (counter) and alerts open (gauges).

Alerts are updated after insert (acknowledged, escalated), so creation is counted once per
row with the severity it was created with, while the open gauges are recomputed from the
current rows and so follow acknowledgements and escalations.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from exporter.map.base import Context, Gauges, Mapping
from exporter.read import performance_alerts as read
from exporter.read.spec import Row

TOTAL = "pggit_alerts_total"


class PerformanceAlerts(Mapping):
    collector = "performance_alerts"
    table = "performance_alerts"
    needs = frozenset({"alert_id", "operation_type", "alert_type", "severity",
                       "is_acknowledged", "created_at"})
    incremental = read.INCREMENTAL
    counters = (TOTAL,)
    aggregate_backfill = True
    read_backfill = staticmethod(read.backfill_rows)
    read_gauges = staticmethod(read.gauge_rows)

    def observe(self, ctx: Context, row: tuple[Any, ...]) -> None:
        _, _, op, alert_type, severity, _ = row
        ctx.agg.inc(TOTAL, (ctx.cap("operation_type", op), alert_type, severity))

    def observe_backfill(self, ctx: Context, rows: Iterable[Row]) -> None:
        for op, alert_type, severity, count in rows:
            ctx.agg.inc(TOTAL, (ctx.cap("operation_type", op, count), alert_type, severity),
                        count)

    def gauges(self, ctx: Context, rows: list[Row]) -> Gauges:
        out: Gauges = {"pggit_alerts_open": {},
                       "pggit_alerts_oldest_open_timestamp_seconds": {}}
        for op, alert_type, severity, count, oldest in rows:
            labels = (ctx.gauge_label("operation_type", op), alert_type, severity)
            out["pggit_alerts_open"][labels] = out["pggit_alerts_open"].get(labels, 0) + count
            if oldest is None:
                continue
            current = out["pggit_alerts_oldest_open_timestamp_seconds"].get(labels, oldest)
            out["pggit_alerts_oldest_open_timestamp_seconds"][labels] = min(current, oldest)
        return out
