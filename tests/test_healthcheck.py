"""`pggit-exporter healthcheck` probes the exporter over whatever TLS, auth and port it uses."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import bcrypt
import pytest
import yaml

from exporter.cli import main
from exporter.healthcheck import probe_address
from tests.exporter_fixtures import InProcess, free_port, wait_for
from tests.test_http import make_certificate, unreachable_dsn

ROOT = Path(__file__).resolve().parent.parent


def healthcheck(cfg: InProcess, *args: str) -> int:
    return main(["healthcheck", "--config", str(cfg.cfg_file), *args])


def started(run: Callable[..., InProcess], dsn: str, **overrides: object) -> InProcess:
    exporter = run(dsn, **overrides)
    exporter.cfg_file = sorted(exporter.cfg.state_dir.parent.glob("cfg*.yml"))[-1]
    return exporter


@pytest.fixture
def secured_web(tmp_path: Path) -> Path:
    cert, key = make_certificate(tmp_path)
    web = tmp_path / "web.yml"
    web.write_text(yaml.safe_dump({
        "tls_server_config": {"cert_file": cert.name, "key_file": key.name},
        "basic_auth_users": {"prometheus": bcrypt.hashpw(b"s3cret", bcrypt.gensalt(4)).decode()},
    }))
    (tmp_path / "password").write_text("s3cret\n")
    return web


def test_plain_http_healthz_is_healthy(pggit_dsn: str, run_exporter, capsys) -> None:
    exporter = started(run_exporter, pggit_dsn)
    assert healthcheck(exporter) == 0
    assert f"http://127.0.0.1:{exporter.port}/healthz answered 200" in capsys.readouterr().out


def test_readyz_names_the_database_that_is_down(run_exporter, capsys) -> None:
    exporter = started(run_exporter, unreachable_dsn())
    assert healthcheck(exporter, "--endpoint", "/healthz") == 0
    assert healthcheck(exporter, "--endpoint", "/readyz") == 1
    err = capsys.readouterr().err
    assert "answered 503: main: down, catching up" in err


def test_readyz_is_healthy_once_caught_up(pggit_dsn: str, run_exporter) -> None:
    exporter = started(run_exporter, pggit_dsn)
    wait_for(lambda: healthcheck(exporter, "--endpoint", "/readyz") == 0,
             what="readiness through the healthcheck")


def test_tls_and_basic_auth_with_credentials(pggit_dsn: str, run_exporter, secured_web: Path,
                                             capsys) -> None:
    exporter = started(run_exporter, pggit_dsn, web_config_file=str(secured_web))
    password = str(secured_web.parent / "password")
    wait_for(lambda: healthcheck(exporter, "--endpoint", "/readyz", "--user", "prometheus",
                                 "--password-file", password) == 0, what="readiness over TLS")
    assert f"https://127.0.0.1:{exporter.port}/readyz answered 200" in capsys.readouterr().out


def test_tls_and_basic_auth_liveness_without_credentials(
        pggit_dsn: str, run_exporter, secured_web: Path, capsys) -> None:
    """A 401 over the pinned TLS connection proves the server serves: healthy for liveness."""
    exporter = started(run_exporter, pggit_dsn, web_config_file=str(secured_web))
    assert healthcheck(exporter) == 0
    assert "answered 401 (basic auth is on" in capsys.readouterr().out
    assert healthcheck(exporter, "--endpoint", "/readyz") == 1
    assert "pass --user and --password-file" in capsys.readouterr().err


def test_wrong_password_is_unhealthy(pggit_dsn: str, run_exporter, secured_web: Path,
                                     capsys, monkeypatch) -> None:
    exporter = started(run_exporter, pggit_dsn, web_config_file=str(secured_web))
    monkeypatch.setenv("PGGIT_EXPORTER_HEALTHCHECK_PASSWORD", "wrong")
    assert healthcheck(exporter, "--user", "prometheus") == 1
    assert "answered 401: wrong user or password" in capsys.readouterr().err


def test_nothing_listening_is_unhealthy_with_the_address(tmp_path: Path, capsys) -> None:
    port = free_port()
    cfg = tmp_path / "cfg.yml"
    cfg.write_text(yaml.safe_dump({"listen": f"0.0.0.0:{port}",
                                   "databases": [{"name": "x", "dsn": "host=127.0.0.1"}]}))
    assert main(["healthcheck", "--config", str(cfg)]) == 1
    assert f"unhealthy: http://127.0.0.1:{port}/healthz:" in capsys.readouterr().err


def test_bad_config_exits_2(tmp_path: Path, capsys) -> None:
    cfg = tmp_path / "cfg.yml"
    cfg.write_text("listen: nowhere\n")
    assert main(["healthcheck", "--config", str(cfg)]) == 2
    assert "listen: must be host:port" in capsys.readouterr().err


@pytest.mark.parametrize(("listen", "address"), [
    ("0.0.0.0:9863", ("127.0.0.1", 9863)), (":9000", ("127.0.0.1", 9000)),
    ("[::]:9863", ("::1", 9863)), ("10.1.2.3:80", ("10.1.2.3", 80))])
def test_wildcard_listen_is_probed_on_loopback(listen: str, address: tuple[str, int]) -> None:
    assert probe_address(listen) == address


def test_console_script_probes_like_the_container_does(pggit_dsn: str, run_exporter) -> None:
    """The installed entry point, as the Dockerfile's HEALTHCHECK runs it."""
    exporter = started(run_exporter, pggit_dsn)
    script = Path(sys.executable).parent / "pggit-exporter"
    done = subprocess.run([str(script), "healthcheck", "--config", str(exporter.cfg_file)],
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PGGIT_EXPORTER_LISTEN": exporter.cfg.listen})
    assert done.returncode == 0, done.stderr
    assert "healthy:" in done.stdout
