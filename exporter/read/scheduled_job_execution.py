"""scheduled_job_execution: finished job runs row by row, and the last success per job.

Runs are inserted RUNNING and finished in place, so a run is final once it has left RUNNING.
"""

from __future__ import annotations

import psycopg
from psycopg import sql

from exporter.read.spec import Incremental, Row

INCREMENTAL = Incremental(id_column="job_execution_id", select="job_name, status",
                          final="status <> 'RUNNING'",
                          time="coalesce(execution_end, execution_start)")


def gauge_rows(conn: psycopg.Connection, table: sql.Composed) -> list[Row]:
    """(job_name, epoch of the newest successful run's end)."""
    return conn.execute(sql.SQL(
        """SELECT job_name, extract(epoch FROM
                  max(coalesce(execution_end, execution_start))::timestamptz)::float8
           FROM {} WHERE status = 'SUCCESS' GROUP BY 1""").format(table)).fetchall()
