"""Each way a connection fails is reported in libpq's words, and a rotated password is picked up.

Every case runs the exporter in-process against a real server (the session's, whose TCP
logins other than the superuser need a scram-sha-256 password, or a private one) and checks
the four places an operator looks: the `reason` label of pggit_exporter_errors_total, the
poller's last error (the log line carries the same text), /readyz's JSON and the landing page.
"""

from __future__ import annotations

import html
import json
import socket
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from exporter import connect_errors
from exporter.demo.embedded import EmbeddedPostgres, free_port
from tests.exporter_fixtures import InProcess, total, wait_for
from tests.pg_fixtures import PgTestServer, create_select_only_role

FAST = {"retry_backoff_max": "500ms", "database": {"connect_timeout": "1s"}}


def readyz(port: int) -> dict:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=10) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:  # 503 while a database is down
        return json.loads(exc.read())


def landing(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as resp:
        return html.unescape(resp.read().decode())


def assert_reported(exporter: InProcess, reason: str, phrase: str,
                    secret: str | None = None) -> None:
    """The failure is counted under `reason` and libpq's `phrase` reaches every surface."""
    samples = wait_for(
        lambda: (s := exporter.samples()) and total(
            s, "pggit_exporter_errors_total", stage="connect", reason=reason) >= 1 and s,
        what=f"a connect error with reason {reason}")
    assert total(samples, "pggit_up", database="main") == 0
    assert reason in connect_errors.REASONS
    assert phrase in (exporter.poller.last_error or ""), exporter.poller.last_error
    db = readyz(exporter.port)["databases"][0]
    assert db["last_error_reason"] == reason
    assert phrase in db["last_error"]
    page = landing(exporter.port)
    assert phrase in page
    if secret is not None:
        assert secret not in json.dumps(db) and secret not in page
        assert secret not in (exporter.poller.last_error or "")


def without_password(dsn: str) -> str:
    params = conninfo_to_dict(dsn)
    params.pop("password", None)
    return make_conninfo(**params)


@pytest.fixture
def role(pggit_dsn: str) -> Iterator[tuple[str, str]]:
    """A select-only role with a scram-sha-256 password: (its name, its DSN without password)."""
    name = f"rot_{uuid.uuid4().hex[:8]}"
    dsn = create_select_only_role(pggit_dsn, name, "first-secret")
    yield name, without_password(dsn)
    with psycopg.connect(pggit_dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s",
                     (name,))
        conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(name)))
        conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


def test_rotated_password_file_is_used_at_the_next_reconnect(
        pggit_dsn: str, role: tuple[str, str], tmp_path: Path,
        run_exporter: Callable[..., InProcess]) -> None:
    name, dsn = role
    secret = tmp_path / "password"
    secret.write_text("first-secret\n")
    exporter = run_exporter(dsn, retry_backoff_max="500ms",
                            database={"connect_timeout": "1s", "password_file": str(secret)})
    wait_for(lambda: exporter.poller.up, what="pggit_up 1 with the first password")

    with psycopg.connect(pggit_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("ALTER ROLE {} PASSWORD 'second-secret'").format(
            sql.Identifier(name)))
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s",
                     (name,))
    assert_reported(exporter, "auth_failed", "password authentication failed",
                    secret="first-secret")

    secret.write_text("second-secret\n")
    samples = wait_for(lambda: (s := exporter.samples()) and
                       total(s, "pggit_up", database="main") == 1 and s,
                       timeout=60, what="pggit_up back to 1 with the rotated password")
    assert total(samples, "pggit_up", database="main") == 1
    assert readyz(exporter.port)["databases"][0]["last_error"] is None


def test_wrong_password_is_retried_with_backoff_not_in_a_loop(
        pggit_dsn: str, role: tuple[str, str], tmp_path: Path,
        run_exporter: Callable[..., InProcess]) -> None:
    _name, dsn = role
    secret = tmp_path / "password"
    secret.write_text("wrong\n")
    exporter = run_exporter(dsn, poll_interval="100ms", retry_backoff_max="2s",
                            database={"connect_timeout": "1s", "password_file": str(secret)})
    assert_reported(exporter, "auth_failed", "password authentication failed", secret="wrong")
    before = total(exporter.samples(), "pggit_exporter_errors_total", stage="connect")
    wait_for(lambda: total(exporter.samples(), "pggit_exporter_errors_total",
                           stage="connect") >= before + 2, timeout=60, what="two more retries")
    # A tight loop would try hundreds of times a second; with backoff, each poll waits for the
    # connect timeout plus a growing delay.
    stats = exporter.poller.database.pool.get_stats()
    assert stats.get("connections_errors", 0) < 30, stats


