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
from psycopg import sql
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
