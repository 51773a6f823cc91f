"""Helpers to run the exporter against a test database and read what it exposes.

Two ways to run it: in-process (`Service`, fast, for behaviour tests) and as a subprocess
(`ExporterProcess`, for signals, kill -9 and the real command line).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from exporter import config
from exporter.demo.embedded import free_port
from exporter.poller import DatabasePoller
from exporter.service import Service

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def write_config(path: Path, dsn: str, state_dir: Path, **overrides: Any) -> Path:
    """A config file for one database named `main`; overrides are top-level keys."""
    data: dict[str, Any] = {
        "listen": f"127.0.0.1:{free_port()}",
        "state_dir": str(state_dir),
        "poll_interval": "200ms",
        "gauge_interval": "1s",
        "gap_grace": "100ms",
        "databases": [{"name": "main", "dsn": dsn}],
    }
    db_overrides = overrides.pop("database", {})
    data["databases"][0].update(db_overrides)
    data.update(overrides)
    path.write_text(yaml.safe_dump(data))
    return path


def parse(text: str) -> Samples:
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def total(samples: Samples, name: str, **labels: str) -> float:
    """Sum of every sample called `name` whose labels include `labels`."""
    return sum(v for (n, ls), v in samples.items()
               if n == name and all((k, val) in ls for k, val in labels.items()))


def scrape(port: int, accept: str | None = None) -> str:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/metrics")
    if accept:
        req.add_header("Accept", accept)
    with urllib.request.urlopen(req, timeout=10) as resp:
        return resp.read().decode()


def wait_for(check: Callable[[], Any], timeout: float = 30.0, interval: float = 0.1,
             what: str = "condition") -> Any:
    """Poll `check` until it returns something truthy; fail the test with `what` otherwise."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except Exception as exc:  # the thing waited for may not be up yet
            last = exc
        if last and not isinstance(last, Exception):
            return last
        time.sleep(interval)
    pytest.fail(f"timed out waiting for {what}; last value: {last!r}")


def db_count(dsn: str, query: str) -> float:
    with psycopg.connect(dsn) as conn:
        return conn.execute(query).fetchone()[0]


class InProcess:
    """The exporter's Service in this process, on a free port."""

    def __init__(self, cfg_path: Path):
        self.cfg_path = cfg_path
        self.cfg = config.load(cfg_path, {})
        self.service = Service(self.cfg, cfg_path, reloadable=True)
        self.service.start()

    @property
    def port(self) -> int:
        return self.service.http.port

    @property
    def poller(self) -> DatabasePoller:
        return self.service.pollers[0]

    def samples(self) -> Samples:
        return parse(scrape(self.port))

    def caught_up_with(self, dsn: str, timeout: float = 30.0) -> Samples:
        """Wait until the exporter has counted every committed metric row, then scrape."""
        def check() -> Samples | None:
            expected = db_count(dsn, "SELECT count(*) FROM pggit.performance_metrics")
            s = self.samples()
            got = total(s, "pggit_operation_duration_seconds_count")
            return s if got == expected and self.poller.caught_up else None
        return wait_for(check, timeout, what="exporter to catch up")

    def stop(self) -> None:
        self.service.stop()


@pytest.fixture
def run_exporter(tmp_path: Path) -> Iterator[Callable[..., InProcess]]:
    started: list[InProcess] = []

    def start(dsn: str, **overrides: Any) -> InProcess:
        cfg = write_config(tmp_path / f"cfg{len(started)}.yml", dsn, tmp_path / "state",
                           **overrides)
        exporter = InProcess(cfg)
        started.append(exporter)
        return exporter

    yield start
    for exporter in started:
        exporter.stop()


class ExporterProcess:
    """`python -m exporter run` as a child process."""

    def __init__(self, cfg_path: Path, env: dict[str, str] | None = None,
                 ready: Callable[[int], Any] | None = None):
        self.cfg_path = cfg_path
        self.port = int(config.load(cfg_path, {}).listen.rpartition(":")[2])
        self.log = cfg_path.with_suffix(".log").open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "exporter", "run", "--config", str(cfg_path)],
            stdout=self.log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
        wait_for(lambda: (ready or scrape)(self.port), 30,
                 what="exporter process to serve /metrics")

    def samples(self) -> Samples:
        return parse(scrape(self.port))

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self) -> int:
        self.proc.terminate()
        return self.proc.wait(15)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.log.close()


@pytest.fixture
def exporter(pggit_dsn: str, run_exporter: Callable[..., InProcess]) -> InProcess:
    """An in-process exporter that has counted three operations of the database."""
    with psycopg.connect(pggit_dsn, autocommit=True) as conn:
        for i in range(3):
            conn.execute("SELECT pggit.record_performance_metric('commit', %s)", (1000 + i,))
    running = run_exporter(pggit_dsn)
    running.caught_up_with(pggit_dsn)
    return running
