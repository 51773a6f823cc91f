"""alert_notification_queue -> queue depth by status and the age of the oldest waiting item."""

from __future__ import annotations

import psycopg
from psycopg import sql

from exporter.map.base import Context, Gauges, Mapping


class AlertNotificationQueue(Mapping):
    collector = "alert_notification_queue"
    table = "alert_notification_queue"
    needs = frozenset({"status", "created_at"})

    def gauges(self, ctx: Context, conn: psycopg.Connection, table: sql.Composed) -> Gauges:
        rows = conn.execute(sql.SQL(
            """SELECT coalesce(status, 'pending'), count(*),
                      extract(epoch FROM now() - min(created_at::timestamptz)
                                           FILTER (WHERE isfinite(created_at)))::float8
               FROM {} GROUP BY 1""").format(table)).fetchall()
        depth = {(status,): count for status, count, _ in rows}
        waiting = [age for status, _, age in rows
                   if status in ("pending", "retrying") and age is not None]
        out: Gauges = {"pggit_notification_queue_depth": depth,
                       "pggit_notification_queue_oldest_pending_age_seconds": {}}
        if waiting:
            out["pggit_notification_queue_oldest_pending_age_seconds"][()] = max(0.0, *waiting)
        return out
