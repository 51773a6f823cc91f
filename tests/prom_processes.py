"""Real Prometheus, Alertmanager and exporter processes on loopback ports.

Every such child has the same life: start it with its output in a log file, wait until an
HTTP path answers 200 (failing with the log tail when it exits first), and stop it with
SIGTERM, then SIGKILL if it hangs. The test fixtures and the benchmarks share this one copy;
it has no pytest in it so that `bench/` can import it, and the fixtures turn a missing binary
into a skip.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Self

import yaml

from exporter.demo.embedded import free_port


def find_binary(names: Sequence[str]) -> str | None:
    """The first of `names` on PATH, or None."""
    for name in names:
        path = shutil.which(name)
        if path is not None:
            return path
    return None


def _require(names: Sequence[str]) -> str:
    path = find_binary(names)
    if path is None:
        raise FileNotFoundError(f"none of {', '.join(names)} is on PATH")
    return path


def write_yaml(path: Path, data: Any) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


class ServedProcess:
    """A child process serving HTTP on 127.0.0.1:`port`, its output in `log_path`.

    Starting does not wait: callers that start several children (Prometheus scraping an
    exporter) wait only for the ones they query, and `started` lets a benchmark time the
    wait itself.
    """

    def __init__(self, argv: Sequence[str], port: int, log_path: Path,
                 ready_path: str, cwd: Path | None = None) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.ready_path = ready_path
        self.log_path = log_path
        self.log = log_path.open("wb")
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(list(argv), stdout=self.log, stderr=subprocess.STDOUT,
                                     cwd=cwd)

    def wait_ready(self, timeout: float = 30.0, interval: float = 0.1) -> None:
        """Until `ready_path` answers 200 (a 503 while catching up is retried)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.proc.args[0]} exited with {self.proc.returncode}:\n"
                                   f"{self.log_tail()}")
            with contextlib.suppress(OSError), urllib.request.urlopen(
                    self.url + self.ready_path, timeout=5) as resp:
                if resp.status == 200:
                    return
            time.sleep(interval)
        raise TimeoutError(f"{self.proc.args[0]} not ready at {self.url}{self.ready_path}:\n"
                           f"{self.log_tail()}")

    def log_tail(self, lines: int = 20) -> str:
        self.log.flush()
        text = self.log_path.read_text(encoding="utf-8", errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.log.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class PromStackServer(ServedProcess):
    """A Prometheus-stack binary: one config file, its own storage, a free loopback port,
    `/-/ready`, and warnings only in its log. Subclasses name the binary and its flags."""

    NAME: str
    BINARIES: tuple[str, ...]
    STORAGE_FLAG: str
    EXTRA_ARGS: tuple[str, ...] = ()

    def __init__(self, config_file: Path, workdir: Path) -> None:
        port = free_port()
        storage = workdir / f"{self.NAME}-data"
        storage.mkdir(parents=True, exist_ok=True)
        super().__init__(
            [_require(self.BINARIES), f"--config.file={config_file}",
             f"{self.STORAGE_FLAG}={storage}", f"--web.listen-address=127.0.0.1:{port}",
             "--log.level=warn", *self.EXTRA_ARGS],
            port, workdir / f"{self.NAME}.log", "/-/ready")


class PrometheusServer(PromStackServer):
    """The real `prometheus` with exemplar storage (the dashboards' trace links need it)."""

    NAME = "prometheus"
    BINARIES = ("prometheus",)
    STORAGE_FLAG = "--storage.tsdb.path"
    EXTRA_ARGS = ("--enable-feature=exemplar-storage",)

    def api(self, path: str, **params: str) -> dict[str, Any]:
        """GET an API path; returns the decoded body even for 4xx (Prometheus' error JSON)."""
        url = f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=30) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return json.loads(exc.read() or b"{}") | {"http_status": exc.code}


class AlertmanagerServer(PromStackServer):
    """The real Alertmanager with clustering off, so parallel instances never gossip.

    Debian installs it as prometheus-alertmanager, upstream tarballs as alertmanager.
    """

    NAME = "alertmanager"
    BINARIES = ("prometheus-alertmanager", "alertmanager")
    STORAGE_FLAG = "--storage.path"
    EXTRA_ARGS = ("--cluster.listen-address=",)
