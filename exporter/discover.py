"""Discover: which pgGit tables and columns this database has and this role may read.

pgGit grew tables over several releases, so any given database has some of them. Each
collector states what it needs; what is missing disables that collector alone, with one log
line saying why, instead of failing the whole exporter.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import psycopg

from exporter.config import DatabaseConfig


@dataclass(frozen=True)
class Found:
    """Columns per readable table; tables present without SELECT are listed apart."""

    columns: Mapping[str, frozenset[str]]
    unreadable: frozenset[str]

    def missing(self, table: str, needed: frozenset[str]) -> str | None:
        """Why a collector needing `needed` columns of `table` cannot run, or None if it can."""
        if table in self.unreadable:
            return f"table {table} exists but this role has no SELECT privilege on it"
        if table not in self.columns:
            return f"table {table} not found"
        absent = sorted(needed - self.columns[table])
        if absent and (why := layout(self.columns).reason(table)) is not None:
            return why
        if absent:
            return f"table {table} lacks column(s) {', '.join(absent)}"
        return None


def discover(conn: psycopg.Connection, cfg: DatabaseConfig) -> Found:
    """Read the catalog once; pg_attribute shows columns even where privileges are partial."""
    rows = conn.execute(
        """
        SELECT c.relname, a.attname, has_table_privilege(c.oid, 'SELECT')
        FROM pg_class c
        JOIN pg_namespace n ON n.oid = c.relnamespace
        JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
        WHERE n.nspname = %s AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
        """,
        (cfg.schema,),
    ).fetchall()
    by_name: dict[str, set[str]] = {}
    unreadable: set[str] = set()
    for relname, attname, readable in rows:
        if not readable:
            unreadable.add(relname)
        by_name.setdefault(relname, set()).add(attname)
    logical = {actual: name for name, actual in cfg.tables.items()}
    overridden = set(cfg.tables)
    columns: dict[str, frozenset[str]] = {}
    hidden: set[str] = set()
    for rel, cols in by_name.items():
        name = logical.get(rel)
        if name is None:
            if rel in overridden:
                continue
            name = rel
        if rel in unreadable:
            hidden.add(name)
        else:
            columns[name] = frozenset(cols)
    return Found(columns=columns, unreadable=frozenset(hidden))


PHASE7 = "pgGit v0.1.0 (Phase 7 performance tables, BIGSERIAL ids)"
UUID_KEYED = ("pgGit after v0.1.0 (UUID-keyed performance tables from its "
              "performance_monitoring.sql)")
SUPPORTED = "this exporter reads the Phase 7 tables of pgGit v0.1.0"

_SIGNATURES: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    # table: (columns only the Phase 7 layout has, columns only the UUID-keyed layout has)
    "performance_metrics": (frozenset({"duration_microseconds", "recorded_at"}),
                            frozenset({"started_at", "completed_at", "cpu_time_ms"})),
    "operation_traces": (frozenset({"span_id", "span_status"}),
                         frozenset({"parent_trace_id", "duration_us"})),
    "performance_baselines": (frozenset({"p99_microseconds", "is_active"}),
                              frozenset({"percentile_99", "calculated_at"})),
    "performance_alerts": (frozenset({"is_acknowledged", "actual_duration_microseconds"}),
                           frozenset({"threshold_value", "actual_value", "acknowledged"})),
}


@dataclass(frozen=True)
class Layout:
    """Which pgGit generation the performance tables look like, told once to a human.

    pgGit releases after v0.1.0 ship tables of the same names with other columns and UUID
    ids; listing the columns each collector misses there would bury the one useful fact.
    """

    generation: str | None
    uuid_tables: frozenset[str] = frozenset()

    @property
    def supported(self) -> bool:
        return not self.uuid_tables

    def reason(self, table: str) -> str | None:
        """Why a collector of `table` is off, when the layout explains it."""
        if table in self.uuid_tables:
            return (f"table {table} has the UUID-keyed layout of pgGit after v0.1.0, which "
                    f"this exporter does not read")
        return None

    def describe(self) -> str:
        if self.generation is None:
            return "no pgGit performance tables found; " + SUPPORTED
        if self.supported:
            return f"looks like {self.generation}; {SUPPORTED}"
        return (f"looks like {self.generation} ({', '.join(sorted(self.uuid_tables))}); "
                f"{SUPPORTED}, so their collectors are off; the other tables are read "
                f"if present")


def layout(columns: Mapping[str, frozenset[str]]) -> Layout:
    """Recognise the generation from column names (types are not needed to tell them apart)."""
    phase7: set[str] = set()
    uuid_keyed: set[str] = set()
    for table, (own, later) in _SIGNATURES.items():
        cols = columns.get(table)
        if cols is None:
            continue
        if own <= cols:
            phase7.add(table)
        elif later <= cols:
            uuid_keyed.add(table)
    if uuid_keyed:
        return Layout(UUID_KEYED, frozenset(uuid_keyed))
    return Layout(PHASE7 if phase7 else None)
