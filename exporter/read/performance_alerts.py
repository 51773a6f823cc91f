"""performance_alerts: alerts row by row as created, the first start's grouped count, and the
alerts open now."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import psycopg
from psycopg import sql

from exporter.read.spec import Incremental, Row

INCREMENTAL = Incremental(id_column="alert_id",
                          select="operation_type, alert_type, coalesce(severity, 'WARNING')",
                          time="created_at")


def backfill_rows(conn: psycopg.Connection, table: sql.Composed, max_id: int,
                  observe: Callable[[Iterable[Row]], None]) -> None:
    """(operation_type, alert_type, severity, count) of the alerts with id <= max_id."""
    observe(conn.execute(sql.SQL(
        """SELECT operation_type, alert_type, coalesce(severity, 'WARNING'), count(*)
           FROM {} WHERE alert_id <= %s GROUP BY 1, 2, 3""").format(table), (max_id,)))


def gauge_rows(conn: psycopg.Connection, table: sql.Composed) -> list[Row]:
    """(operation_type, alert_type, severity, count, epoch of the oldest) of unacknowledged
    alerts."""
    return conn.execute(sql.SQL(
        """SELECT operation_type, alert_type, coalesce(severity, 'WARNING'), count(*),
                  extract(epoch FROM min(created_at::timestamptz)
                                  FILTER (WHERE isfinite(created_at)))::float8
           FROM {} WHERE is_acknowledged IS NOT TRUE GROUP BY 1, 2, 3""").format(table)
    ).fetchall()
