"""performance_correlations: active correlations (current state only)."""

from __future__ import annotations

import psycopg
from psycopg import sql

from exporter.read.spec import Row


def gauge_rows(conn: psycopg.Connection, table: sql.Composed) -> list[Row]:
    """(shared_bottleneck, severity, count) of active correlations."""
    return conn.execute(sql.SQL(
        """SELECT coalesce(shared_bottleneck, 'unknown'), coalesce(severity, 'INFO'), count(*)
           FROM {} WHERE is_active IS NOT FALSE GROUP BY 1, 2""").format(table)).fetchall()
