"""alert_notification_queue -> queue depth by status and the age of the oldest waiting item."""

from __future__ import annotations

from exporter.map.base import Context, Gauges, Mapping
from exporter.read import alert_notification_queue as read
from exporter.read.spec import Row


class AlertNotificationQueue(Mapping):
    collector = "alert_notification_queue"
    table = "alert_notification_queue"
    needs = frozenset({"status", "created_at"})
    read_gauges = staticmethod(read.gauge_rows)

    def gauges(self, ctx: Context, rows: list[Row]) -> Gauges:
        depth = {(status,): count for status, count, _ in rows}
        waiting = [age for status, _, age in rows
                   if status in ("pending", "retrying") and age is not None]
        out: Gauges = {"pggit_notification_queue_depth": depth,
                       "pggit_notification_queue_oldest_pending_age_seconds": {}}
        if waiting:
            out["pggit_notification_queue_oldest_pending_age_seconds"][()] = max(0.0, *waiting)
        return out
