"""alert_snooze -> active snoozes by operation and alert type."""

from __future__ import annotations

import psycopg
from psycopg import sql

from exporter.map.base import Context, Gauges, Mapping


class AlertSnooze(Mapping):
    collector = "alert_snooze"
    table = "alert_snooze"
    needs = frozenset({"operation_type", "alert_type", "snooze_until", "is_active"})

    def gauges(self, ctx: Context, conn: psycopg.Connection, table: sql.Composed) -> Gauges:
        rows = conn.execute(sql.SQL(
            """SELECT operation_type, alert_type, count(*) FROM {}
               WHERE is_active IS NOT FALSE AND snooze_until > localtimestamp
               GROUP BY 1, 2""").format(table))
        return {"pggit_alert_snoozes_active": {
            (ctx.gauge_label("operation_type", op), alert_type): n for op, alert_type, n in rows}}
