"""Reload through POST /-/reload (in process) and SIGHUP (a real process): good, bad, certs."""

from __future__ import annotations

import signal
import ssl
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.exporter_fixtures import (
    ExporterProcess,
    InProcess,
    Samples,
    total,
    wait_for,
)
from tests.test_http import ROOT, get, make_certificate, record, unreachable_dsn

OK = "pggit_exporter_config_last_reload_successful"
AT = "pggit_exporter_config_last_reload_success_timestamp_seconds"
COUNT = "pggit_operation_duration_seconds_count"


def post_reload(port: int, scheme: str = "http",
                context: ssl.SSLContext | None = None) -> tuple[int, list[str]]:
    req = urllib.request.Request(f"{scheme}://127.0.0.1:{port}/-/reload", method="POST")
    try:
        with urllib.request.urlopen(req, timeout=60, context=context) as resp:
            return resp.status, resp.read().decode().splitlines()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode().splitlines()


def edit(path: Path, change: Callable[[dict[str, Any]], None]) -> None:
    data = yaml.safe_load(path.read_text())
    change(data)
    path.write_text(yaml.safe_dump(data))


def check_config_lines(path: Path) -> list[str]:
    proc = subprocess.run([sys.executable, "-m", "exporter", "check-config", "--config",
                           str(path)], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 2
    return proc.stderr.splitlines()


def test_adding_a_database_leaves_the_running_one_alone(exporter: InProcess,
                                                        pggit_dsn: str) -> None:
    main = exporter.poller
    edit(exporter.cfg_path, lambda d: d["databases"].append(
        {"name": "other", "dsn": unreachable_dsn(), "connect_timeout": "1s"}))
    assert post_reload(exporter.port) == (200, ["configuration reloaded"])
    assert list(exporter.service.units) == ["main", "other"]
    assert exporter.service.units["main"].poller is main
    assert total(exporter.samples(), COUNT, database="main") == 3


def test_changed_database_resumes_its_counts_exactly(exporter: InProcess,
                                                     pggit_dsn: str) -> None:
    before = exporter.poller
    edit(exporter.cfg_path, lambda d: d["databases"][0].update(statement_timeout="7s"))
    assert post_reload(exporter.port)[0] == 200
    assert exporter.poller is not before
    assert exporter.poller.db_cfg.statement_timeout == 7.0
    assert total(exporter.samples(), COUNT) == 3
    record(pggit_dsn, 2)
    assert total(exporter.caught_up_with(pggit_dsn), COUNT) == 5


def test_shared_setting_change_restarts_every_database_from_its_checkpoint(
        exporter: InProcess, pggit_dsn: str) -> None:
    before = exporter.poller
    edit(exporter.cfg_path, lambda d: d.update(poll_interval="300ms"))
    assert post_reload(exporter.port)[0] == 200
    assert exporter.poller is not before
    assert exporter.service.cfg.poll_interval == 0.3
    record(pggit_dsn, 4)
    assert total(exporter.caught_up_with(pggit_dsn), COUNT) == 7


def test_removed_database_stops_and_its_series_go(
        pggit_dsn: str, run_exporter: Callable[..., InProcess]) -> None:
    record(pggit_dsn)
    running = run_exporter(pggit_dsn)
    running.caught_up_with(pggit_dsn)
    edit(running.cfg_path, lambda d: d["databases"].__setitem__(
        0, {"name": "renamed", "dsn": unreachable_dsn(), "connect_timeout": "1s"}))
    assert post_reload(running.port)[0] == 200
    assert list(running.service.units) == ["renamed"]
    assert total(running.samples(), COUNT, database="main") == 0


def test_bad_config_is_rejected_with_check_config_lines_and_the_old_one_keeps_running(
        exporter: InProcess, pggit_dsn: str) -> None:
    running = exporter.poller
    good = exporter.cfg_path.read_text()
    edit(exporter.cfg_path, lambda d: d.update(poll_intervall="1s", batch_size=0))
    status, lines = post_reload(exporter.port)
    assert status == 500
    assert lines == check_config_lines(exporter.cfg_path)
    assert len(lines) == 2
    assert exporter.poller is running
    samples = exporter.samples()
    assert samples[(OK, ())] == 0
    record(pggit_dsn, 1)
    assert total(exporter.caught_up_with(pggit_dsn), COUNT) == 4
    exporter.cfg_path.write_text(good)
    assert post_reload(exporter.port)[0] == 200
    after = exporter.samples()
    assert after[(OK, ())] == 1
    assert after[(AT, ())] > samples[(AT, ())]


@pytest.mark.parametrize(("setting", "histogram"), [
    ("buckets", "pggit_operation_duration_seconds"),
    ("span_buckets", "pggit_span_duration_seconds"),
])
def test_changed_buckets_that_the_checkpoint_cannot_continue_are_rejected(
        exporter: InProcess, setting: str, histogram: str) -> None:
    """Metrics and span histograms share the state file: the probe tries both parts."""
    running = exporter.poller
    edit(exporter.cfg_path, lambda d: d.update({setting: [0.1, 1, 10]}))
    status, lines = post_reload(exporter.port)
    assert status == 500
    assert len(lines) == 1
    assert lines[0].startswith("databases: 'main' cannot resume its state with the new settings")
    assert f"bucket bounds of {histogram} changed" in lines[0]
    assert exporter.poller is running


def test_changed_listen_address_is_logged_as_needing_a_restart(
        exporter: InProcess, caplog: pytest.LogCaptureFixture) -> None:
    port = exporter.port
    edit(exporter.cfg_path, lambda d: d.update(listen="127.0.0.1:1"))
    with caplog.at_level("WARNING", logger="exporter.reload"):
        assert post_reload(port)[0] == 200
    assert exporter.port == port
    assert exporter.service.cfg.listen != "127.0.0.1:1"
    [warning] = [r for r in caplog.records if r.name == "exporter.reload"]
    assert warning.getMessage() == "setting changed; it takes effect at the next restart"
    assert warning.key == "listen"  # type: ignore[attr-defined]


def test_reload_wants_post(exporter: InProcess) -> None:
    status, headers, _ = get(f"http://127.0.0.1:{exporter.port}/-/reload")
    assert status == 405
    assert headers["Allow"] == "POST"


# --- SIGHUP, as systemd's ExecReload sends it ------------------------------------------------


@pytest.fixture
def process(pggit_dsn: str, tmp_path: Path) -> Iterator[Callable[..., ExporterProcess]]:
    from tests.exporter_fixtures import write_config

    started: list[ExporterProcess] = []

    def start(ready: Callable[[int], Any] | None = None, **overrides: Any) -> ExporterProcess:
        cfg = write_config(tmp_path / "cfg.yml", pggit_dsn, tmp_path / "state", **overrides)
        proc = ExporterProcess(cfg, ready=ready)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.close()


def wait_samples(proc: ExporterProcess, check: Callable[[Samples], Any], what: str) -> Samples:
    def samples() -> Samples | None:
        got = proc.samples()
        return got if check(got) else None
    return wait_for(samples, what=what)


def test_sighup_applies_a_good_config_without_losing_counts(
        process: Callable[..., ExporterProcess], pggit_dsn: str) -> None:
    record(pggit_dsn)
    proc = process()
    first = wait_samples(proc, lambda s: total(s, COUNT) == 3, "three rows counted")
    edit(proc.cfg_path, lambda d: d.update(poll_interval="300ms"))
    proc.proc.send_signal(signal.SIGHUP)
    wait_samples(proc, lambda s: s[(AT, ())] > first[(AT, ())], "the reload")
    assert proc.proc.poll() is None
    record(pggit_dsn, 2)
    wait_samples(proc, lambda s: total(s, COUNT) == 5, "five rows counted")
    assert "configuration reloaded" in proc.cfg_path.with_suffix(".log").read_text()


def test_sighup_with_a_bad_config_keeps_the_old_one_running(
        process: Callable[..., ExporterProcess], pggit_dsn: str) -> None:
    proc = process()
    edit(proc.cfg_path, lambda d: d.update(log_level="loud"))
    expected = check_config_lines(proc.cfg_path)
    proc.proc.send_signal(signal.SIGHUP)
    wait_samples(proc, lambda s: s[(OK, ())] == 0, "the rejected reload")
    assert proc.proc.poll() is None
    log = proc.cfg_path.with_suffix(".log").read_text()
    for line in expected:
        assert "reload rejected; the running configuration stays" in log
        assert line.replace('"', '\\"') in log
    record(pggit_dsn, 2)
    wait_samples(proc, lambda s: total(s, COUNT) == 2, "rows counted after the bad reload")


def test_sighup_with_a_changed_certificate_serves_it(
        process: Callable[..., ExporterProcess], tmp_path: Path) -> None:
    cert, key = make_certificate(tmp_path)
    web = tmp_path / "web.yml"
    web.write_text(yaml.safe_dump({"tls_server_config": {"cert_file": cert.name,
                                                         "key_file": key.name}}))
    old_tls = ssl.create_default_context(cafile=str(cert))
    url = "https://127.0.0.1:{}/healthz"
    proc = process(ready=lambda port: get(url.format(port), context=old_tls)[0] == 200,
                   web_config_file=str(web))
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    new_cert, new_key = make_certificate(fresh)
    edit(web, lambda d: d["tls_server_config"].update(cert_file=str(new_cert),
                                                      key_file=str(new_key)))
    proc.proc.send_signal(signal.SIGHUP)
    new_tls = ssl.create_default_context(cafile=str(new_cert))
    wait_for(lambda: get(url.format(proc.port), context=new_tls)[0] == 200,
             what="the new certificate")
    assert post_reload(proc.port, "https", new_tls)[0] == 200
    with pytest.raises(OSError, match="CERTIFICATE_VERIFY_FAILED"):
        get(url.format(proc.port), context=old_tls)