def test_no_such_database_is_named(pg_server: PgTestServer, tmp_path: Path,
                                   run_exporter: Callable[..., InProcess]) -> None:
    exporter = run_exporter(pg_server.dsn(dbname=f"absent_{uuid.uuid4().hex[:8]}"), **FAST)
    assert_reported(exporter, "no_such_database", "does not exist")


def test_no_such_role_is_named(pg_server: PgTestServer, tmp_path: Path,
                               run_exporter: Callable[..., InProcess]) -> None:
    """Over the unix socket (trust), where the server says so; over TCP scram-sha-256 hides
    whether a role exists and reports a failed password instead."""
    embedded = pg_server.require_embedded()
    exporter = run_exporter(embedded.socket_dsn(user="nobody_here"), **FAST)
    assert_reported(exporter, "no_such_role", 'role "nobody_here" does not exist')


def test_connection_refused_is_named(tmp_path: Path,
                                     run_exporter: Callable[..., InProcess]) -> None:
    exporter = run_exporter(f"host=127.0.0.1 port={free_port()} dbname=x user=x", **FAST)
    assert_reported(exporter, "connection_refused", "Connection refused")


def test_server_that_never_answers_is_a_timeout(tmp_path: Path,
                                                run_exporter: Callable[..., InProcess]) -> None:
    """A listening socket nobody serves: the TCP handshake completes, libpq's startup waits."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        port = silent.getsockname()[1]
        exporter = run_exporter(f"host=127.0.0.1 port={port} dbname=x user=x", **FAST)
        assert_reported(exporter, "timeout", "timeout expired")


def test_ssl_required_by_the_client_is_named(pg_server: PgTestServer, tmp_path: Path,
                                          run_exporter: Callable[..., InProcess]) -> None:
    pg_server.require_embedded()  # an external server may well speak TLS
    dsn = pg_server.dsn() + " sslmode=require"
    exporter = run_exporter(dsn, **FAST)
    assert_reported(exporter, "ssl_required", "SSL")


def test_ssl_required_by_the_server_is_named(
        pg_server_factory: Callable[..., EmbeddedPostgres], tmp_path: Path,
        run_exporter: Callable[..., InProcess]) -> None:
    """pg_hba.conf takes TCP logins over TLS only; this server has no certificate, so the
    server's "no encryption" refusal is what an exporter without TLS meets."""
    server = pg_server_factory()
    (server.data_dir / "pg_hba.conf").write_text(
        "local all all trust\nhostssl all all 127.0.0.1/32 trust\n", encoding="utf-8")
    with psycopg.connect(server.socket_dsn(), autocommit=True) as conn:
        conn.execute("SELECT pg_reload_conf()")
    exporter = run_exporter(server.dsn(), **FAST)
    assert_reported(exporter, "ssl_required", "no encryption")


def test_too_many_connections_is_named(pg_server_factory: Callable[..., EmbeddedPostgres],
                                       tmp_path: Path,
                                       run_exporter: Callable[..., InProcess]) -> None:
    server = pg_server_factory(max_connections=3, superuser_reserved_connections=0,
                               reserved_connections=0)
    held = [psycopg.connect(server.dsn()) for _ in range(3)]
    try:
        exporter = run_exporter(server.dsn(), **FAST)
        assert_reported(exporter, "too_many_connections", "too many clients")
    finally:
        for conn in held:
            conn.close()


def test_unknown_host_is_named(tmp_path: Path, run_exporter: Callable[..., InProcess]) -> None:
    exporter = run_exporter("host=pggit-no-such-host.invalid dbname=x user=x", **FAST)
    assert_reported(exporter, "unknown_host", "pggit-no-such-host.invalid")


def test_every_reason_label_value_is_in_the_metric_help() -> None:
    from exporter.catalog import metric
    help_text = metric("pggit_exporter_errors_total").help
    assert all(reason in help_text for reason in connect_errors.REASONS)
