"""Real Prometheus-stack processes for the rules, Alertmanager, silence and e2e tests.

The processes themselves live in `tests.prom_processes` (the benchmarks use them too); here
they get their pytest face: a missing binary skips the test with a reason (CI installs them
all), and `am_url` is a fixture (this module is a plugin, see conftest).
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from exporter import render
from tests.prom_processes import AlertmanagerServer, PromStackServer, find_binary, write_yaml

ROOT = Path(__file__).resolve().parent.parent


def require_tool(*names: str) -> str:
    """The first of `names` on PATH; skips the test when none is installed."""
    path = find_binary(names)
    if path is None:
        pytest.skip(f"{names[0]} is not installed (Debian package prometheus / "
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


@contextmanager
def running(server_class: type[PromStackServer], config_file: Path, workdir: Path
            ) -> Iterator[str]:
    """A real Prometheus or Alertmanager, ready; yields its base URL."""
    require_tool(*server_class.BINARIES)
    with server_class(config_file, workdir) as server:
        server.wait_ready()
        yield server.url


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


@pytest.fixture(scope="module")
def am_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An Alertmanager with the shipped routes whose receivers lead nowhere, one per module:
    its users read its API (silences, inhibitions), never its notifications."""
    workdir = tmp_path_factory.mktemp("am")
    cfg = webhook_alertmanager_config(render.DEFAULTS, "http://127.0.0.1:9/unused")
    with running(AlertmanagerServer, write_yaml(workdir / "alertmanager.yml", cfg),
                 workdir) as url:
        yield url
