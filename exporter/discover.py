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
