"""baseline_recalc_execution: finished runs row by row, and the last success per type.

Runs are inserted RUNNING and finished in place, so a run is final once it has left RUNNING.
"""

from __future__ import annotations

import psycopg
from psycopg import sql

from exporter.read.spec import Incremental, Row

INCREMENTAL = Incremental(id_column="execution_id", select="operation_type, status",
                          final="status <> 'RUNNING'", time="coalesce(end_time, start_time)")


def gauge_rows(conn: psycopg.Connection, table: sql.Composed) -> list[Row]:
    """(operation_type, epoch of the newest successful run's end)."""
    return conn.execute(sql.SQL(
        """SELECT operation_type,
                  extract(epoch FROM max(coalesce(end_time, start_time))::timestamptz)::float8
           FROM {} WHERE status = 'SUCCESS' GROUP BY 1""").format(table)).fetchall()
