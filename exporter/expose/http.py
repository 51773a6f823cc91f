"""The HTTP side: /metrics, /healthz, /readyz, /-/reload and a landing page, behind TLS/auth.

Scrapes never touch the database: they render the last published state (cached per format),
so a slow database or a stuck trace endpoint can never slow Prometheus down.

Connections are served by one asyncio event loop, so a client that connects and sends
nothing, stalls in the TLS handshake or trickles its headers costs a few kilobytes and a
timer, never a thread, and can never hold up another client: TLS handshakes, request reads
and keep-alive waits all run on the loop with their own deadlines. h11 does the HTTP/1.1
framing (keep-alive, pipelining rules, `Connection: close`, HTTP/1.0 clients). Work that can
block (bcrypt, rendering a page, a reload) runs on a small fixed pool of threads.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import html
import json
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import h11

from exporter import __version__
from exporter.expose.registry import Exposition
from exporter.expose.web_config import Watcher, WebConfig

log = logging.getLogger("exporter.http")

StatusFn = Callable[[], dict[str, Any]]
ReloadFn = Callable[[], list[str]]

MAX_HEADER_BYTES = 16 * 1024
MAX_BODY_BYTES = 64 * 1024
WORKERS = 4
"""Threads for blocking work; requests beyond this wait for one on the loop, not in a thread."""

SERVER = f"pggit-exporter/{__version__}"


@dataclass(frozen=True)
class Limits:
    """How long a client may take at each step, and how many connections may be open."""

    max_connections: int = 512
    tls_handshake_timeout: float = 10.0
    read_timeout: float = 10.0
    """For a request's headers and body once it has started, and for taking the response."""
    idle_timeout: float = 120.0
    """Between requests on a kept-alive connection: longer than common scrape intervals."""


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Response:
    status: int
    body: bytes
    content_type: str = "text/plain; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(eq=False)
class _Connection:
    """One open connection; `busy` while a request is being answered."""

    sock: socket.socket
    task: asyncio.Task[None] | None
    since: float
    busy: bool = False
    started: bool = False
    """Whether its task has begun (and so will close the socket itself when cancelled)."""


class _Closed(Exception):
    """The client went away or ran out of time; nothing more to send."""


