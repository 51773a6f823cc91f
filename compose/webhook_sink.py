"""A local stand-in for Slack, Mattermost and any other webhook Alertmanager posts to.

The demo stack routes alerts with the shipped Alertmanager configuration; its chat webhook URLs
point here, so a routed alert shows up as one JSON line on stdout
(`docker compose logs -f webhook-sink`) instead of leaving the machine. Standard library only,
so it runs in a stock Python image with nothing installed.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MAX_BODY = 1 << 20


class Sink:
    """Counts what arrived per path; GET / returns the counts, for a quick look or a test."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.received: dict[str, int] = {}

    def record(self, path: str, body: bytes) -> None:
        try:
            payload: object = json.loads(body) if body else None
        except ValueError:
            payload = body.decode("utf-8", "replace")
        with self.lock:
            self.received[path] = self.received.get(path, 0) + 1
        line = {"ts": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "path": path,
                "payload": payload}
        print(json.dumps(line, ensure_ascii=False), flush=True)

    def counts(self) -> dict[str, int]:
        with self.lock:
            return dict(self.received)


def handler(sink: Sink) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY:
                self.respond(413, {"error": "body too large"})
                return
            sink.record(self.path, self.rfile.read(length))
            # Slack's webhook API answers a bare "ok"; Alertmanager only looks at the status.
            self.respond(200, {"ok": True})

        def do_GET(self) -> None:
            if self.path == "/healthz":
                self.respond(200, {"status": "ok"})
            else:
                self.respond(200, {"received": sink.counts()})

        def respond(self, status: int, body: dict[str, object]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:
            """Request lines would drown the payload lines; errors still reach stderr."""

    return Handler


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", default="0.0.0.0:8080", help="host:port (default %(default)s)")
    args = parser.parse_args(argv)
    host, _, port = args.listen.rpartition(":")
    server = ThreadingHTTPServer((host or "0.0.0.0", int(port)), handler(Sink()))
    print(f"webhook sink listening on {host}:{server.server_address[1]}", file=sys.stderr,
          flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
