"""The HTTP side: /metrics, /healthz, /readyz and a landing page, optionally behind TLS/auth.

Scrapes never touch the database: they render the last published state (cached per format),
so a slow database or a stuck trace endpoint can never slow Prometheus down.
"""

from __future__ import annotations

import base64
import binascii
import html
import json
import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from exporter import __version__
from exporter.expose.registry import Exposition
from exporter.expose.web_config import WebConfig

log = logging.getLogger("exporter.http")

StatusFn = Callable[[], dict[str, Any]]


class _Handler(BaseHTTPRequestHandler):
    server_version = f"pggit-exporter/{__version__}"
    exposition: Exposition
    status: StatusFn
    web: WebConfig

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("http request", extra={"client": self.client_address[0],
                                         "request": format % args})

    def _send(self, code: int, body: bytes, content_type: str,
              headers: dict[str, str] | None = None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        for key, value in self.web.headers.items():
            self.send_header(key, value)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _authorized(self) -> bool:
        if not self.web.users:
            return True
        header = self.headers.get("Authorization", "")
        if header.startswith("Basic "):
            try:
                user, _, password = base64.b64decode(header[6:]).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                user, password = "", ""
            if self.web.authorized(user, password):
                return True
        self._send(401, b"Unauthorized\n", "text/plain; charset=utf-8",
                   {"WWW-Authenticate": 'Basic realm="pggit-exporter"'})
        return False

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        if not self._authorized():
            return
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            compressed = "gzip" in self.headers.get("Accept-Encoding", "")
            body, content_type = self.exposition.render(self.headers.get("Accept"), compressed)
            self._send(200, body, content_type,
                       {"Content-Encoding": "gzip"} if compressed else {})
        elif path == "/healthz":
            self._send(200, b"ok\n", "text/plain; charset=utf-8")
        elif path == "/readyz":
            status = self.status()
            ready = status["ready"]
            body = json.dumps(status, indent=2, default=str).encode() + b"\n"
            self._send(200 if ready else 503, body, "application/json")
        elif path == "/":
            self._send(200, landing(self.status()).encode(), "text/html; charset=utf-8")
        else:
            self._send(404, b"Not found\n", "text/plain; charset=utf-8")


def landing(status: dict[str, Any]) -> str:
    """A page a human can read: version, databases, collectors, lag and the last error."""
    rows = []
    for db in status["databases"]:
        collectors = ", ".join(sorted(c for c, on in db["collectors"].items() if on)) or "-"
        off = ", ".join(sorted(c for c, on in db["collectors"].items() if not on)) or "-"
        lag = ", ".join(f"{t}: {v:.1f}s" for t, v in sorted(db["lag_seconds"].items())) or "-"
        failing = "; ".join(f"{c} FAILING: {m}"
                            for c, m in sorted(db.get("collectors_failing", {}).items()))
        rows.append(
            "<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in (
                db["name"], "up" if db["up"] else "DOWN",
                "yes" if db["caught_up"] else "no", collectors, off, lag,
                "; ".join(e for e in (failing, db["last_error"]) if e) or "-")) + "</tr>")
    extra = "".join(f"<p>{html.escape(db['name'])}: pgGit layout "
                    f"{html.escape(db['pggit_layout'])}</p>"
                    for db in status["databases"] if db.get("pggit_layout"))
    extra += "".join(f"<p>{html.escape(k)}: {html.escape(str(v))}</p>"
                     for k, v in status.get("components", {}).items())
    return f"""<!doctype html>
<html><head><title>pggit-exporter</title>
<style>body{{font-family:sans-serif;margin:2em}}td,th{{border:1px solid #ccc;padding:4px 8px;
text-align:left;vertical-align:top}}table{{border-collapse:collapse}}</style></head>
<body><h1>pggit-exporter {html.escape(__version__)}</h1>
<p><a href="/metrics">Metrics</a> · <a href="/healthz">Health</a> ·
<a href="/readyz">Readiness</a></p>
<table><tr><th>database</th><th>state</th><th>caught up</th><th>collectors enabled</th>
<th>collectors disabled</th><th>lag</th><th>last error</th></tr>
{''.join(rows)}</table>{extra}</body></html>
"""


class HttpServer:
    def __init__(self, address: tuple[str, int], exposition: Exposition, status: StatusFn,
                 web: WebConfig):
        handler = type("Handler", (_Handler,), {
            "exposition": exposition, "status": staticmethod(status), "web": web})
        self.server = ThreadingHTTPServer(address, handler)
        self.server.daemon_threads = True
        if web.tls is not None:
            self.server.socket = web.tls.wrap_socket(self.server.socket, server_side=True)
        self.thread = threading.Thread(target=self.server.serve_forever, name="http",
                                       daemon=True)

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
