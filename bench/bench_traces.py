"""Benchmark: spans per second from `operation_traces` to an OTLP/gRPC receiver, and memory.

N ended spans wait in the table (the backlog after a first start or a long outage). A
forwarder, in its own process pinned to one core, reads, maps and sends them over the
service's connection pool to a receiver in another process (pinned to the other core,
counting spans). Measured in the same run, alternating to share the machine's noise:

- `new`: this tree's forwarder, end to end (spans/s, CPU seconds, peak RSS as VmHWM), then
  the median wall time of a poll once the backlog is sent (10 new spans per poll; after the
  first pass a poll scans the table, see `exporter.read.operation_traces`);
- `old`: the forwarder of `--baseline` (a git revision, exported to a temporary directory),
  end to end on the same table and receiver;
- `reference`: the SDK's own `OTLPSpanExporter` (its `encode_spans`) exporting the same spans,
  already built as `ReadableSpan`s, to the same receiver, beside this tree's exporter sending
  the same rows (mapping from rows included). No database in either: encoding and sending.

Results go to bench/results/traces.json.

    python -m bench.bench_traces --spans 1000000
"""

from __future__ import annotations

import argparse
import importlib
import json
import multiprocessing as mp
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent import futures
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def pin(cpu: int) -> None:
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {cpu})


def receiver_main(port_out: Any, count: Any) -> None:
    """A minimal OTLP/gRPC receiver that only counts spans (protobuf parsing is native)."""
    import grpc
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

    pin(1)

    class Servicer(trace_service_pb2_grpc.TraceServiceServicer):
        def Export(self, request: Any, context: Any) -> Any:
            n = sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans)
            with count.get_lock():
                count.value += n
            return trace_service_pb2.ExportTraceServiceResponse()

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2),
                         options=[("grpc.max_receive_message_length", 256 << 20)])
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Servicer(), server)
    port_out.put(server.add_insecure_port("127.0.0.1:0"))
    server.start()
    server.wait_for_termination()


