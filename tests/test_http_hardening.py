"""Hostile and careless clients against the real server: idle, half-handshaken, slow, many.

The exporter runs in this process (so its thread count can be read), with TLS and basic
auth on and an unreachable database: the page renders from state either way, and no
database is needed to show that the endpoint stays on the air.
"""

from __future__ import annotations

import http.client
import os
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import bcrypt
import pytest
import yaml

from exporter.expose.http import WORKERS
from tests.exporter_fixtures import InProcess, parse, wait_for
from tests.test_http import basic, get, make_certificate, unreachable_dsn

AUTH = basic("prometheus", "s3cret")


def threads() -> int:
    return threading.active_count()


def os_threads() -> int:
    """Threads of this process as the kernel counts them (includes any not made by Python)."""
    return len(os.listdir("/proc/self/task"))


@pytest.fixture
def start_tls_exporter(run_exporter: Callable[..., InProcess], tmp_path: Path
                       ) -> Callable[..., tuple[InProcess, ssl.SSLContext]]:
    def start(timeout: str) -> tuple[InProcess, ssl.SSLContext]:
        cert, key = make_certificate(tmp_path)
        web = tmp_path / "web.yml"
        web.write_text(yaml.safe_dump({
            "tls_server_config": {"cert_file": cert.name, "key_file": key.name},
            "basic_auth_users": {
                "prometheus": bcrypt.hashpw(b"s3cret", bcrypt.gensalt(4)).decode()},
        }))
        running = run_exporter(unreachable_dsn(), web_config_file=str(web),
                               web_read_timeout=timeout, web_tls_handshake_timeout=timeout,
                               database={"connect_timeout": "1s"})
        return running, ssl.create_default_context(cafile=str(cert))
    return start


@pytest.fixture
def tls_exporter(start_tls_exporter: Callable[..., tuple[InProcess, ssl.SSLContext]]
                 ) -> tuple[InProcess, ssl.SSLContext]:
    """Short deadlines (3s), so the tests that wait for them do not wait long."""
    return start_tls_exporter("3s")


def scrape_tls(port: int, tls: ssl.SSLContext) -> int:
    """An authenticated scrape with a generous timeout: prompt enough to pass, never flaky."""
    return get(f"https://127.0.0.1:{port}/metrics", AUTH, tls)[0]


@pytest.fixture
def sockets() -> Iterator[list[socket.socket]]:
    opened: list[socket.socket] = []
    yield opened
    for s in opened:
        s.close()


def closed_by_server(s: socket.socket) -> bool:
    """Whether the server hung up on `s` (a timeout here fails the test instead)."""
    s.settimeout(30)
    try:
        return s.recv(1) == b""
    except (ConnectionResetError, ssl.SSLError):
        return True


def connect(port: int, opened: list[socket.socket]) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    opened.append(s)
    return s


def test_idle_client_does_not_block_scrapes(tls_exporter: tuple[InProcess, ssl.SSLContext],
                                            sockets: list[socket.socket]) -> None:
    running, tls = tls_exporter
    connect(running.port, sockets)  # connects and sends nothing, not even a ClientHello
    assert scrape_tls(running.port, tls) == 200
    assert get(f"https://127.0.0.1:{running.port}/healthz", AUTH, tls)[0] == 200


