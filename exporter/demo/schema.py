"""Install the pgGit demo schema (tables, seed rows and writer functions) into a database."""

from __future__ import annotations

from importlib import resources

import psycopg

CORE_SQL = "core.sql"
LATER_SQL = "later.sql"
FUNCTIONS_SQL = "functions.sql"
LATER_FUNCTIONS_SQL = "later_functions.sql"


def sql_text(name: str) -> str:
    """Read one bundled SQL file; through importlib.resources so it also works from a wheel."""
    return resources.files("exporter.demo").joinpath("sql", name).read_text(encoding="utf-8")


def script_names(*, later_tables: bool = True, functions: bool = True) -> list[str]:
    """Order matters: later tables reference core ones, later functions reference both."""
    names = [CORE_SQL]
    if later_tables:
        names.append(LATER_SQL)
    if functions:
        names.append(FUNCTIONS_SQL)
        if later_tables:
            names.append(LATER_FUNCTIONS_SQL)
    return names


def install_schema(
    conn_or_dsn: psycopg.Connection | str,
    *,
    later_tables: bool = True,
    functions: bool = True,
) -> None:
    """Create schema pggit as deployed, in one transaction so a failure leaves nothing behind.

    ``later_tables=False`` gives a database with only the core tier, which is how older pgGit
    installations look; the exporter must cope with both. The target database must not have a
    ``pggit`` schema with these tables yet.
    """
    if isinstance(conn_or_dsn, str):
        with psycopg.connect(conn_or_dsn, autocommit=True) as conn:
            _apply(conn, later_tables=later_tables, functions=functions)
    else:
        _apply(conn_or_dsn, later_tables=later_tables, functions=functions)


def _apply(conn: psycopg.Connection, *, later_tables: bool, functions: bool) -> None:
    """Send each file as one simple-protocol script (no parameters, so several statements pass)."""
    with conn.transaction():
        for name in script_names(later_tables=later_tables, functions=functions):
            conn.execute(sql_text(name))
