"""Pytest plugin: real PostgreSQL servers and fresh pgGit databases for tests.

Register with ``pytest_plugins = ["tests.pg_fixtures"]``. By default a private server is started
once per session from pgserver's binaries. With ``PGGIT_TEST_DSN`` set (a superuser DSN, or one
with CREATEDB and CREATEROLE), that server is used instead; tests that must restart, crash or
re-configure the server then skip, because doing so to a shared server would break other users.
"""

from __future__ import annotations

import itertools
import os
import time
import uuid
from collections.abc import Callable, Iterator

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from exporter.demo.embedded import EmbeddedPostgres, EmbeddedPostgresError, create_database
from exporter.demo.schema import install_schema

EXTERNAL_DSN_ENV = "PGGIT_TEST_DSN"
EXTERNAL_SKIP_REASON = (
    f"{EXTERNAL_DSN_ENV} points at an external server; restarting, killing or re-configuring "
    "it is not allowed"
)

_db_counter = itertools.count(1)


class PgTestServer:
    """The session's server, embedded or external, behind one interface.

    ``embedded`` is the EmbeddedPostgres or None; ``require_embedded()`` returns it or skips
    the calling test, which is how restart/kill tests opt out on external servers.
    """

    def __init__(self, embedded: EmbeddedPostgres | None, external_dsn: str | None) -> None:
        self.embedded = embedded
        self._external = conninfo_to_dict(external_dsn) if external_dsn else None

    @property
    def is_external(self) -> bool:
        return self.embedded is None

    def require_embedded(self) -> EmbeddedPostgres:
        if self.embedded is None:
            pytest.skip(EXTERNAL_SKIP_REASON)
        return self.embedded

    def dsn(self, dbname: str = "postgres", user: str | None = None,
            password: str | None = None) -> str:
        if self.embedded is not None:
            return self.embedded.dsn(dbname=dbname, user=user or "postgres", password=password)
        assert self._external is not None
        params = dict(self._external)
        params["dbname"] = dbname
        if user is not None:
            params["user"] = user
            params.pop("password", None)
        if password is not None:
            params["password"] = password
        return make_conninfo(**params)

    def create_database(self, name: str, template: str | None = None) -> str:
        create_database(self.dsn(), name, template)
        return self.dsn(dbname=name)

    def drop_database(self, name: str) -> None:
        """FORCE, because a test may leave an exporter pool or workload connected."""
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(name)))


def unique_db_name(prefix: str) -> str:
    """Unique across sessions sharing an external server (pid + random suffix)."""
    return f"{prefix}_{os.getpid()}_{next(_db_counter)}_{uuid.uuid4().hex[:6]}"


def create_select_only_role(dsn: str, name: str, password: str) -> str:
    """Create (or reset) a login role that can only read pgGit's tables; return its DSN.

    ``dsn`` must be a superuser (or CREATEROLE + owner) DSN for the database to grant on. The
    grants are exactly what the exporter needs, and what the README documents::

        CREATE ROLE <name> LOGIN PASSWORD '<password>';
        GRANT CONNECT ON DATABASE <db> TO <name>;
        GRANT USAGE ON SCHEMA pggit TO <name>;
        GRANT SELECT ON ALL TABLES IN SCHEMA pggit TO <name>;

    No sequence, function or write privilege: the exporter must never call pgGit's writers.
    Roles are cluster-wide, so an existing role of that name gets the new password instead.
    """
    params = conninfo_to_dict(dsn)
    dbname = str(params.get("dbname") or "postgres")
    role = sql.Identifier(name)
    with psycopg.connect(dsn, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,)).fetchone()
        verb = sql.SQL("ALTER ROLE" if exists else "CREATE ROLE")
        conn.execute(sql.SQL("{} {} LOGIN PASSWORD {}").format(verb, role, sql.Literal(password)))
        conn.execute(sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(
            sql.Identifier(dbname), role))
        conn.execute(sql.SQL("GRANT USAGE ON SCHEMA pggit TO {}").format(role))
        conn.execute(sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA pggit TO {}").format(role))
    params["user"] = name
    params["password"] = password
    return make_conninfo(**params)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgTestServer]:
    """One server for the whole session (see the module docstring for PGGIT_TEST_DSN)."""
    external = os.environ.get(EXTERNAL_DSN_ENV)
    if external:
        yield PgTestServer(None, external)
        return
    embedded = EmbeddedPostgres()
    try:
        embedded.start()
        yield PgTestServer(embedded, None)
    finally:
        embedded.close()


