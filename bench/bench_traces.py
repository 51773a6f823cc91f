"""Benchmark: spans per second from `operation_traces` to an OTLP/gRPC receiver, and memory.

N ended spans wait in the table (the backlog after a first start or a long outage); one
forwarder, pinned to one core, reads, maps and sends them to a receiver in another process
(pinned to the other core, counting spans). Reported: spans/s end to end, the forwarder
process's peak RSS, and its RSS before the run. Results go to bench/results/traces.json.

    python bench/bench_traces.py --spans 1000000
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import resource
import sys
import tempfile
import time
from concurrent import futures
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def receiver_main(port_out: Any, count: Any) -> None:
    """A minimal OTLP/gRPC receiver that only counts spans (protobuf parsing is native)."""
    import grpc
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

    if hasattr(os, "sched_setaffinity") and os.cpu_count() and os.cpu_count() > 1:
        os.sched_setaffinity(0, {1})

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
        conn.execute("ANALYZE pggit.operation_traces")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--spans", type=int, default=1_000_000)
    parser.add_argument("--batch-size", type=int, default=2000)
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/traces.json")
    args = parser.parse_args()

    from exporter.config import TracesConfig
    from exporter.demo.embedded import EmbeddedPostgres
    from exporter.demo.schema import install_schema
    from tests.otlp_receiver import make_forwarder

    ctx = mp.get_context("spawn")
    port_q, count = ctx.Queue(), ctx.Value("q", 0)
    proc = ctx.Process(target=receiver_main, args=(port_q, count), daemon=True)
    proc.start()
    port = port_q.get(timeout=30)

    with EmbeddedPostgres() as pg:
        dsn = pg.create_database("bench")
        install_schema(dsn)
        t0 = time.perf_counter()
        fill(dsn, args.spans)
        fill_s = time.perf_counter() - t0
        if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
            os.sched_setaffinity(0, {0})
        cfg = TracesConfig(endpoint=f"http://127.0.0.1:{port}", protocol="grpc", insecure=True,
                           batch_size=args.batch_size)
        with tempfile.TemporaryDirectory() as state:
            forwarder = make_forwarder(dsn, Path(state), cfg)
            rss_before = rss_mb()
            cpu0 = time.process_time()
            start = time.perf_counter()
            forwarder.start()
            peak_seen = rss_before
            while count.value < args.spans:
                time.sleep(0.05)
                peak_seen = max(peak_seen, rss_mb())
            elapsed = time.perf_counter() - start
            cpu = time.process_time() - cpu0
            forwarder.stop(timeout=5)
    proc.terminate()
    result = {
        "spans": args.spans,
        "protocol": "grpc",
        "batch_size": args.batch_size,
        "queue_size": cfg.queue_size,
        "seconds": round(elapsed, 2),
        "spans_per_second": round(args.spans / elapsed),
        "forwarder_cpu_seconds": round(cpu, 2),
        "spans_per_cpu_second": round(args.spans / cpu),
        "rss_before_mb": round(rss_before, 1),
        "rss_peak_mb": round(max(peak_seen,
                                 resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024), 1),
        "fill_seconds": round(fill_s, 1),
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
