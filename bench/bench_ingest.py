"""Rows per second into the duration histograms, ours and prometheus_client's, side by side.

Five loops over the same rows of `performance_metrics`, in one run on one machine:

- `mapping`: `PerformanceMetrics.observe_rows` over pages already in memory: label capping,
  branch names, bucket index, histogram cell, error/CPU/rows counters and the baseline check.
  This is the exporter's hot path without the database.
- `end_to_end`: `read_table` from the table through the mapping into aggregates, in one
  REPEATABLE READ snapshot, exactly as a poll reads a backlog (binary pages).
- `psycopg_fetch` and `psycopg_fetch_binary`: the same keyset-paged SELECT with nothing done
  per row, in text and in binary (what `read_table` uses): the ceiling of any reader.
- `prometheus_client` and `prometheus_client_cached`: `Histogram.labels(op, branch).observe()`
  over the same in-memory rows, with the same buckets; the second keeps the label children in
  a dict, as a careful hand-written exporter would.

    python -m bench.bench_ingest --rows 1000000 [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import time
from pathlib import Path
from typing import Any

import psycopg
from prometheus_client import CollectorRegistry, Histogram
from psycopg import IsolationLevel, sql

from bench import common
from exporter.aggregates import Aggregates
from exporter.discover import discover
from exporter.labels import LabelCap
from exporter.map.base import Context
from exporter.map.performance_baselines import PerformanceBaselines
from exporter.map.performance_metrics import HIST, PerformanceMetrics
from exporter.read.branches import BranchNames
from exporter.read.cursor import IdCursor
from exporter.read.incremental import read_table
from exporter.read.performance_baselines import refresh_history
from exporter.read.snapshot import take_snapshot

BATCH = 50_000
"""The exporter's default batch_size."""


class Setup:
    """The mapping and its context, built the way the poller builds them."""

    def __init__(self, conn: psycopg.Connection, cfg: Any):
        self.cfg = cfg
        db_cfg = cfg.databases[0]
        self.table = sql.Identifier("pggit", "performance_metrics")
        self.baselines = PerformanceBaselines()
        refresh_history(conn, sql.Identifier("pggit", "performance_baselines"),
                        self.baselines.history)
        self.mapping = PerformanceMetrics(cfg.buckets, self.baselines.history)
        self.branches = BranchNames()
        self.branches.configure(discover(conn, db_cfg))
        self.branch_table = sql.Identifier("pggit", "branches")
        self.conn = conn
        self.bounds = {HIST: cfg.buckets}

    def context(self) -> Context:
        cap = LabelCap(self.cfg.max_label_values, self.cfg.max_label_length)
        return Context("main", Aggregates(self.bounds), cap,
                       lambda b: self.branches.lookup(self.conn, self.branch_table, b))


def read_rows(setup: Setup, conn: psycopg.Connection, limit: int,
              observe: Any) -> tuple[int, float]:
    """Run `read_table` over the first `limit` rows; returns (rows, seconds)."""
    cursor = IdCursor()
    spec = setup.mapping.incremental
    assert spec is not None
    conn.rollback()
    conn.isolation_level = IsolationLevel.REPEATABLE_READ
    conn.read_only = True
    try:
        t = time.perf_counter()
        snap = take_snapshot(conn, time.time())
        result = read_table(conn, spec, setup.table, cursor, snap, BATCH, limit, 2.0, observe)
        took = time.perf_counter() - t
    finally:
        conn.rollback()
    return result.rows, took


_FETCH = ("SELECT metric_id, true, operation_type, branch_id, duration_microseconds, "
          "cpu_microseconds, rows_affected, error_details IS NOT NULL, "
          "extract(epoch FROM (recorded_at)::timestamptz)::float8 "
          "FROM pggit.performance_metrics WHERE metric_id > %s ORDER BY metric_id LIMIT %s")
"""The query `read_table` sends for this mapping (see exporter.read.incremental)."""


def bare_fetch(conn: psycopg.Connection, limit: int, binary: bool = False
               ) -> tuple[int, float]:
    """The SELECT read_table issues for this mapping, paged the same way, rows discarded.

    `binary` asks for binary results (psycopg parses numbers without text conversion).
    """
    query = _FETCH
    t = time.perf_counter()
    last, n = 0, 0
    while n < limit:
        rows = conn.execute(query, (last, BATCH), binary=binary).fetchall()
        if not rows:
            break
        last = rows[-1][0]
        n += len(rows)
    took = time.perf_counter() - t
    conn.rollback()
    return n, took


