"""Connections to one pgGit database: read-only, time-boxed and labelled in pg_stat_activity.

Every session is set up the same way (see `_configure`) so that all readers (metrics, traces,
silences) see timestamps in the writers' time zone and can never write or hang on a lock.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg import IsolationLevel, sql
from psycopg.conninfo import make_conninfo
from psycopg_pool import ConnectionPool

from exporter.config import DatabaseConfig

log = logging.getLogger(__name__)


class Database:
    """A small pool per configured database; connections are made on demand and checked."""

    def __init__(self, cfg: DatabaseConfig):
        self.cfg = cfg
        kwargs: dict[str, object] = {
            "application_name": cfg.application_name,
            "connect_timeout": max(1, round(cfg.connect_timeout)),
        }
        password = self._password()
        if password is not None:
            kwargs["password"] = password
        self.pool = ConnectionPool(
            cfg.dsn, min_size=0, max_size=3, open=False, kwargs=kwargs,
            configure=self._configure, check=ConnectionPool.check_connection,
            timeout=cfg.connect_timeout, name=f"pggit-{cfg.name}",
        )
        self.pool.open(wait=False)

    def _password(self) -> str | None:
        """Read at start from the file or variable named in the config, never from the YAML."""
        if self.cfg.password_file is not None:
            return self.cfg.password_file.read_text(encoding="utf-8").rstrip("\r\n")
        if self.cfg.password_env is not None:
            return os.environ.get(self.cfg.password_env)
        return None

    def _configure(self, conn: psycopg.Connection) -> None:
        timeout_ms = int(self.cfg.statement_timeout * 1000)
        conn.execute(sql.SQL("SET statement_timeout = {}").format(sql.Literal(timeout_ms)))
        conn.execute(sql.SQL("SET lock_timeout = {}").format(sql.Literal(timeout_ms)))
        conn.execute("SET default_transaction_read_only = on")
        conn.execute("SET idle_in_transaction_session_timeout = 60000")
        if self.cfg.timezone is not None:
            conn.execute(sql.SQL("SET TimeZone = {}").format(sql.Literal(self.cfg.timezone)))
        conn.commit()

    @contextmanager
    def connect(self) -> Iterator[psycopg.Connection]:
        """A configured connection, returned to the pool (or discarded if broken) afterwards."""
        with self.pool.connection(timeout=self.cfg.connect_timeout) as conn:
            yield conn

    def table(self, name: str) -> sql.Composed:
        """The schema-qualified, quoted identifier of a pgGit table (names come from config)."""
        return sql.Identifier(self.cfg.schema, self.cfg.table(name))

    def close(self) -> None:
        self.pool.close(timeout=5)


@contextmanager
def sibling(conn: psycopg.Connection) -> Iterator[psycopg.Connection | None]:
    """A second connection that sees exactly what `conn`'s open transaction sees, or None.

    For work run alongside `conn` (a backfill's scans on a second core): the snapshot of
    `conn`'s REPEATABLE READ transaction is exported and imported, and the session's settings
    (time zone, timeouts, memory, ...) are applied to the imported transaction, so it reads
    what `conn` would, row for row. It is a plain connection outside the pool, closed on exit.
    None when it cannot be had (connection limits, a pooler that sends it to another
    server): the caller then does the work on `conn`. The export itself cannot be retried
    (it is not allowed inside a savepoint), but since PostgreSQL 10 it takes no transaction
    id and works on standbys too.
    """
    snapshot = conn.execute("SELECT pg_export_snapshot()").fetchone()[0]
    settings = conn.execute(
        "SELECT name, setting FROM pg_settings WHERE source = 'session' AND name NOT IN"
        " ('transaction_isolation', 'transaction_read_only', 'transaction_deferrable')"
    ).fetchall()
    try:
        # The host actually connected to, should the DSN list several.
        other = psycopg.Connection.connect(make_conninfo(
            conn.info.dsn, host=conn.info.host, port=conn.info.port),
            password=conn.info.password)
    except psycopg.Error as exc:
        log.warning("no second connection; working on one", extra={"error": str(exc)})
        yield None
        return
    try:
        other.isolation_level = IsolationLevel.REPEATABLE_READ
        other.read_only = True
        other.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot)))
        other.execute("SELECT set_config(n, v, true) FROM unnest(%s::text[], %s::text[]) s(n, v)",
                      ([n for n, _ in settings], [v for _, v in settings]))
    except psycopg.Error as exc:
        other.close()
        log.warning("second connection cannot share the snapshot; working on one",
                    extra={"error": str(exc)})
        yield None
        return
    try:
        yield other
        # Ended before closing, so the server finishes the statements normally (and counts
        # them in pg_stat_statements) instead of aborting them with the session.
        other.rollback()
    finally:
        other.close()
