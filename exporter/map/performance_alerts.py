"""performance_alerts -> alerts created (counter) and alerts open (gauges).

Alerts are updated after insert (acknowledged, escalated), so creation is counted once per
row with the severity it was created with, while the open gauges are recomputed from the
current rows and so follow acknowledgements and escalations.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from exporter.map.base import Context, Gauges, Mapping
from exporter.read.spec import Incremental

TOTAL = "pggit_alerts_total"


class PerformanceAlerts(Mapping):
    collector = "performance_alerts"
    table = "performance_alerts"
    needs = frozenset({"alert_id", "operation_type", "alert_type", "severity",
                       "is_acknowledged", "created_at"})
    incremental = Incremental(id_column="alert_id",
                              select="operation_type, alert_type, coalesce(severity, 'WARNING')",
                              time="created_at")
    counters = (TOTAL,)
    aggregate_backfill = True

    def observe(self, ctx: Context, row: tuple[Any, ...]) -> None:
        _, _, op, alert_type, severity, _ = row
        ctx.agg.inc(TOTAL, (ctx.cap("operation_type", op), alert_type, severity))

    def backfill(self, ctx: Context, conn: psycopg.Connection, table: sql.Composed,
                 max_id: int) -> None:
        rows = conn.execute(sql.SQL(
            """SELECT operation_type, alert_type, coalesce(severity, 'WARNING'), count(*)
               FROM {} WHERE alert_id <= %s GROUP BY 1, 2, 3""").format(table), (max_id,))
        for op, alert_type, severity, count in rows:
            ctx.agg.inc(TOTAL, (ctx.cap("operation_type", op, count), alert_type, severity),
                        count)

    def gauges(self, ctx: Context, conn: psycopg.Connection, table: sql.Composed) -> Gauges:
        rows = conn.execute(sql.SQL(
            """SELECT operation_type, alert_type, coalesce(severity, 'WARNING'), count(*),
                      extract(epoch FROM min(created_at::timestamptz)
                                      FILTER (WHERE isfinite(created_at)))::float8
               FROM {} WHERE is_acknowledged IS NOT TRUE GROUP BY 1, 2, 3""").format(table))
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