def test_partial_tls_records_slow_headers_and_idle_clients_leave_scrapes_and_threads_alone(
        start_tls_exporter: Callable[..., tuple[InProcess, ssl.SSLContext]],
        sockets: list[socket.socket]) -> None:
    """Deadlines far away (5m): every attacker is still connected during the scrape."""
    running, tls = start_tls_exporter("5m")
    assert scrape_tls(running.port, tls) == 200
    before, os_before = threads(), os_threads()
    connect(running.port, sockets)
    for _ in range(40):
        # A TLS record header announcing 512 bytes of handshake, then 5 of them, then nothing.
        connect(running.port, sockets).sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03")
    slow = []
    for _ in range(200):
        raw = connect(running.port, sockets)
        wrapped = tls.wrap_socket(raw, server_hostname="127.0.0.1")
        sockets.append(wrapped)
        wrapped.sendall(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        slow.append(wrapped)
    for s in slow:  # still trickling: one more header line each, never the blank line
        s.sendall(b"X-Slow: 1\r\n")
    assert running.service.http.open_connections >= 241
    assert scrape_tls(running.port, tls) == 200
    assert threads() <= before + WORKERS
    assert os_threads() <= os_before + WORKERS


def test_slow_client_is_cut_off_at_the_read_timeout(
        tls_exporter: tuple[InProcess, ssl.SSLContext], sockets: list[socket.socket]) -> None:
    """web_read_timeout is 3s here: a request that never ends is closed, not kept forever."""
    running, tls = tls_exporter
    raw = connect(running.port, sockets)
    wrapped = tls.wrap_socket(raw, server_hostname="127.0.0.1")
    sockets.append(wrapped)
    wrapped.sendall(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    assert closed_by_server(wrapped)


def test_stalled_handshake_is_cut_off(tls_exporter: tuple[InProcess, ssl.SSLContext],
                                      sockets: list[socket.socket]) -> None:
    running, _ = tls_exporter
    stalled = connect(running.port, sockets)
    stalled.sendall(b"\x16\x03\x01\x02\x00")
    assert closed_by_server(stalled)


def test_connections_beyond_the_bound_push_out_the_longest_waiting(
        run_exporter: Callable[..., InProcess], sockets: list[socket.socket]) -> None:
    running = run_exporter(unreachable_dsn(), web_max_connections=20,
                           database={"connect_timeout": "1s"})
    for _ in range(50):
        connect(running.port, sockets)
    status = get(f"http://127.0.0.1:{running.port}/metrics")[0]
    assert status == 200
    assert running.service.http.open_connections <= 20
    assert closed_by_server(sockets[0])


def test_server_answers_http_1_1(run_exporter: Callable[..., InProcess]) -> None:
    running = run_exporter(unreachable_dsn(), database={"connect_timeout": "1s"})
    conn = http.client.HTTPConnection("127.0.0.1", running.port, timeout=10)
    conn.request("GET", "/healthz")
    resp = conn.getresponse()
    assert (resp.version, resp.status, resp.read()) == (11, 200, b"ok\n")
    conn.close()


def test_one_kept_alive_connection_serves_several_scrapes(
        tls_exporter: tuple[InProcess, ssl.SSLContext]) -> None:
    running, tls = tls_exporter
    conn = http.client.HTTPSConnection("127.0.0.1", running.port, timeout=10, context=tls)
    seen = set()
    for _ in range(5):
        conn.request("GET", "/metrics", headers={**AUTH, "Accept-Encoding": "gzip"})
        resp = conn.getresponse()
        assert resp.status == 200
        assert resp.getheader("Content-Encoding") == "gzip"
        resp.read()
        assert conn.sock is not None
        seen.add(conn.sock.getsockname())
    conn.close()
    assert len(seen) == 1


def test_head_gets_headers_without_a_body_and_the_connection_stays_usable(
        run_exporter: Callable[..., InProcess]) -> None:
    running = run_exporter(unreachable_dsn(), database={"connect_timeout": "1s"})
    conn = http.client.HTTPConnection("127.0.0.1", running.port, timeout=10)
    conn.request("HEAD", "/metrics")
    head = conn.getresponse()
    assert head.status == 200 and int(head.getheader("Content-Length")) > 0
    assert head.read() == b""
    conn.request("GET", "/healthz")
    assert conn.getresponse().read() == b"ok\n"
    conn.close()


def test_malformed_request_is_400_and_closed(run_exporter: Callable[..., InProcess],
                                             sockets: list[socket.socket]) -> None:
    running = run_exporter(unreachable_dsn(), database={"connect_timeout": "1s"})
    s = connect(running.port, sockets)
    s.sendall(b"NOT HTTP AT ALL\r\n\r\n")
    data = b""
    while chunk := s.recv(4096):
        data += chunk
    assert data.startswith(b"HTTP/1.1 400 ")


def test_connection_close_is_honoured(run_exporter: Callable[..., InProcess],
                                      sockets: list[socket.socket]) -> None:
    running = run_exporter(unreachable_dsn(), database={"connect_timeout": "1s"})
    s = connect(running.port, sockets)
    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    data = b""
    while chunk := s.recv(4096):  # returns b"" once the server closed: no timeout hit
        data += chunk
    assert data.startswith(b"HTTP/1.1 200 ")
    assert data.endswith(b"\r\n\r\nok\n")


def test_rotated_certificate_is_served_to_the_next_connection_without_a_signal(
        tls_exporter: tuple[InProcess, ssl.SSLContext], tmp_path: Path) -> None:
    running, old_tls = tls_exporter
    assert scrape_tls(running.port, old_tls) == 200
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    cert, key = make_certificate(fresh)
    key.replace(tmp_path / "server.key")
    cert.replace(tmp_path / "server.crt")
    new_tls = ssl.create_default_context(cafile=str(tmp_path / "server.crt"))
    wait_for(lambda: scrape_tls(running.port, new_tls) == 200, what="the new certificate")
    with pytest.raises(OSError, match="CERTIFICATE_VERIFY_FAILED"):
        scrape_tls(running.port, old_tls)


def test_broken_web_config_edit_keeps_the_previous_one(
        tls_exporter: tuple[InProcess, ssl.SSLContext], tmp_path: Path) -> None:
    running, tls = tls_exporter
    (tmp_path / "web.yml").write_text("basic_auth_users: [\n")
    status, _, body = get(f"https://127.0.0.1:{running.port}/metrics", AUTH, tls)
    assert status == 200
    assert parse(body.decode())[("pggit_exporter_config_last_reload_successful", ())] == 0
