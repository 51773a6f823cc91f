"""Real Prometheus-stack processes for the rules, Alertmanager, silence and e2e tests.

Each helper starts the Debian binary on a free loopback port with its own temp storage and
stops it on exit. A missing binary skips the test with a reason; CI installs them all.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from exporter import render
from tests.exporter_fixtures import free_port

ROOT = Path(__file__).resolve().parent.parent


def require_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (Debian package prometheus / "
                    f"prometheus-alertmanager)")
    return path


def run_tool(*argv: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    require_tool(argv[0])
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=cwd)


def render_files(out_dir: Path, overrides: dict[str, Any] | None = None) -> dict[str, Path]:
    """Render rules and Alertmanager config with `overrides` into `out_dir`."""
    params = render.merge_params(overrides)
    paths = {}
    for rel, text in render.render_all(params).items():
        target = out_dir / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
        paths[rel] = target
    return paths


def http_json(method: str, url: str, body: Any = None, timeout: float = 5.0) -> Any:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        raw = resp.read()
    return json.loads(raw) if raw else None


def _wait_ready(proc: subprocess.Popen[bytes], url: str, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{proc.args[0]} exited with {proc.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError):
            pass
        time.sleep(0.1)
    pytest.fail(f"{proc.args[0]} not ready at {url}:\n{log.read_text()}")


@contextmanager
def _process(argv: list[str], ready_url: str, log: Path) -> Iterator[None]:
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait_ready(proc, ready_url, log, timeout=30)
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def alertmanager(config_file: Path, workdir: Path) -> Iterator[str]:
    """A real Alertmanager (clustering off); yields its base URL."""
    binary = require_tool("prometheus-alertmanager")
    port = free_port()
    storage = workdir / "am-data"
    storage.mkdir(parents=True, exist_ok=True)
    url = f"http://127.0.0.1:{port}"
    argv = [binary, f"--config.file={config_file}", f"--storage.path={storage}",
            f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address=",
            "--log.level=warn"]
    with _process(argv, f"{url}/-/ready", workdir / "alertmanager.log"):
        yield url


@contextmanager
def prometheus(config_file: Path, workdir: Path) -> Iterator[str]:
    """A real Prometheus; yields its base URL."""
    binary = require_tool("prometheus")
    port = free_port()
    storage = workdir / "prom-data"
    storage.mkdir(parents=True, exist_ok=True)
    url = f"http://127.0.0.1:{port}"
    argv = [binary, f"--config.file={config_file}", f"--storage.tsdb.path={storage}",
            f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"]
    with _process(argv, f"{url}/-/ready", workdir / "prometheus.log"):
        yield url


@dataclass
class Notification:
    """One webhook POST from Alertmanager, stamped when it arrived."""

    received_at: float
    payload: dict[str, Any]

    @property
    def alertname(self) -> str:
        return self.payload["groupLabels"].get("alertname", "")


@dataclass
class WebhookReceiver:
    """An HTTP server on loopback that records Alertmanager's webhook notifications."""

    url: str = ""
    notifications: list[Notification] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def received(self) -> list[Notification]:
        with self.lock:
            return list(self.notifications)


@contextmanager
def webhook_receiver() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            with receiver.lock:
                receiver.notifications.append(Notification(time.time(), json.loads(body)))
            self.send_response(200)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()


def webhook_alertmanager_config(params: dict[str, Any], url: str) -> dict[str, Any]:
    """The rendered routing tree with every receiver's integrations swapped for one webhook.

    The routes, grouping, timing and inhibitions under test stay exactly as rendered; only
    PagerDuty, email and chat (which need the internet) become a POST to the test's receiver,
    and the receiver name in each payload says which route was taken.
    """
    cfg = render.alertmanager_config(params)
    cfg.pop("templates", None)
    for receiver in cfg["receivers"]:
        for key in [k for k in receiver if k.endswith("_configs")]:
            del receiver[key]
        receiver["webhook_configs"] = [{"url": url, "send_resolved": True}]
    return cfg


def write_yaml(path: Path, data: Any) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path
