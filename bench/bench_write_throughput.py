"""Benchmark: pgGit's own write throughput with no exporter, metrics only, and traces on.

The exporter is a guest in the user's database: what it must not do is slow pgGit down.
Several pgbench clients write through pgGit's functions as fast as they can, on a table that
already holds `--spans` spans. Two workloads:

- `metrics` (the issue's measurement): each transaction is one `record_performance_metric`
  row, while a side connection starts and ends 20 spans a second through
  `start_performance_trace` / `end_performance_trace`, as pgGit does (end in the next
  transaction). The trace reader's cost is what it takes from writers it does not read.
- `spans`: each transaction starts a span, ends it in the next statement's transaction and
  records a metric row: the exporter has to read every span the clients write, so its cost
  grows with the write rate by design.

Variants:

- `none`: no exporter running;
- `metrics`: the exporter with `disabled_collectors: [operation_traces]` (no span source);
- `span_metrics`: the default without a trace backend: span metrics read from
  `operation_traces`, nothing sent (SELECT-only role);
- `traces_select_only`: everything on, spans sent to a counting OTLP receiver, SELECT-only
  role (quick windows, a full pass at most per `traces.full_pass_interval`);
- `traces_privileged`: the same with the role granted pg_read_all_stats;
- `traces_old`: the exporter of `--baseline` (the reader before the constant-cost one), with
  spans sent, privileged (it made no use of the grant).

Each round runs every variant once, in an order rotated from round to round, so drift of a
machine shared with other work (and the table growing) falls on all of them alike; the ratio
to `none` of the same round is what to compare. An exporter is started and /readyz awaited
before its writers start (its first backlog is not what is measured), then `--warmup` seconds
of writing, then `--seconds` measured by pgbench. Each variant keeps its state directory from
round to round: the first round is its first start, and from the second on it resumes from
its checkpoint, as a restarted exporter does (`median_ratio_to_none_resumed`). Exporter CPU
is its process's user+system time over the measured window (its database backend's CPU is in
the throughput).

    python -m bench.bench_write_throughput --workload metrics --spans 1000000 --rounds 4
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bench_trace_cost import (  # noqa: E402
    EXPORTER_ROLE,
    SPANS_PER_SECOND,
    database,
    live_spans,
)
from bench.bench_traces import export_tree, receiver_main  # noqa: E402
from bench.common import (  # noqa: E402
    RESULTS_DIR,
    ExporterProcess,
    add_common_args,
    machine_info,
    server_from_args,
    write_result,
)

SPANS_SCRIPT = """\
SELECT pggit.start_performance_trace(NULL, NULL, NULL, 'commit', 'bench.write', NULL, 'bench', \
'bench-' || :client_id, NULL) AS span \\gset
SELECT pggit.end_performance_trace(:span);
SELECT pggit.record_performance_metric('commit', 1 + (random() * 20000)::bigint, \
'bench.write', NULL, 'bench', 'bench-' || :client_id);
"""
"""pgbench's prepared mode binds `:span` as a parameter, so the text needs no quoting."""
METRICS_SCRIPT = """\
SELECT pggit.record_performance_metric('commit', 1 + (random() * 20000)::bigint, \
'bench.write', NULL, 'bench', 'bench-' || :client_id);
"""
SCRIPTS = {"spans": SPANS_SCRIPT, "metrics": METRICS_SCRIPT}
VARIANTS = ("none", "metrics", "span_metrics", "traces_select_only", "traces_privileged",
            "traces_old")
TPS = re.compile(r"^tps = ([0-9.]+)", re.MULTILINE)