@pytest.fixture(scope="session")
def pg_is_external(pg_server: PgTestServer) -> bool:
    return pg_server.is_external


def _template(pg_server: PgTestServer, prefix: str, *, later_tables: bool) -> Iterator[str]:
    name = unique_db_name(prefix)
    dsn = pg_server.create_database(name)
    try:
        install_schema(dsn, later_tables=later_tables)
        yield name
    finally:
        pg_server.drop_database(name)


@pytest.fixture(scope="session")
def pggit_template_db(pg_server: PgTestServer) -> Iterator[str]:
    """Name of a database with every table and function installed, copied per test."""
    yield from _template(pg_server, "pggit_tpl", later_tables=True)


@pytest.fixture(scope="session")
def pggit_core_template_db(pg_server: PgTestServer) -> Iterator[str]:
    """Name of a database with only the core tier (an older pgGit), copied per test."""
    yield from _template(pg_server, "pggit_core_tpl", later_tables=False)


def _fresh(pg_server: PgTestServer, template: str) -> Iterator[str]:
    name = unique_db_name("pggit_t")
    dsn = pg_server.create_database(name, template=template)
    try:
        yield dsn
    finally:
        pg_server.drop_database(name)


@pytest.fixture
def pggit_dsn(pg_server: PgTestServer, pggit_template_db: str) -> Iterator[str]:
    """Superuser DSN of a fresh database with the full schema, seeds and functions."""
    yield from _fresh(pg_server, pggit_template_db)


@pytest.fixture
def pggit_core_dsn(pg_server: PgTestServer, pggit_core_template_db: str) -> Iterator[str]:
    """Superuser DSN of a fresh database with the core tables and functions only."""
    yield from _fresh(pg_server, pggit_core_template_db)


@pytest.fixture
def pg_server_factory(pg_server: PgTestServer) -> Iterator[Callable[..., EmbeddedPostgres]]:
    """Start extra private servers, e.g. ``pg_server_factory(timezone="Asia/Kolkata")``.

    Each is started before it is returned and closed at the end of the test. Skips with an
    external server, where embedded binaries may be unavailable.
    """
    pg_server.require_embedded()
    servers: list[EmbeddedPostgres] = []

    def make(timezone: str = "UTC", **settings: str | int | float | bool) -> EmbeddedPostgres:
        server = EmbeddedPostgres(timezone=timezone, settings=settings)
        servers.append(server)
        server.start()
        return server

    try:
        yield make
    finally:
        for server in servers:
            server.close()


@pytest.fixture
def pg_replica(pg_server: PgTestServer) -> Iterator[EmbeddedPostgres]:
    """A hot standby (physical streaming replica, in recovery) of the session's server.

    Request it after the database fixtures the test writes to, so it is closed before they
    are dropped. Skips on an external server, whose configuration may not be changed.
    """
    primary = pg_server.require_embedded()
    try:
        standby = primary.replica()
    except EmbeddedPostgresError as exc:
        pytest.skip(f"cannot make a streaming replica of the test server: {exc}")
    try:
        yield standby
    finally:
        standby.close()


def wait_replayed(primary_dsn: str, standby_dsn: str, timeout: float = 30.0) -> None:
    """Until the standby has replayed everything the primary has written so far."""
    with psycopg.connect(primary_dsn, autocommit=True) as conn:
        lsn = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()[0]  # type: ignore[index]
    deadline = time.monotonic() + timeout
    with psycopg.connect(standby_dsn, autocommit=True) as conn:
        while conn.execute("SELECT pg_last_wal_replay_lsn() < %s::pg_lsn",
                           (lsn,)).fetchone()[0]:  # type: ignore[index]
            if time.monotonic() > deadline:
                raise AssertionError(f"standby did not replay up to {lsn} in {timeout} s")
            time.sleep(0.02)


@pytest.fixture
def tz_pg_server(pg_server_factory: Callable[..., EmbeddedPostgres]) -> EmbeddedPostgres:
    """A private server whose default TimeZone is America/New_York (UTC-5/-4), so code that
    assumes UTC or the machine's zone is caught; it has no pgGit database yet."""
    return pg_server_factory(timezone="America/New_York")


@pytest.fixture
def tz_pggit_dsn(tz_pg_server: EmbeddedPostgres) -> str:
    """Superuser DSN of a full pgGit database on the America/New_York server."""
    dsn = tz_pg_server.create_database("pggit")
    install_schema(dsn)
    return dsn
