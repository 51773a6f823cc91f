"""A real OTLP trace receiver for tests: gRPC and HTTP/protobuf on 127.0.0.1.

Built on `opentelemetry-proto`'s generated service definitions, so the exporter under test
talks to the same wire protocol a collector speaks. It records every span it accepted and can
be told to refuse (UNAVAILABLE / 503), to simulate an endpoint that is down.
"""

from __future__ import annotations

import gzip
import threading
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1.common_pb2 import AnyValue


def _value(v: AnyValue) -> Any:
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return tuple(_value(x) for x in v.array_value.values)
    if kind == "kvlist_value":
        return {kv.key: _value(kv.value) for kv in v.kvlist_value.values}
    return getattr(v, kind) if kind else None


def _attrs(kvs: Any) -> dict[str, Any]:
    return {kv.key: _value(kv.value) for kv in kvs}


@dataclass(frozen=True)
class ReceivedSpan:
    trace_id: str
    span_id: str
    parent_span_id: str
    name: str
    start_ns: int
    end_ns: int
    attributes: dict[str, Any]
    status_code: int
    status_message: str
    events: tuple[tuple[str, dict[str, Any]], ...]
    resource: dict[str, Any]


@dataclass
class Receiver:
    """Start with `start()`; `grpc_endpoint` / `http_endpoint` are what the exporter dials."""

    spans: list[ReceivedSpan] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    refuse: bool = False
    requests: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, request: trace_service_pb2.ExportTraceServiceRequest,
               headers: dict[str, str]) -> None:
        with self._lock:
            self.requests += 1
            self.headers.append(headers)
            for rs in request.resource_spans:
                resource = _attrs(rs.resource.attributes)
                for ss in rs.scope_spans:
                    for s in ss.spans:
                        self.spans.append(ReceivedSpan(
                            s.trace_id.hex(), s.span_id.hex(), s.parent_span_id.hex(), s.name,
                            s.start_time_unix_nano, s.end_time_unix_nano, _attrs(s.attributes),
                            s.status.code, s.status.message,
                            tuple((e.name, _attrs(e.attributes)) for e in s.events), resource))

    def by_pggit_span_id(self) -> dict[str, list[ReceivedSpan]]:
        with self._lock:
            out: dict[str, list[ReceivedSpan]] = {}
            for s in self.spans:
                out.setdefault(str(s.attributes.get("pggit.span_id")), []).append(s)
            return out

    def start(self) -> None:
        receiver = self

        class Servicer(trace_service_pb2_grpc.TraceServiceServicer):
            def Export(self, request: Any, context: grpc.ServicerContext) -> Any:
                if receiver.refuse:
                    context.abort(grpc.StatusCode.UNAVAILABLE, "receiver refuses (test)")
                receiver.record(request, dict(context.invocation_metadata()))
                return trace_service_pb2.ExportTraceServiceResponse()

        self._grpc = grpc.server(futures.ThreadPoolExecutor(max_workers=4),
                                 options=[("grpc.max_receive_message_length", 64 << 20)])
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Servicer(), self._grpc)
        self.grpc_port = self._grpc.add_insecure_port("127.0.0.1:0")
        self._grpc.start()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if receiver.refuse:
                    self.send_response(503)
                    self.end_headers()
                    return
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                if self.path != "/v1/traces":
                    self.send_response(404)
                    self.end_headers()
                    return
                request = trace_service_pb2.ExportTraceServiceRequest()
                request.ParseFromString(body)
                receiver.record(request, {k.lower(): v for k, v in self.headers.items()})
                payload = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:
                pass

        self._http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.http_port = self._http.server_address[1]
        self._http_thread = threading.Thread(target=self._http.serve_forever, daemon=True)
        self._http_thread.start()

    @property
    def grpc_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.grpc_port}"

    @property
    def http_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/v1/traces"

    def stop(self) -> None:
        self._grpc.stop(0)
        self._http.shutdown()
        self._http.server_close()


# -- harness: a TraceForwarder wired to a database and this receiver --------------------------

def traces_config(receiver: Receiver, protocol: str = "grpc", **overrides: Any) -> Any:
    from exporter.config import TracesConfig

    endpoint = receiver.grpc_endpoint if protocol == "grpc" else receiver.http_endpoint
    values: dict[str, Any] = {"endpoint": endpoint, "protocol": protocol, "insecure": True,
                              "timeout": 2.0}
    values.update(overrides)
    return TracesConfig(**values)


def make_forwarder(dsn: str, state_dir: Any, cfg: Any, timezone: str | None = None,
                   database: str = "main", connect: Any = None, lease: bool = False) -> Any:
    """A forwarder as the service builds it; `connect` defaults to a new connection per poll.

    (The service passes its pool's `connect`; so does the benchmark.) With `lease`, it takes
    part in the span lease on a connection of its own, as the service's forwarders do.
    """
    from contextlib import contextmanager

    import psycopg
    from prometheus_client import CollectorRegistry

    from exporter.config import DEFAULT_BUCKETS
    from exporter.expose.self_metrics import SelfMetrics
    from exporter.labels import LabelCap
    from exporter.send.forwarder import TraceForwarder

    @contextmanager
    def connect_once() -> Any:
        with psycopg.connect(dsn) as conn:
            conn.execute("SET default_transaction_read_only = on")
            if timezone is not None:
                conn.execute(f"SET TimeZone = '{timezone}'")
            conn.commit()
            yield conn

    registry = CollectorRegistry()
    forwarder = TraceForwarder(
        database, connect or connect_once, "pggit", lambda name: name, cfg, state_dir,
        SelfMetrics(registry),
        lambda: None, DEFAULT_BUCKETS, LabelCap(500, 200), database, poll_interval=0.05,
        lease_session=(lambda: psycopg.connect(dsn, autocommit=True)) if lease else None)
    forwarder.registry = registry
    return forwarder


def spans_total(forwarder: Any, result: str) -> float:
    value = forwarder.registry.get_sample_value(
        "pggit_exporter_spans_total", {"database": forwarder.database, "result": result})
    return value or 0.0


def _run_forwarder(argv: list[str]) -> None:
    """`python -m tests.otlp_receiver DSN STATE_DIR ENDPOINT`: a forwarder until SIGTERM.

    The crash test kills this process with SIGKILL at random moments; SIGTERM stops it the
    way the service does (flush, save).
    """
    import signal

    dsn, state_dir, endpoint = argv
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    from exporter.config import TracesConfig

    cfg = TracesConfig(endpoint=endpoint, protocol="grpc", insecure=True, timeout=2.0,
                       batch_size=7)
    forwarder = make_forwarder(dsn, state_dir, cfg)
    forwarder.start()
    stop.wait()
    forwarder.stop(timeout=5)


if __name__ == "__main__":
    import sys

    _run_forwarder(sys.argv[1:])


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A real OTLP receiver (gRPC and HTTP) for the test, stopped after it."""
    r = Receiver()
    r.start()
    yield r
    r.stop()