def pgbench(bin_dir: Path, dsn_parts: dict[str, str], script: Path, clients: int,
            seconds: float) -> float:
    """Transactions (script runs) per second over `seconds`, as pgbench reports them."""
    out = subprocess.run(
        [str(bin_dir / "pgbench"), "-n", "-M", "prepared", "-c", str(clients),
         "-j", str(min(clients, 2)), "-T", str(max(int(seconds), 1)), "-f", str(script),
         "-h", dsn_parts["host"], "-p", dsn_parts["port"], "-U", dsn_parts["user"],
         dsn_parts["dbname"]],
        capture_output=True, text=True, check=False)
    found = TPS.findall(out.stdout)
    if out.returncode != 0 or not found:
        raise RuntimeError(f"pgbench failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
    return float(found[-1])


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far (from /proc, in clock ticks)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def exporter_for(variant: str, server: Any, dbname: str, workdir: Path,
                 port: int, old_tree: Path) -> ExporterProcess | None:
    if variant == "none":
        return None
    db: dict[str, Any] = {"name": "main", "dsn": server.exporter_dsn(dbname),
                          "password_env": "PGGIT_BENCH_EXPORTER_PASSWORD"}
    overrides: dict[str, Any] = {"databases": [db]}
    if variant == "metrics":
        db["disabled_collectors"] = ["operation_traces"]
    elif variant != "span_metrics":
        overrides["traces"] = {"endpoint": f"http://127.0.0.1:{port}", "protocol": "grpc",
                               "insecure": True}
    tree = old_tree if variant == "traces_old" else None
    return ExporterProcess(server.exporter_dsn(dbname), workdir, tree, resume=True, **overrides)


def one(variant: str, server: Any, dbname: str, admin: psycopg.Connection, state: Path,
        port: int, parts: dict[str, str], script: Path, args: argparse.Namespace,
        old_tree: Path) -> dict[str, Any]:
    grant = sql.SQL("{} pg_read_all_stats {} {}")
    role = sql.Identifier(EXPORTER_ROLE)
    if variant in ("traces_privileged", "traces_old"):
        admin.execute(grant.format(sql.SQL("GRANT"), sql.SQL("TO"), role))
    exporter = exporter_for(variant, server, dbname, state / variant, port, old_tree)
    try:
        if exporter is not None:
            exporter.wait_ready(timeout=300)
        pgbench(server.bin_dir, parts, script, args.clients, args.warmup)
        cpu0 = cpu_seconds(exporter.proc.pid) if exporter else 0.0
        started = time.perf_counter()
        tps = pgbench(server.bin_dir, parts, script, args.clients, args.seconds)
        wall = time.perf_counter() - started
        cpu = (cpu_seconds(exporter.proc.pid) - cpu0) / wall if exporter else 0.0
        return {"transactions_per_second": round(tps, 1), "exporter_cpu_cores": round(cpu, 3)}
    finally:
        if exporter is not None:
            exporter.stop()
        admin.execute(grant.format(sql.SQL("REVOKE"), sql.SQL("FROM"), role))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spans", type=int, default=100_000,
                        help="spans already in operation_traces before the rounds")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--workload", choices=sorted(SCRIPTS), default="metrics")
    parser.add_argument("--baseline", default="2969b66",
                        help="git revision whose exporter is the `traces_old` variant")
    add_common_args(parser)
    args = parser.parse_args()
    if not args.out:
        args.out = str(RESULTS_DIR / "write_throughput.json")
    ctx = mp.get_context("spawn")
    port_out, count = ctx.Queue(), ctx.Value("q", 0)
    receiver = ctx.Process(target=receiver_main, args=(port_out, count), daemon=True)
    receiver.start()
    port = port_out.get()
    state = Path(tempfile.mkdtemp(prefix="bench-write-"))
    script = state / "pggit_write.sql"
    script.write_text(SCRIPTS[args.workload], encoding="utf-8")
    old_tree = export_tree(args.baseline)
    stop_live = threading.Event()
    rounds: list[dict[str, Any]] = []
    try:
        with server_from_args(args) as server:
            dbname = database(server, args.spans)
            info = psycopg.conninfo.conninfo_to_dict(server.superuser_dsn(dbname))
            parts = {k: str(info[k]) for k in ("host", "port", "user", "dbname")}
            if args.workload == "metrics":
                threading.Thread(target=live_spans, args=(server.superuser_dsn(dbname),
                                                          stop_live), daemon=True).start()
            with psycopg.connect(server.superuser_dsn(dbname), autocommit=True) as admin:
                for r in range(args.rounds):
                    order = VARIANTS[r % len(VARIANTS):] + VARIANTS[:r % len(VARIANTS)]
                    ran = {v: one(v, server, dbname, admin, state, port, parts, script, args,
                                  old_tree) for v in order}
                    row = {v: ran[v] for v in VARIANTS}
                    row["order"] = list(order)
                    base = row["none"]["transactions_per_second"]
                    for v in VARIANTS:
                        row[v]["ratio_to_none"] = round(
                            row[v]["transactions_per_second"] / base, 3)
                    rounds.append(row)
                    print(f"round {r + 1}:", row, flush=True)
                stop_live.set()
                spans_now = admin.execute(
                    "SELECT count(*) FROM pggit.operation_traces").fetchone()[0]
            result: dict[str, Any] = {
                "spans_before": args.spans, "spans_after": spans_now, "clients": args.clients,
                "seconds_per_variant": args.seconds, "workload": args.workload,
                "live_spans_per_second": SPANS_PER_SECOND if args.workload == "metrics" else 0,
                "baseline": args.baseline, "script": SCRIPTS[args.workload], "rounds": rounds,
                "median_ratio_to_none": {
                    v: statistics.median(r[v]["ratio_to_none"] for r in rounds)
                    for v in VARIANTS},
                # From the second round on every exporter resumes from its own checkpoint:
                # the steady state. The first round is each variant's first start.
                "median_ratio_to_none_resumed": {
                    v: statistics.median(r[v]["ratio_to_none"] for r in rounds[1:])
                    for v in VARIANTS} if len(rounds) > 1 else None,
                "median_exporter_cpu_cores_resumed": {
                    v: statistics.median(r[v]["exporter_cpu_cores"] for r in rounds[1:])
                    for v in VARIANTS} if len(rounds) > 1 else None,
                "spans_received_by_otlp": count.value,
                "machine": machine_info(server)}
    finally:
        stop_live.set()
        receiver.terminate()
        shutil.rmtree(state, ignore_errors=True)
        shutil.rmtree(old_tree, ignore_errors=True)
    write_result(args, "write_throughput", result)


if __name__ == "__main__":
    main()
