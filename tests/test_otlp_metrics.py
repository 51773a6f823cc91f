"""OTLP metrics received by a real third-party collector.

The collector is rotel (PyPI `rotel`, a Rust OpenTelemetry collector shipped as a binary in
the wheel). The exporter pushes to rotel's OTLP receiver through the official OTLP metric
exporter; rotel has no file exporter, so it forwards what it received over OTLP to a plain
gRPC receiver in this test, which keeps the requests. What arrives must be the exporter's
own state: exponential histograms with the native buckets, counters as cumulative sums.
"""

from __future__ import annotations

import importlib.util
import subprocess
import threading
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import psycopg
import pytest
from opentelemetry.proto.collector.metrics.v1 import (
    metrics_service_pb2,
    metrics_service_pb2_grpc,
)

from exporter.config import MetricsConfig
from exporter.demo.embedded import free_port
from exporter.send.metrics import metrics_enabled
from tests.exporter_fixtures import wait_for

HIST = "pggit_operation_duration_seconds"


def rotel_binary() -> Path | None:
    spec = importlib.util.find_spec("rotel")
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "rotel-agent"
    return path if path.is_file() else None


pytestmark = [
    pytest.mark.timeout(180),
    pytest.mark.skipif(rotel_binary() is None,
                       reason="the rotel collector is not installed (pip install rotel; "
                              "it is in the test extra)"),
]


class _Sink(metrics_service_pb2_grpc.MetricsServiceServicer):
    def __init__(self) -> None:
        self.requests: list[metrics_service_pb2.ExportMetricsServiceRequest] = []
        self.lock = threading.Lock()

    def Export(self, request: Any, context: Any) -> Any:
        with self.lock:
            self.requests.append(request)
        return metrics_service_pb2.ExportMetricsServiceResponse()

    def latest(self, name: str) -> list[Any]:
        """The metric `name` of the newest request that carried it."""
        return [m for _, m in self.latest_with_resource(name)]

    def latest_with_resource(self, name: str) -> list[tuple[dict[str, str], Any]]:
        """The metric `name` of the newest request that carried it, with the attributes of
        the resource it came under."""
        with self.lock:
            for request in reversed(self.requests):
                for rm in request.resource_metrics:
                    for sm in rm.scope_metrics:
                        for m in sm.metrics:
                            if m.name == name:
                                return [(_attributes(rm.resource.attributes), m)]
        return []


def _attributes(kvs: Any) -> dict[str, str]:
    return {kv.key: kv.value.string_value for kv in kvs}


@pytest.fixture
def rotel(tmp_path: Path) -> Iterator[tuple[int, _Sink]]:
    """rotel receiving OTLP/gRPC on a free port and forwarding to a sink in this process."""
    sink = _Sink()
    server = grpc.server(futures.ThreadPoolExecutor(4))
    metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(sink, server)
    sink_port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    grpc_port, http_port = free_port(), free_port()
    log = (tmp_path / "rotel.log").open("wb")
    proc = subprocess.Popen(
        [str(rotel_binary()), "start",
         "--otlp-grpc-endpoint", f"127.0.0.1:{grpc_port}",
         "--otlp-http-endpoint", f"127.0.0.1:{http_port}",
         "--exporter", "otlp", "--otlp-exporter-protocol", "grpc",
         "--otlp-exporter-endpoint", f"http://127.0.0.1:{sink_port}",
         "--batch-timeout", "100ms",
         "--pid-file", str(tmp_path / "rotel.pid"), "--log-file", str(tmp_path / "rotel.out")],
        stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: _listening(grpc_port) or proc.poll() is not None, timeout=20,
                 what="rotel to listen")
        if proc.poll() is not None:
            pytest.skip(f"rotel could not run here: exit {proc.returncode}, "
                        f"{(tmp_path / 'rotel.log').read_text(errors='replace')[-500:]}")
        yield grpc_port, sink
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()
        server.stop(0)