def run(server: common.BenchServer, rows: int, repeat: int = 3, profile: bool = False,
        tmp: str = "/tmp/pggit-bench-ingest") -> dict[str, Any]:
    gen = common.database_for(server, rows)
    dsn = server.exporter_dsn(gen.dbname)
    cfg = common.exporter_config(dsn, common.fresh_dir(Path(tmp)))
    out: dict[str, Any] = {"rows": rows, "buckets": len(cfg.buckets), "batch_size": BATCH,
                           "loops": {}}
    with server.exporter_connect(gen.dbname) as conn:
        setup = Setup(conn, cfg)
        conn.commit()
        pages: list[list[tuple[Any, ...]]] = []
        n, _ = read_rows(setup, conn, rows, pages.append)
        ctx = setup.context()

        def mapping() -> None:
            nonlocal ctx
            ctx = setup.context()
            observe = setup.mapping.observe_rows
            for page in pages:
                observe(ctx, page)

        best, times = common.best_of(mapping, repeat)
        out["label_sets"] = len(ctx.agg.histograms[HIST])
        out["loops"]["mapping"] = _rate(n, best, times)

        def end_to_end() -> float:
            c = setup.context()
            got, took = read_rows(setup, conn, rows,
                                  lambda page: setup.mapping.observe_rows(c, page))
            assert got == n
            return took

        e2e = [end_to_end() for _ in range(max(1, repeat - 1))]
        out["loops"]["end_to_end"] = _rate(n, min(e2e), e2e)

        fetches = [bare_fetch(conn, rows)[1] for _ in range(max(1, repeat - 1))]
        out["loops"]["psycopg_fetch"] = _rate(n, min(fetches), fetches)

        fetches = [bare_fetch(conn, rows, binary=True)[1] for _ in range(max(1, repeat - 1))]
        out["loops"]["psycopg_fetch_binary"] = _rate(n, min(fetches), fetches)

        data = [r for page in pages for r in page]
        names = setup.branches.names
        buckets = tuple(cfg.buckets)

        def client(cached: bool) -> None:
            registry = CollectorRegistry()
            hist = Histogram("pggit_operation_duration_seconds", "Duration.",
                             ["operation_type", "branch"], buckets=buckets, registry=registry)
            children: dict[tuple[str, int | None], Any] = {}
            for row in data:
                op, branch_id, us = row[2], row[3], row[4]
                if cached:
                    child = children.get((op, branch_id))
                    if child is None:
                        child = children[(op, branch_id)] = hist.labels(
                            op, names.get(branch_id, "") if branch_id is not None else "")
                    child.observe(us / 1e6)
                else:
                    hist.labels(op, names.get(branch_id, "") if branch_id is not None
                                else "").observe(us / 1e6)

        best, times = common.best_of(lambda: client(False), repeat)
        out["loops"]["prometheus_client"] = _rate(n, best, times)
        best, times = common.best_of(lambda: client(True), repeat)
        out["loops"]["prometheus_client_cached"] = _rate(n, best, times)

        if profile:
            prof = cProfile.Profile()
            prof.enable()
            mapping()
            prof.disable()
            buf = io.StringIO()
            pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(12)
            out["profile_mapping"] = buf.getvalue()
    out["target_rows_per_second"] = 400_000
    out["meets_target"] = out["loops"]["end_to_end"]["rows_per_second"] >= 400_000
    return out


def _rate(n: int, best: float, times: list[float]) -> dict[str, Any]:
    return {"rows_per_second": round(n / best), "best_seconds": round(best, 4),
            "all_seconds": [round(t, 4) for t in times]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--profile", action="store_true", help="cProfile the mapping loop")
    common.add_common_args(parser)
    args = parser.parse_args()
    with common.server_from_args(args) as server:
        result = {"machine": common.machine_info(server),
                  "ingest": run(server, args.rows, args.repeat, args.profile)}
    common.write_result(args, "ingest", result)


if __name__ == "__main__":
    main()
