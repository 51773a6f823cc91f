"""performance_baselines: the active baselines (gauges) and every baseline with its
calculation time (the history `exporter.map.performance_baselines.BaselineHistory` keeps to
judge violations)."""

from __future__ import annotations

from typing import Any, Protocol

import psycopg
from psycopg import sql

from exporter.read.spec import Row


class History(Protocol):
    """Where the baselines go: the rows' signature when last loaded, and the loader."""

    signature: tuple[Any, ...] | None

    def load(self, rows: list[Row]) -> None: ...


def refresh_history(conn: psycopg.Connection, table: sql.Composed, history: History) -> None:
    """Reload when rows were added, deleted or committed late (count and id sum change)."""
    signature = conn.execute(sql.SQL(
        "SELECT count(*), coalesce(sum(baseline_id), 0) FROM {}").format(table)).fetchone()
    if signature == history.signature:
        return
    rows = conn.execute(sql.SQL(
        "SELECT operation_type, branch_id,"
        " extract(epoch FROM calculation_timestamp::timestamptz)::float8,"
        " p99_microseconds, alert_threshold_multiplier FROM {}").format(table)
    ).fetchall()
    history.load(rows)
    history.signature = signature


def gauge_rows(conn: psycopg.Connection, table: sql.Composed) -> list[Row]:
    """The newest active baseline per (operation_type, branch_id): the two, its calculation
    epoch, sample_count, multiplier, then p50, p75, p90, p95, p99, mean and stddev in µs."""
    return conn.execute(sql.SQL(
        """SELECT DISTINCT ON (operation_type, branch_id)
               operation_type, branch_id,
               extract(epoch FROM calculation_timestamp::timestamptz)::float8,
               sample_count, alert_threshold_multiplier,
               p50_microseconds, p75_microseconds, p90_microseconds, p95_microseconds,
               p99_microseconds, mean_microseconds, stddev_microseconds
           FROM {} WHERE is_active
           ORDER BY operation_type, branch_id, calculation_timestamp DESC, baseline_id DESC"""
    ).format(table)).fetchall()