class Handler:
    """What each path answers: a plain function of the request, run on a worker thread."""

    def __init__(self, exposition: Exposition, status: StatusFn, reload: ReloadFn | None):
        self.exposition = exposition
        self.status = status
        self.reload = reload

    def __call__(self, request: Request, web: WebConfig) -> Response:
        response = self._authorized(request, web) or self._route(request)
        response.headers = {**web.headers, **response.headers}
        return response

    @staticmethod
    def _authorized(request: Request, web: WebConfig) -> Response | None:
        if not web.users:
            return None
        header = request.headers.get("authorization", "")
        if header.startswith("Basic "):
            try:
                user, _, password = base64.b64decode(header[6:]).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                user, password = "", ""
            if web.authorized(user, password):
                return None
        return Response(401, b"Unauthorized\n",
                        headers={"WWW-Authenticate": 'Basic realm="pggit-exporter"'})

    def _route(self, request: Request) -> Response:
        path, method = request.path, request.method
        if path == "/-/reload":
            if method != "POST":
                return Response(405, b"Method Not Allowed: use POST\n",
                                headers={"Allow": "POST"})
            if self.reload is None:
                return Response(404, b"Not found\n")
            problems = self.reload()
            if problems:
                return Response(500, ("\n".join(problems) + "\n").encode())
            return Response(200, b"configuration reloaded\n")
        if method not in ("GET", "HEAD"):
            return Response(405, b"Method Not Allowed\n", headers={"Allow": "GET, HEAD"})
        if path == "/metrics":
            compressed = "gzip" in request.headers.get("accept-encoding", "")
            body, content_type = self.exposition.render(request.headers.get("accept"),
                                                        compressed)
            return Response(200, body, content_type,
                            {"Content-Encoding": "gzip"} if compressed else {})
        if path == "/healthz":
            return Response(200, b"ok\n")
        if path == "/readyz":
            status = self.status()
            body = json.dumps(status, indent=2, default=str).encode() + b"\n"
            return Response(200 if status["ready"] else 503, body, "application/json")
        if path == "/":
            return Response(200, landing(self.status()).encode(), "text/html; charset=utf-8")
        return Response(404, b"Not found\n")


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
    """Binds at construction (so a taken port fails the start), serves on its own thread."""

    def __init__(self, address: tuple[str, int], exposition: Exposition, status: StatusFn,
                 web: Watcher, limits: Limits | None = None, reload: ReloadFn | None = None):
        self.web = web
        self.limits = limits or Limits()
        self.handler = Handler(exposition, status, reload)
        host, port = address
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.socket = socket.create_server((host, port), family=family, backlog=128)
        self.socket.setblocking(False)
        self._pool = ThreadPoolExecutor(WORKERS, thread_name_prefix="http-worker")
        self._connections: set[_Connection] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._started = threading.Event()
        self.thread = threading.Thread(target=self._run, name="http", daemon=True)

    @property
    def port(self) -> int:
        return self.socket.getsockname()[1]

    @property
    def open_connections(self) -> int:
        return len(self._connections)

    def start(self) -> None:
        self.thread.start()
        self._started.wait(10)

    def stop(self) -> None:
        """Idempotent: a service stopped twice (a test's restart, then its teardown) is fine."""
        if self._loop is not None and self._stopping is not None \
                and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._stopping.set)
            self.thread.join(timeout=10)
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.socket.close()

    def _run(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        accepting = asyncio.create_task(self._accept_forever())
        self._started.set()
        await self._stopping.wait()
        accepting.cancel()
        for conn in list(self._connections):
            self._drop(conn)

    async def _accept_forever(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                sock, _ = await loop.sock_accept(self.socket)
            except OSError as exc:  # out of file descriptors, say: try again shortly
                log.warning("accept failed", extra={"error": str(exc)})
                await asyncio.sleep(0.1)
                continue
            sock.setblocking(False)
            conn = _Connection(sock, None, loop.time())
            if self._admit(conn):
                conn.task = loop.create_task(self._connection(conn))
            else:
                sock.close()

    def _admit(self, conn: _Connection) -> bool:
        """Make room for a new connection by closing the longest-waiting one not in a request.

        A flood of idle or slow clients then pushes out its own oldest members instead of
        locking everyone else out; a new connection is refused only when every slot is
        answering a request at this moment.
        """
        if len(self._connections) >= self.limits.max_connections:
            waiting = [c for c in self._connections if not c.busy]
            if not waiting:
                log.warning("connection refused: every connection is busy",
                            extra={"max_connections": self.limits.max_connections})
                return False
            log.debug("closing the longest-waiting connection to admit a new one",
                      extra={"max_connections": self.limits.max_connections})
            self._drop(min(waiting, key=lambda c: c.since))
        self._connections.add(conn)
        return True

    def _drop(self, conn: _Connection) -> None:
        self._connections.discard(conn)
        if conn.task is not None:
            conn.task.cancel()
        if not conn.started:  # a task cancelled before its first step never runs its finally
            conn.sock.close()

    async def _connection(self, conn: _Connection) -> None:
        loop = asyncio.get_running_loop()
        writer: asyncio.StreamWriter | None = None
        conn.started = True
        try:
            web = self.web.current()
            first_byte = (self.limits.tls_handshake_timeout if web.tls is not None
                          else self.limits.read_timeout)
            # Until the client sends something, it is a bare socket and a timer: no TLS
            # state (asyncio gives each TLS connection a 256 KiB buffer) and no streams.
            await _readable(conn.sock, first_byte)
            web = self.web.current()
            reader = asyncio.StreamReader(limit=MAX_HEADER_BYTES)
            transport, protocol = await loop.connect_accepted_socket(
                lambda: asyncio.StreamReaderProtocol(reader), conn.sock, ssl=web.tls,
                ssl_handshake_timeout=(self.limits.tls_handshake_timeout
                                       if web.tls is not None else None))
            writer = asyncio.StreamWriter(transport, protocol, reader, loop)
            await self._serve_http(reader, writer, conn)
        except (TimeoutError, _Closed, OSError, ssl.SSLError, asyncio.CancelledError):
            pass
        except Exception:
            log.exception("http connection failed")
        finally:
            self._connections.discard(conn)
            if writer is not None:
                writer.transport.abort()
            else:
                conn.sock.close()

    async def _serve_http(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                          conn: _Connection) -> None:
        loop = asyncio.get_running_loop()
        http = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEADER_BYTES)
        first = True
        while True:
            conn.busy, conn.since = False, loop.time()
            wait = self.limits.read_timeout if first else self.limits.idle_timeout
            try:
                request = await self._read_request(http, reader, wait)
            except h11.RemoteProtocolError as exc:
                if http.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                    await self._send(http, writer, "GET", Response(
                        exc.error_status_hint, b"Bad request\n", headers={"Connection": "close"}))
                return
            if request is None:
                return
            conn.busy = True
            web = self.web.current()
            try:
                response = await loop.run_in_executor(self._pool, self.handler, request, web)
            except Exception:
                log.exception("request failed", extra={"path": request.path})
                response = Response(500, b"Internal Server Error\n")
            await self._send(http, writer, request.method, response)
            if http.our_state is not h11.DONE or http.their_state is not h11.DONE:
                return
            http.start_next_cycle()
            first = False

    async def _read_request(self, http: h11.Connection, reader: asyncio.StreamReader,
                            wait: float) -> Request | None:
        """The next request, or None when the client closed between requests.

        `wait` bounds the quiet time before a request starts; from its first byte, the whole
        request must arrive within `read_timeout`, however slowly it trickles in.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        started = False
        head: h11.Request | None = None
        body = bytearray()
        while True:
            event = http.next_event()
            if event is h11.NEED_DATA:
                try:
                    async with asyncio.timeout_at(deadline):
                        data = await reader.read(65536)
                except TimeoutError:
                    raise _Closed from None
                if data and not started:
                    started = True
                    deadline = loop.time() + self.limits.read_timeout
                http.receive_data(data)
            elif isinstance(event, h11.Request):
                head = event
            elif isinstance(event, h11.Data):
                body += event.data
                if len(body) > MAX_BODY_BYTES:
                    raise h11.RemoteProtocolError("request body too large", 413)
            elif isinstance(event, h11.EndOfMessage):
                assert head is not None
                headers: dict[str, str] = {}
                for name, value in head.headers:
                    key = name.decode("latin-1")
                    text = value.decode("latin-1")
                    headers[key] = f"{headers[key]}, {text}" if key in headers else text
                return Request(head.method.decode("ascii", "replace"),
                               head.target.decode("latin-1").split("?", 1)[0], headers,
                               bytes(body))
            elif isinstance(event, h11.ConnectionClosed):
                return None
            else:  # PAUSED cannot happen before EndOfMessage
                raise _Closed

    async def _send(self, http: h11.Connection, writer: asyncio.StreamWriter, method: str,
                    response: Response) -> None:
        headers = [("Server", SERVER), ("Date", _http_date()),
                   ("Content-Type", response.content_type),
                   ("Content-Length", str(len(response.body))),
                   *response.headers.items()]
        data = http.send(h11.Response(status_code=response.status, headers=headers)) or b""
        if method != "HEAD":
            data += http.send(h11.Data(data=response.body)) or b""
        data += http.send(h11.EndOfMessage()) or b""
        writer.write(data)
        try:
            async with asyncio.timeout(self.limits.read_timeout):
                await writer.drain()
        except TimeoutError:
            raise _Closed from None


async def _readable(sock: socket.socket, timeout: float) -> None:
    """Wait until the client sent a byte (or closed), without reading it."""
    loop = asyncio.get_running_loop()
    ready = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(sock.fileno(), wake)
    try:
        async with asyncio.timeout(timeout):
            await ready
    finally:
        loop.remove_reader(sock.fileno())


def _http_date() -> str:
    return time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime())