def fill(dsn: str, n: int) -> None:
    """n ended root spans with pgGit-like attributes, inserted set-wise in chunks."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        for lo in range(0, n, 200_000):
            hi = min(lo + 200_000, n)
            conn.execute(
                "INSERT INTO pggit.operation_traces (trace_id, span_id, operation_type, "
                "span_name, span_status, start_time, end_time, duration_microseconds, "
                "branch_id, user_name, session_id, memory_peak_bytes, cpu_microseconds, "
                "attributes) "
                "SELECT gen_random_uuid()::text, gen_random_uuid()::text, 'commit', "
                "'commit.write', 'SUCCESS', now()::timestamp - interval '1 second', "
                "now()::timestamp, 1000 + i %% 5000, NULL, 'bench', 's-' || (i %% 100), "
                "1048576, 800, jsonb_build_object('rows', i %% 100, 'table', 'items', "
                "'db', jsonb_build_object('statement', 'UPDATE items SET x = $1'))"
                " FROM generate_series(%s::int, %s::int) AS i", (lo, hi - 1))
        conn.execute("VACUUM ANALYZE pggit.operation_traces")


def build_forwarder(tree: str, name: str, dsn: str, cfg: Any, state_dir: Path,
                    **database_settings: Any) -> Any:
    """The span pipeline of `tree`, with `poll_once`, `start`, `span_scan`, and
    `poll_target`: what the poll thread calls (`poll_once`) and what stops it (`stop`).

    Trees from before the one engine have a `TraceForwarder` with its own thread; later ones
    read spans in the database's poller, built here as the service builds it with only the
    span collectors on (`tests.otlp_receiver.make_forwarder`).
    """
    if (Path(tree) / "exporter/send/forwarder.py").exists():
        from prometheus_client import CollectorRegistry

        from exporter.config import DEFAULT_BUCKETS, DatabaseConfig
        from exporter.db import Database
        from exporter.expose.self_metrics import SelfMetrics
        from exporter.labels import LabelCap

        old = importlib.import_module("exporter.send.forwarder")
        database = Database(DatabaseConfig(name=name, dsn=dsn, **database_settings))
        forwarder = old.TraceForwarder(
            name, database.connect, "pggit", lambda table: table, cfg, state_dir,
            SelfMetrics(CollectorRegistry()), lambda: None, DEFAULT_BUCKETS,
            LabelCap(500, 200), name, poll_interval=1.0)
        forwarder.poll_target = forwarder
        return forwarder
    from tests.otlp_receiver import make_forwarder

    harness = make_forwarder(dsn, state_dir, cfg, database=name, poll_interval=1.0,
                             **database_settings)
    object.__setattr__(harness, "poll_target", harness.poller)
    return harness


def forwarder_main(tree: str, dsn: str, port: int, spans: int, batch: int, count: Any,
                   out: Any) -> None:
    """One end-to-end run of the span pipeline in `tree`, in this (fresh, pinned) process."""
    sys.path.insert(0, tree)
    pin(0)
    from exporter.config import TracesConfig

    assert Path(sys.modules["exporter"].__file__ or "").is_relative_to(tree)
    cfg = TracesConfig(endpoint=f"http://127.0.0.1:{port}", protocol="grpc", insecure=True,
                       batch_size=batch)
    with tempfile.TemporaryDirectory() as state:
        forwarder = build_forwarder(tree, "bench", dsn, cfg, Path(state))
        rss_before = status_mb("VmRSS")
        first = count.value
        cpu0 = time.process_time()
        start = time.perf_counter()
        forwarder.start()
        while count.value - first < spans:
            time.sleep(0.01)
        elapsed = time.perf_counter() - start
        cpu = time.process_time() - cpu0
        rss_peak = status_mb("VmHWM")
        forwarder.poll_target.stop(timeout=5)  # the poll thread; the pool stays open
        steady = steady_polls(forwarder, dsn)
    out.put({"seconds": round(elapsed, 2), "spans_per_second": round(spans / elapsed),
             "cpu_seconds": round(cpu, 2), "spans_per_cpu_second": round(spans / cpu),
             "rss_before_mb": round(rss_before, 1), "rss_peak_mb": round(rss_peak, 1),
             "steady_poll_ms_median": steady})


def steady_polls(forwarder: Any, dsn: str, polls: int = 9) -> float:
    """Wall time of a poll after the backlog: 10 new spans each, on the now large table."""
    import psycopg

    times = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        for i in range(polls):
            conn.execute(
                "INSERT INTO pggit.operation_traces (trace_id, span_id, operation_type, "
                "span_name, span_status, start_time, end_time, user_name) "
                "SELECT gen_random_uuid()::text, gen_random_uuid()::text, 'commit', 'steady', "
                "'SUCCESS', now()::timestamp, now()::timestamp, 'bench' "
                "FROM generate_series(1, 10)")
            start = time.perf_counter()
            forwarder.poll_once()
            times.append(time.perf_counter() - start)
            assert i or forwarder.span_scan.base is not None, "first pass not over"
    return round(sorted(times)[polls // 2] * 1000, 1)


def to_readable(span: Any, resource: Any, scope: Any) -> Any:
    """An SDK span equal to a decoded OTLP `Span` (for the reference exporter)."""
    from opentelemetry.sdk.trace import Event, ReadableSpan
    from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode

    def attrs(kvs: Any) -> dict[str, Any]:
        return {kv.key: getattr(kv.value, kv.value.WhichOneof("value")) for kv in kvs}

    trace = int.from_bytes(span.trace_id, "big")
    parent = (SpanContext(trace, int.from_bytes(span.parent_span_id, "big"), False)
              if span.parent_span_id else None)
    return ReadableSpan(
        name=span.name, context=SpanContext(trace, int.from_bytes(span.span_id, "big"), False),
        parent=parent, resource=resource, instrumentation_scope=scope,
        attributes=attrs(span.attributes), kind=SpanKind.INTERNAL,
        events=[Event(e.name, attrs(e.attributes), e.time_unix_nano) for e in span.events],
        status=Status(StatusCode(span.status.code), span.status.message or None),
        start_time=span.start_time_unix_nano, end_time=span.end_time_unix_nano)


def reference_main(dsn: str, port: int, spans: int, batch: int, count: Any, out: Any) -> None:
    """The SDK's exporter and ours, on the same spans, to the same receiver; no database."""
    pin(0)
    import psycopg
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.proto.trace.v1.trace_pb2 import Span

    from exporter.config import TracesConfig
    from exporter.map.operation_traces import to_span
    from exporter.read.operation_traces import Bound, ChangeScan
    from exporter.read.snapshot import Snapshot
    from tests.otlp_receiver import make_forwarder

    cfg = TracesConfig(endpoint=f"http://127.0.0.1:{port}", protocol="grpc", insecure=True,
                       batch_size=batch)
    with tempfile.TemporaryDirectory() as state:
        forwarder = make_forwarder(dsn, Path(state), cfg)
    style = forwarder.style
    scan = ChangeScan()
    with psycopg.connect(dsn) as conn:
        snap = Snapshot.parse(conn.execute("SELECT pg_current_snapshot()::text").fetchone()[0])
        scan.begin(snap, Bound(False, None, frozenset()), time.time(), 0.0)  # a backlog pass
        rows = forwarder.spans.changed(conn, scan, snap.xmax, spans)
    sdk_spans = [to_readable(Span.FromString(to_span(r, style)), style.resource, style.scope)
                 for r in rows]
    ours = forwarder.sender.exporter
    theirs = OTLPSpanExporter(endpoint=cfg.endpoint, insecure=True)
    result: dict[str, Any] = {"spans": len(rows)}
    for name, items, send in (
            ("sdk_exporter_spans_per_second", sdk_spans, theirs.export),
            ("ours_from_rows_spans_per_second", rows,
             lambda batch_rows: ours.export([to_span(r, style) for r in batch_rows]))):
        best = 0.0
        for _ in range(3):
            first = count.value
            start = time.perf_counter()
            for i in range(0, len(items), batch):
                send(items[i:i + batch])
            elapsed = time.perf_counter() - start
            assert count.value - first == len(items)
            best = max(best, len(items) / elapsed)
        result[name] = round(best)
    theirs.shutdown()
    ours.shutdown()
    out.put(result)


