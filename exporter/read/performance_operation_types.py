"""performance_operation_types: the operation type lookup (current state only)."""

from __future__ import annotations

import psycopg
from psycopg import sql

from exporter.read.spec import Row


def gauge_rows(conn: psycopg.Connection, table: sql.Composed) -> list[Row]:
    """(operation_type, category, is_tracked) of every type."""
    return conn.execute(sql.SQL(
        "SELECT operation_type, coalesce(category, ''), coalesce(is_tracked, true) FROM {}"
    ).format(table)).fetchall()