def _listening(port: int) -> bool:
    import socket
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_metrics_push_is_off_unless_its_own_endpoint_is_set() -> None:
    assert not metrics_enabled(MetricsConfig(), {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x"})
    assert metrics_enabled(MetricsConfig(), {"OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "x:4317"})
    assert metrics_enabled(MetricsConfig(endpoint="http://x:4318"), {})


def test_rotel_receives_the_exporters_series_with_exponential_histograms(
        pggit_dsn: str, rotel: tuple[int, _Sink], run_exporter) -> None:
    grpc_port, sink = rotel
    with psycopg.connect(pggit_dsn, autocommit=True) as conn:
        for op, us in (("commit", 1500), ("commit", 1), ("merge", 120_000), ("commit", 9_000)):
            conn.execute("SELECT pggit.record_performance_metric(%s, %s, p_rows_affected => 3)",
                         (op, us))
    exporter = run_exporter(pggit_dsn, metrics={
        "endpoint": f"127.0.0.1:{grpc_port}", "protocol": "grpc", "insecure": True,
        "interval": "1s"})
    wait_for(lambda: exporter.poller.caught_up, what="the exporter to read the rows")

    def received() -> list[Any]:
        (m,) = sink.latest(HIST) or [None]
        if m is None:
            return []
        points = list(m.exponential_histogram.data_points)
        return points if sum(p.count for p in points) == 4 else []

    points = wait_for(received, timeout=60, what="rotel to forward the duration histogram")
    (m,) = sink.latest(HIST)
    assert m.unit == "s"
    assert m.exponential_histogram.aggregation_temporality == 2  # cumulative
    native = exporter.poller.agg.native[HIST]
    for p in points:
        attrs = {kv.key: kv.value.string_value for kv in p.attributes}
        cell = native[(attrs["operation_type"], attrs["branch"])]
        assert attrs["database"] == "main"
        assert p.scale == cell.schema and p.zero_count == cell.zero
        got = {p.positive.offset + 1 + k: c
               for k, c in enumerate(p.positive.bucket_counts) if c}
        assert got == cell.buckets
    (counter,) = sink.latest("pggit_operation_rows_affected")
    assert counter.sum.is_monotonic and counter.sum.aggregation_temporality == 2
    assert sum(p.as_double for p in counter.sum.data_points) == 12


def test_static_labels_and_replica_are_resource_attributes_through_rotel(
        pggit_dsn: str, rotel: tuple[int, _Sink], run_exporter) -> None:
    """A database's static labels and `replica` arrive on its resource, once per push, and
    the points carry only the catalog's labels; the build info (no database) is under a
    resource with `replica` alone."""
    grpc_port, sink = rotel
    with psycopg.connect(pggit_dsn, autocommit=True) as conn:
        for us in (1500, 9_000):
            conn.execute("SELECT pggit.record_performance_metric('commit', %s)", (us,))
    exporter = run_exporter(
        pggit_dsn, replica="r1", database={"labels": {"env": "prod", "team": "core"}},
        metrics={"endpoint": f"127.0.0.1:{grpc_port}", "protocol": "grpc", "insecure": True,
                 "interval": "1s"})
    wait_for(lambda: exporter.poller.caught_up, what="the exporter to read the rows")

    def received() -> list[tuple[dict[str, str], Any]]:
        got = sink.latest_with_resource(HIST)
        return got if got and sum(
            p.count for p in got[0][1].exponential_histogram.data_points) == 2 else []

    ((resource, hist),) = wait_for(received, timeout=60,
                                   what="rotel to forward the duration histogram")
    assert {k: resource.get(k) for k in ("env", "team", "replica", "pggit.database")} == {
        "env": "prod", "team": "core", "replica": "r1", "pggit.database": "main"}
    assert resource["service.name"] == "pggit-exporter"
    for p in hist.exponential_histogram.data_points:
        attrs = _attributes(p.attributes)
        assert set(attrs) == {"database", "operation_type", "branch"}
        assert (attrs["database"], attrs["operation_type"]) == ("main", "commit")
    ((build_resource, build),) = sink.latest_with_resource("pggit_exporter_build_info")
    assert build_resource["replica"] == "r1"
    assert "env" not in build_resource and "pggit.database" not in build_resource
    for p in build.gauge.data_points:
        assert "replica" not in _attributes(p.attributes)
