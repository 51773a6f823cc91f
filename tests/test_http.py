"""The HTTP side as Prometheus and people see it: formats, compression, health, TLS and auth."""

from __future__ import annotations

import base64
import gzip
import shutil
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import bcrypt
import psycopg
import pytest
import yaml

from exporter import __version__
from exporter.config import ConfigError
from exporter.expose import web_config
from tests.exporter_fixtures import InProcess, free_port, parse, scrape, total, wait_for

ROOT = Path(__file__).resolve().parent.parent
OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"


def get(url: str, headers: dict[str, str] | None = None,
        context: ssl.SSLContext | None = None) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body, also for 4xx/5xx answers."""
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10, context=context) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def record(dsn: str, n: int = 3) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        for i in range(n):
            conn.execute("SELECT pggit.record_performance_metric('commit', %s)", (1000 + i,))


def unreachable_dsn() -> str:
    return f"host=127.0.0.1 port={free_port()} dbname=pggit user=nobody"


@pytest.fixture
def down_exporter(run_exporter: Callable[..., InProcess]) -> InProcess:
    running = run_exporter(unreachable_dsn(), database={"connect_timeout": "1s"})
    wait_for(lambda: running.service.pollers[0].last_error, what="a failed poll")
    return running


# --- /metrics --------------------------------------------------------------------------------


def test_metrics_default_is_prometheus_text(exporter: InProcess) -> None:
    status, headers, body = get(f"http://127.0.0.1:{exporter.port}/metrics")
    assert status == 200
    assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
    assert total(parse(body.decode()), "pggit_operation_duration_seconds_count") == 3
    assert b"# EOF" not in body


def test_metrics_negotiates_openmetrics(exporter: InProcess) -> None:
    status, headers, body = get(f"http://127.0.0.1:{exporter.port}/metrics",
                                {"Accept": OPENMETRICS})
    text = body.decode()
    assert status == 200
    assert headers["Content-Type"].startswith("application/openmetrics-text")
    assert text.endswith("# EOF\n")
    assert "# UNIT pggit_operation_duration_seconds seconds\n" in text
    assert "# TYPE pggit_operation_duration_seconds histogram\n" in text


def test_openmetrics_parses_with_the_openmetrics_parser(exporter: InProcess) -> None:
    from prometheus_client.openmetrics.parser import text_string_to_metric_families

    text = scrape(exporter.port, OPENMETRICS)
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert families["pggit_operation_duration_seconds"].unit == "seconds"
    assert families["pggit_operation_duration_seconds"].type == "histogram"


def test_metrics_gzip_when_asked(exporter: InProcess) -> None:
    status, headers, body = get(f"http://127.0.0.1:{exporter.port}/metrics",
                                {"Accept-Encoding": "gzip"})
    assert status == 200
    assert headers.get("Content-Encoding") == "gzip"
    text = gzip.decompress(body).decode()
    assert total(parse(text), "pggit_operation_duration_seconds_count") == 3


def test_metrics_plain_without_accept_encoding(exporter: InProcess) -> None:
    _, headers, body = get(f"http://127.0.0.1:{exporter.port}/metrics")
    assert "Content-Encoding" not in headers
    assert body.startswith(b"#")


def test_unknown_path_is_404(exporter: InProcess) -> None:
    assert get(f"http://127.0.0.1:{exporter.port}/metric")[0] == 404


# --- health, readiness, landing page ---------------------------------------------------------


def test_healthz_is_ok_while_database_is_down(down_exporter: InProcess) -> None:
    status, _, body = get(f"http://127.0.0.1:{down_exporter.port}/healthz")
    assert (status, body) == (200, b"ok\n")


def test_readyz_is_503_before_the_database_was_read(down_exporter: InProcess) -> None:
    status, headers, body = get(f"http://127.0.0.1:{down_exporter.port}/readyz")
    assert status == 503
    assert headers["Content-Type"] == "application/json"
    assert yaml.safe_load(body)["databases"][0]["up"] is False


def test_readyz_is_200_once_caught_up(exporter: InProcess) -> None:
    _, _, body = wait_for(
        lambda: (r := get(f"http://127.0.0.1:{exporter.port}/readyz"))[0] == 200 and r,
        what="/readyz 200")
    state = yaml.safe_load(body)
    assert state["ready"] is True
    assert state["databases"][0]["caught_up"] is True


def test_landing_page_shows_version_database_collectors_and_lag(
        exporter: InProcess, pggit_dsn: str) -> None:
    record(pggit_dsn, 1)  # a row read incrementally gives the lag a newest time
    exporter.caught_up_with(pggit_dsn)
    status, headers, body = get(f"http://127.0.0.1:{exporter.port}/")
    page = body.decode()
    assert status == 200
    assert headers["Content-Type"].startswith("text/html")
    assert f"pggit-exporter {__version__}" in page
    assert "<td>main</td>" in page
    assert "performance_metrics" in page
    assert "performance_metrics: " in page  # the lag cell, "table: N.Ns"
    assert 'href="/metrics"' in page


def test_landing_page_shows_the_last_error(down_exporter: InProcess) -> None:
    page = get(f"http://127.0.0.1:{down_exporter.port}/")[2].decode()
    assert "DOWN" in page
    assert "connect: " in page


# --- TLS and basic auth via the web config file ---------------------------------------------


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (openssl CLI; `cryptography` is not installed)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed")
    cert, key = directory / "server.crt", directory / "server.key"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60)
    return cert, key


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


SECURITY_HEADERS = {"Strict-Transport-Security": "max-age=31536000",
                    "X-Content-Type-Options": "nosniff", "X-Frame-Options": "deny"}


@pytest.fixture
def secured(pggit_dsn: str, run_exporter: Callable[..., InProcess],
            tmp_path: Path) -> tuple[InProcess, ssl.SSLContext]:
    cert, key = make_certificate(tmp_path)
    web = tmp_path / "web.yml"
    web.write_text(yaml.safe_dump({
        "tls_server_config": {"cert_file": cert.name, "key_file": key.name},
        "basic_auth_users": {"prometheus": bcrypt.hashpw(b"s3cret", bcrypt.gensalt(4)).decode()},
        "http_server_config": {"http2": True, "headers": SECURITY_HEADERS},
    }))
    record(pggit_dsn)
    running = run_exporter(pggit_dsn, web_config_file=str(web))
    return running, ssl.create_default_context(cafile=str(cert))


def test_tls_and_basic_auth_serve_metrics(secured: tuple[InProcess, ssl.SSLContext]) -> None:
    running, tls = secured

    def counted() -> float:
        status, headers, body = get(f"https://127.0.0.1:{running.port}/metrics",
                                    basic("prometheus", "s3cret"), tls)
        assert status == 200
        assert SECURITY_HEADERS.items() <= headers.items()
        return total(parse(body.decode()), "pggit_operation_duration_seconds_count") == 3

    wait_for(counted, what="metrics over TLS")


@pytest.mark.parametrize("path", ["/metrics", "/", "/healthz", "/readyz"])
def test_wrong_password_is_401_everywhere(secured: tuple[InProcess, ssl.SSLContext],
                                          path: str) -> None:
    running, tls = secured
    status, headers, body = get(f"https://127.0.0.1:{running.port}{path}",
                                basic("prometheus", "wrong"), tls)
    assert status == 401
    assert SECURITY_HEADERS.items() <= headers.items()
    assert headers["WWW-Authenticate"].startswith("Basic ")
    assert b"pggit" not in body


def test_missing_credentials_are_401(secured: tuple[InProcess, ssl.SSLContext]) -> None:
    running, tls = secured
    assert get(f"https://127.0.0.1:{running.port}/metrics", context=tls)[0] == 401


def test_unknown_user_is_401(secured: tuple[InProcess, ssl.SSLContext]) -> None:
    running, tls = secured
    assert get(f"https://127.0.0.1:{running.port}/metrics", basic("admin", "s3cret"),
               tls)[0] == 401


def test_garbage_authorization_header_is_401(secured: tuple[InProcess, ssl.SSLContext]) -> None:
    running, tls = secured
    status = get(f"https://127.0.0.1:{running.port}/metrics",
                 {"Authorization": "Basic %%%not-base64"}, tls)[0]
    assert status == 401


def test_plain_http_to_the_tls_port_gets_no_metrics(
        secured: tuple[InProcess, ssl.SSLContext]) -> None:
    running, _ = secured
    with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):
        get(f"http://127.0.0.1:{running.port}/metrics", basic("prometheus", "s3cret"))


def test_certificate_is_verified_by_the_client(secured: tuple[InProcess, ssl.SSLContext]) -> None:
    """The server presents the configured certificate: a client without its CA refuses it."""
    running, _ = secured
    with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
        get(f"https://127.0.0.1:{running.port}/metrics", basic("prometheus", "s3cret"),
            ssl.create_default_context())


# --- web config errors -----------------------------------------------------------------------


def check_config(tmp_path: Path, web: str) -> tuple[int, list[str]]:
    web_file = tmp_path / "web.yml"
    web_file.write_text(web)
    cfg = tmp_path / "cfg.yml"
    cfg.write_text(yaml.safe_dump({
        "web_config_file": str(web_file), "state_dir": str(tmp_path / "state"),
        "databases": [{"name": "main", "dsn": "host=127.0.0.1 dbname=pggit user=x"}]}))
    proc = subprocess.run(
        [sys.executable, "-m", "exporter", "check-config", "--config", str(cfg)],
        capture_output=True, text=True, timeout=60, cwd=ROOT)
    return proc.returncode, [line for line in proc.stderr.splitlines() if line.strip()]


def test_unknown_web_config_key_is_a_clear_error(tmp_path: Path) -> None:
    code, lines = check_config(tmp_path, "basic_auth_user:\n  prometheus: x\n")
    assert code == 2
    assert lines == ["web_config_file.basic_auth_user: unknown key"]


def test_unknown_tls_key_is_a_clear_error(tmp_path: Path) -> None:
    cert, key = make_certificate(tmp_path)
    code, lines = check_config(tmp_path, yaml.safe_dump({"tls_server_config": {
        "cert_file": cert.name, "key_file": key.name, "certfile": "x"}}))
    assert code == 2
    assert lines == ["web_config_file.tls_server_config.certfile: unknown key"]


@pytest.mark.parametrize(("server", "line"), [
    ({"http3": True}, "web_config_file.http_server_config.http3: unknown key"),
    ({"http2": "yes"}, "web_config_file.http_server_config.http2: must be true or false"),
    ({"headers": {"X-Frame-Options": "allow"}},
     "web_config_file.http_server_config.headers.X-Frame-Options: must be one of deny, "
     "sameorigin"),
    ({"headers": {"Set-Cookie": "a=b"}},
     "web_config_file.http_server_config.headers.Set-Cookie: not a header that can be set "
     "(one of Content-Security-Policy, X-Frame-Options, X-Content-Type-Options, "
     "X-XSS-Protection, Strict-Transport-Security)"),
    ({"headers": {"Content-Security-Policy": "default-src 'self'\r\nX-Evil: 1"}},
     "web_config_file.http_server_config.headers.Content-Security-Policy: must be a one-line "
     "string"),
], ids=["unknown-key", "http2-not-bool", "bad-frame-options", "not-settable", "newline"])
def test_bad_http_server_config_is_a_clear_error(tmp_path: Path, server: dict,
                                                 line: str) -> None:
    code, lines = check_config(tmp_path, yaml.safe_dump({"http_server_config": server}))
    assert code == 2
    assert lines == [line]


def test_plain_password_instead_of_hash_is_an_error(tmp_path: Path) -> None:
    code, lines = check_config(tmp_path, "basic_auth_users:\n  prometheus: s3cret\n")
    assert code == 2
    assert lines == ["web_config_file.basic_auth_users.prometheus: must be a bcrypt hash"]


@pytest.mark.parametrize("key", ["min_version", "max_version"])
def test_unknown_tls_version_is_an_error(tmp_path: Path, key: str) -> None:
    cert, key_file = make_certificate(tmp_path)
    code, lines = check_config(tmp_path, yaml.safe_dump({"tls_server_config": {
        "cert_file": cert.name, "key_file": key_file.name, key: "TLS1.3"}}))
    assert code == 2
    assert lines == [f"web_config_file.tls_server_config.{key}: must be one of "
                     "TLS10, TLS11, TLS12, TLS13"]


def test_max_version_is_applied(tmp_path: Path) -> None:
    cert, key = make_certificate(tmp_path)
    path = tmp_path / "web.yml"
    path.write_text(yaml.safe_dump({"tls_server_config": {
        "cert_file": cert.name, "key_file": key.name, "max_version": "TLS12"}}))
    context = web_config.load(path).tls
    assert context is not None
    assert context.maximum_version == ssl.TLSVersion.TLSv1_2


def test_missing_certificate_is_an_error(tmp_path: Path) -> None:
    code, lines = check_config(tmp_path, "tls_server_config:\n  cert_file: a.crt\n"
                                         "  key_file: a.key\n")
    assert code == 2
    assert len(lines) == 1
    assert lines[0].startswith("web_config_file.tls_server_config.cert_file: cannot load")


def test_example_web_config_loads_and_its_hash_matches_its_comment(tmp_path: Path) -> None:
    example = ROOT / "config" / "web-config.yml"
    tls = yaml.safe_load(example.read_text())["tls_server_config"]
    cert, key = make_certificate(tmp_path)
    cert.rename(tmp_path / tls["cert_file"])
    key.rename(tmp_path / tls["key_file"])
    shutil.copy(example, tmp_path / "web-config.yml")
    loaded = web_config.load(tmp_path / "web-config.yml")
    assert loaded.tls is not None
    assert loaded.authorized("prometheus", "change-me")
    assert not loaded.authorized("prometheus", "change-me-not")


def test_web_config_yaml_error_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "web.yml"
    path.write_text("basic_auth_users: [\n")
    with pytest.raises(ConfigError) as err:
        web_config.load(path)
    assert len(err.value.problems) == 1
    assert "\n" not in err.value.problems[0]
