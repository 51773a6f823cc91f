"""Connections to one pgGit database: read-only, time-boxed and labelled in pg_stat_activity.

Every session is set up the same way (see `_configure`) so that all readers (metrics, traces,
silences) see timestamps in the writers' time zone and can never write or hang on a lock.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import psycopg
from psycopg import IsolationLevel, sql
from psycopg.conninfo import make_conninfo
from psycopg_pool import ConnectionPool, PoolTimeout

from exporter.config import DatabaseConfig
from exporter.connect_errors import ConnectFailed, connect_failed

log = logging.getLogger(__name__)

RECONNECT_CHAIN_SECONDS = 30.0
"""How long the pool keeps retrying one failed connection (1 s, 2 s, 4 s, ... apart) before the
chain ends and the next poll starts a new one at 1 s. Without it the delay grows for 5
minutes, and a password fixed meanwhile would wait up to two minutes to be tried."""


class Database:
    """A small pool per configured database; connections are made on demand and checked.

    The password is read for every new connection, not once at start, so a secret rotated in
    place (a Kubernetes Secret, a Vault agent's file) is used from the next reconnect on. A
    failed attempt is remembered so that a pool timeout can say why (`connect_errors`); the
    pool retries with its own backoff and the poller waits longer after each failure, so a
    wrong password is never retried in a tight loop.
    """

    def __init__(self, cfg: DatabaseConfig):
        self.cfg = cfg
        self.last_failure: ConnectFailed | None = None
        kwargs = {"application_name": cfg.application_name,
                  "connect_timeout": max(1, round(cfg.connect_timeout))}
        self.pool = ConnectionPool(
            cfg.dsn, min_size=0, max_size=3, open=False, kwargs=kwargs,
            connection_class=self._connection_class(), configure=self._configure,
            check=ConnectionPool.check_connection, timeout=cfg.connect_timeout,
            reconnect_timeout=RECONNECT_CHAIN_SECONDS, name=f"pggit-{cfg.name}",
        )
        self.pool.open(wait=False)

    def _password(self) -> str | None:
        """From the file or variable named in the config, never from the YAML.

        An unreadable file (mid-rotation, or removed) leaves libpq without a password, so the
        attempt fails as "no password supplied" and is retried, instead of stopping the pool.
        """
        if self.cfg.password_file is not None:
            try:
                return self.cfg.password_file.read_text(encoding="utf-8").rstrip("\r\n")
            except OSError as exc:
                log.warning("cannot read password_file", extra={
                    "database": self.cfg.name, "path": str(self.cfg.password_file),
                    "error": exc.strerror})
                return None
        if self.cfg.password_env is not None:
            return os.environ.get(self.cfg.password_env)
        return None

    def _connection_class(self) -> type[psycopg.Connection]:
        """psycopg's Connection with this database's current password, noting each outcome."""
        database = self

        class Connection(psycopg.Connection):
            @classmethod
            def connect(cls, conninfo: str = "", **kwargs: Any) -> Any:
                password = database._password()
                if password is not None:
                    kwargs["password"] = password
                try:
                    conn = super().connect(conninfo, **kwargs)
                except psycopg.Error as exc:
                    database.last_failure = connect_failed(exc)
                    raise
                database.last_failure = None
                return conn

        return Connection

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
        """A configured connection, returned to the pool (or discarded if broken) afterwards.

        Raises ConnectFailed with libpq's reason when the pool timed out because connecting
        failed; a plain PoolTimeout only when every connection was busy.
        """
        with ExitStack() as stack:
            try:
                conn = stack.enter_context(self.pool.connection(timeout=self.cfg.connect_timeout))
            except PoolTimeout:
                failure = self.last_failure
                if failure is None:
                    raise
                raise ConnectFailed(failure.reason, str(failure)) from None
            yield conn

    def session(self) -> psycopg.Connection:
        """A connection of its own, outside the pool, for the span lease.

        A session-level advisory lock lasts as long as its connection, so it cannot live on
        a pooled one that is handed back. Autocommit and not read-only: the lease announces
        sent spans with pg_notify, which any role may call.
        """
        conn = self._connection_class().connect(
            self.cfg.dsn, autocommit=True, application_name=self.cfg.application_name,
            connect_timeout=max(1, round(self.cfg.connect_timeout)))
        timeout_ms = int(self.cfg.statement_timeout * 1000)
        conn.execute(sql.SQL("SET statement_timeout = {}").format(sql.Literal(timeout_ms)))
        return conn

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