def export_tree(revision: str) -> Path:
    """The files of `revision` that a forwarder imports, in a temporary directory."""
    target = Path(tempfile.mkdtemp(prefix="pggit-bench-old-"))
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", revision, "exporter", "tests"],
                             check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    return target


def run(ctx: Any, target: Any, *args: Any) -> dict[str, Any]:
    out = ctx.Queue()
    proc = ctx.Process(target=target, args=(*args, out))
    proc.start()
    result = out.get()
    proc.join()
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--spans", type=int, default=1_000_000)
    parser.add_argument("--batch-size", type=int, default=2000)
    parser.add_argument("--baseline", default="5197cd0",
                        help="git revision whose forwarder is measured beside this tree's")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--reference-spans", type=int, default=100_000)
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/traces.json")
    args = parser.parse_args()

    from exporter.demo.embedded import EmbeddedPostgres
    from exporter.demo.schema import install_schema

    ctx = mp.get_context("spawn")
    port_q, count = ctx.Queue(), ctx.Value("q", 0)
    receiver = ctx.Process(target=receiver_main, args=(port_q, count), daemon=True)
    receiver.start()
    port = port_q.get(timeout=30)
    old_tree = export_tree(args.baseline) if args.baseline else None
    load = [os.getloadavg()[0]]
    runs: dict[str, list[dict[str, Any]]] = {"new": [], "old": []}
    with EmbeddedPostgres() as pg:
        dsn = pg.create_database("bench")
        install_schema(dsn)
        t0 = time.perf_counter()
        fill(dsn, args.spans)
        fill_s = time.perf_counter() - t0
        for _ in range(args.repeat):
            for name, tree in (("old", old_tree), ("new", ROOT)):
                if tree is not None:
                    runs[name].append(run(ctx, forwarder_main, str(tree), dsn, port,
                                          args.spans, args.batch_size, count))
                    print(name, runs[name][-1], flush=True)
        reference = run(ctx, reference_main, dsn, port, args.reference_spans,
                        args.batch_size, count)
    load.append(os.getloadavg()[0])
    receiver.terminate()
    if old_tree is not None:
        shutil.rmtree(old_tree)

    def best(name: str) -> dict[str, Any]:
        return max(runs[name], key=lambda r: r["spans_per_second"]) if runs[name] else {}

    result = {
        "spans": args.spans,
        "protocol": "grpc",
        "batch_size": args.batch_size,
        "connections": "the service's pool (exporter.db.Database)",
        "new": best("new"),
        "old": {"revision": args.baseline, **best("old")} if args.baseline else None,
        "runs": runs,
        "reference": reference,
        "fill_seconds": round(fill_s, 1),
        "cpus": os.cpu_count(),
        "load_average_start_end": [round(x, 2) for x in load],
        "python": sys.version.split()[0],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
