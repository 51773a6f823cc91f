"""alert_snooze: snoozes in force now (current state only)."""

from __future__ import annotations

import psycopg
from psycopg import sql

from exporter.read.spec import Row


def gauge_rows(conn: psycopg.Connection, table: sql.Composed) -> list[Row]:
    """(operation_type, alert_type, count) of active snoozes not yet expired."""
    return conn.execute(sql.SQL(
        """SELECT operation_type, alert_type, count(*) FROM {}
           WHERE is_active IS NOT FALSE AND snooze_until > localtimestamp
           GROUP BY 1, 2""").format(table)).fetchall()
