"""alert_snooze -> active snoozes by operation and alert type."""

from __future__ import annotations

from exporter.map.base import Context, Gauges, Mapping
from exporter.read import alert_snooze as read
from exporter.read.spec import Row


class AlertSnooze(Mapping):
    collector = "alert_snooze"
    table = "alert_snooze"
    needs = frozenset({"operation_type", "alert_type", "snooze_until", "is_active"})
    read_gauges = staticmethod(read.gauge_rows)

    def gauges(self, ctx: Context, rows: list[Row]) -> Gauges:
        return {"pggit_alert_snoozes_active": {
            (ctx.gauge_label("operation_type", op), alert_type): n for op, alert_type, n in rows}}
