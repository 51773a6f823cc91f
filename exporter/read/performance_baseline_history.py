"""performance_baseline_history: baseline changes row by row, and the newest change per type."""

from __future__ import annotations

import psycopg
from psycopg import sql

from exporter.read.spec import Incremental, Row

INCREMENTAL = Incremental(id_column="history_id", select="operation_type, percent_change",
                          time="calculated_at")


def gauge_rows(conn: psycopg.Connection, table: sql.Composed) -> list[Row]:
    """(operation_type, percent_change) of each type's newest change."""
    return conn.execute(sql.SQL(
        """SELECT DISTINCT ON (operation_type) operation_type, percent_change
           FROM {} WHERE percent_change IS NOT NULL
           ORDER BY operation_type, calculated_at DESC, history_id DESC""").format(table)
    ).fetchall()
