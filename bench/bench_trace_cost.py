"""Benchmark: database time per trace poll at steady state, old reader beside the new one.

For each table size, `operation_traces` holds N ended spans and a writer adds 20 spans/s
through pgGit's own functions (start in one transaction, end in another). Each variant runs
a forwarder in its own process, pinned to one core, sending to a counting OTLP receiver;
the state starts where a finished backlog leaves it (a version-1 state whose base snapshot
is "now", which the old code reads as is and the new code migrates), so what is measured is
steady state. After a warm-up, every poll's database time is the delta of
pg_stat_statements (execution + planning) for the exporter's role, read by the superuser
after each poll; exporter CPU is the process's CPU time over the window.

Variants, alternated in one run on the same tables:
- `old`: the forwarder of `--baseline` (git revision, exported to a temporary directory);
- `new_select_only`: this tree, SELECT-only role (quick windows, a full pass per minute);
- `new_privileged`: this tree, the same role granted pg_read_all_stats.

    python -m bench.bench_trace_cost --sizes 100000 1000000 --seconds 60
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bench_traces import (  # noqa: E402
    build_forwarder,
    export_tree,
    fill,
    pin,
    receiver_main,
)

SPANS_PER_SECOND = 20
EXPORTER_ROLE = "bench_exporter"
PASSWORD_ENV = "PGGIT_BENCH_EXPORTER_PASSWORD"
"""As in bench.common, which is not imported at the top: the variant processes must import
`exporter` from the tree they measure, not from this one."""


def database(server: Any, n: int) -> str:
    """A pgGit database with n ended spans, readable by the SELECT-only exporter role."""
    from bench.common import EXPORTER_PASSWORD
    from exporter.demo.schema import install_schema

    dbname = f"trace_cost_{n}"
    try:
        return _database(server, n, dbname, EXPORTER_PASSWORD, install_schema)
    finally:
        with psycopg.connect(server.superuser_dsn(dbname), autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")


def _database(server: Any, n: int, dbname: str, password: str, install_schema: Any) -> str:
    with psycopg.connect(server.superuser_dsn("postgres"), autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s",
                            (EXPORTER_ROLE,)).fetchone():
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                sql.Identifier(EXPORTER_ROLE), sql.Literal(password)))
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                              (dbname,)).fetchone()
    if exists:
        with psycopg.connect(server.superuser_dsn(dbname)) as conn:
            have = conn.execute("SELECT count(*) FROM pggit.operation_traces").fetchone()[0]
        if have >= n:
            return dbname
        with psycopg.connect(server.superuser_dsn("postgres"), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(dbname)))
    server.pg.create_database(dbname)
    dsn = server.superuser_dsn(dbname)
    install_schema(dsn)
    fill(dsn, n)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("GRANT USAGE ON SCHEMA pggit TO {r}; "
                             "GRANT SELECT ON ALL TABLES IN SCHEMA pggit TO {r}").format(
            r=sql.Identifier(EXPORTER_ROLE)))
    return dbname


def live_spans(dsn: str, stop: threading.Event) -> None:
    """20 spans/s: each started in one transaction and ended in the next, as pgGit does."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        while not stop.wait(0.5):
            for _ in range(SPANS_PER_SECOND // 2):
                span = str(uuid.uuid4())
                conn.execute("SELECT pggit.start_performance_trace(NULL, %s, NULL, 'commit', "
                             "'live', NULL, 'bench', NULL, NULL)", (span,))
                conn.execute("SELECT pggit.end_performance_trace(%s)", (span,))


def v1_state(dsn: str, state_dir: Path) -> None:
    """A version-1 state that has handled everything committed now (a finished backlog)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        snap = conn.execute("SELECT pg_current_snapshot()::text").fetchone()[0]
    feed = {"base": snap, "recent": {}, "pass_start": snap, "pass_base": snap,
            "cursor": None, "in_pass": False}
    (state_dir / "bench.traces.json").write_text(json.dumps({
        "version": 1, "spans": feed, "merges": feed, "running": {}, "timed_out": {},
        "unsent": [], "late_ends": 0}))


def variant_main(tree: str, dsn: str, admin_dsn: str, port: int, state_dir: str,
                 warmup: float, seconds: float, out: Any) -> None:
    """One forwarder (from `tree`) at steady state; per-poll database time from pgss."""
    sys.path.insert(0, tree)
    pin(0)
    from exporter.config import TracesConfig

    assert Path(sys.modules["exporter"].__file__ or "").is_relative_to(tree)
    cfg = TracesConfig(endpoint=f"http://127.0.0.1:{port}", protocol="grpc", insecure=True)
    admin = psycopg.connect(admin_dsn, autocommit=True)
    ids = admin.execute("SELECT (SELECT oid FROM pg_roles WHERE rolname = %s), "
                        "(SELECT oid FROM pg_database WHERE datname = current_database())",
                        (EXPORTER_ROLE,)).fetchone()

    def db_ms() -> float:
        return float(admin.execute(
            "SELECT coalesce(sum(total_exec_time + total_plan_time), 0) FROM "
            "pg_stat_statements WHERE userid = %s AND dbid = %s", ids).fetchone()[0])

    forwarder = build_forwarder(tree, "bench", dsn, cfg, Path(state_dir),
                                password_env=PASSWORD_ENV)
    target = forwarder.poll_target  # what the poll thread calls
    per_poll: list[float] = []
    measuring = threading.Event()
    poll = target.poll_once
    lock = threading.Lock()

    def counted() -> int:
        with lock:
            before = db_ms()
            result = poll()
            if measuring.is_set():
                per_poll.append(db_ms() - before)
            return result

    target.poll_once = counted
    forwarder.start()
    time.sleep(warmup)
    with lock:
        measuring.set()
        total0, cpu0, t0 = db_ms(), time.process_time(), time.perf_counter()
    time.sleep(seconds)
    with lock:
        measuring.clear()
        total1, cpu1, t1 = db_ms(), time.process_time(), time.perf_counter()
    forwarder.stop(timeout=5)
    wall = t1 - t0
    per_poll.sort()
    out.put({
        "polls": len(per_poll),
        "db_ms_per_poll_median": round(statistics.median(per_poll), 3) if per_poll else None,
        "db_ms_per_poll_p99": round(per_poll[int(len(per_poll) * 0.99)], 3) if per_poll else None,
        "db_ms_per_poll_max": round(per_poll[-1], 3) if per_poll else None,
        "db_seconds_per_minute": round((total1 - total0) / 1000 / wall * 60, 3),
        "exporter_cpu_seconds_per_minute": round((cpu1 - cpu0) / wall * 60, 3),
        "polls_per_minute": round(len(per_poll) / wall * 60, 1),
    })


def run_variant(ctx: Any, tree: str, server: Any, dbname: str, port: int,
                warmup: float, seconds: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as state:
        v1_state(server.superuser_dsn(dbname), Path(state))
        out = ctx.Queue()
        proc = ctx.Process(target=variant_main, args=(
            tree, server.exporter_dsn(dbname), server.superuser_dsn(dbname), port, state,
            warmup, seconds, out))
        proc.start()
        result = out.get()
        proc.join()
        return result


def main() -> None:
    from bench.common import (
        RESULTS_DIR,
        add_common_args,
        machine_info,
        server_from_args,
        write_result,
    )

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--warmup", type=float, default=10.0)
    parser.add_argument("--baseline", default="2969b66")
    add_common_args(parser)
    args = parser.parse_args()
    if not args.out:
        args.out = str(RESULTS_DIR / "trace_cost.json")
    ctx = mp.get_context("spawn")
    old_tree = str(export_tree(args.baseline))
    port_out, count = ctx.Queue(), ctx.Value("q", 0)
    receiver = ctx.Process(target=receiver_main, args=(port_out, count), daemon=True)
    receiver.start()
    port = port_out.get()
    results: dict[str, Any] = {"spans_per_second_arriving": SPANS_PER_SECOND,
                               "baseline": args.baseline, "sizes": {}}
    with server_from_args(args) as server:
        if not server.has_pgss:
            raise SystemExit("pg_stat_statements is not available for this server")
        results["machine"] = machine_info(server)
        for n in args.sizes:
            started = time.perf_counter()
            dbname = database(server, n)
            print(f"{n} spans ready in {time.perf_counter() - started:.0f}s", flush=True)
            stop = threading.Event()
            writer = threading.Thread(target=live_spans,
                                      args=(server.superuser_dsn(dbname), stop), daemon=True)
            writer.start()
            row: dict[str, Any] = {}
            grant = sql.SQL("{} pg_read_all_stats {} {}")
            with psycopg.connect(server.superuser_dsn(dbname), autocommit=True) as admin:
                for name, tree, privileged in (("old", old_tree, False),
                                               ("new_select_only", str(ROOT), False),
                                               ("new_privileged", str(ROOT), True)):
                    if privileged:
                        admin.execute(grant.format(sql.SQL("GRANT"), sql.SQL("TO"),
                                                   sql.Identifier(EXPORTER_ROLE)))
                    try:
                        row[name] = run_variant(ctx, tree, server, dbname, port, args.warmup,
                                                args.seconds)
                    finally:
                        admin.execute(grant.format(sql.SQL("REVOKE"), sql.SQL("FROM"),
                                                   sql.Identifier(EXPORTER_ROLE)))
                    print(n, name, row[name], flush=True)
            stop.set()
            writer.join()
            results["sizes"][str(n)] = row
    receiver.terminate()
    write_result(args, "trace_cost", results)


if __name__ == "__main__":
    main()
