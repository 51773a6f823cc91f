"""alert_notification_queue: depth by status and the oldest waiting item (current state only)."""

from __future__ import annotations

import psycopg
from psycopg import sql

from exporter.read.spec import Row


def gauge_rows(conn: psycopg.Connection, table: sql.Composed) -> list[Row]:
    """(status, count, age in seconds of the oldest finite created_at) per status."""
    return conn.execute(sql.SQL(
        """SELECT coalesce(status, 'pending'), count(*),
                  extract(epoch FROM now() - min(created_at::timestamptz)
                                       FILTER (WHERE isfinite(created_at)))::float8
           FROM {} GROUP BY 1""").format(table)).fetchall()
