"""Database time per poll at steady state, with live inserts, at several table sizes.

For each size the exporter's poller starts at the end of the table (`start_position: now`,
which leaves it where a finished backfill would), a writer inserts rows continuously
(default 100 rows/s in transactions of 10), and the poller polls once a second. Per poll:

- `db_ms`: server-side time of every statement the exporter's role ran in that poll
  (execution + planning, from pg_stat_statements), i.e. what the poll costs the database;
- `wall_ms`: the poll as the exporter sees it (client, network and checkpoint write included).

Without pg_stat_statements (pgserver's bundled PostgreSQL has no contrib) only `wall_ms` is
reported, an upper bound of the database time. Gauge refreshes (every 15 s) and rediscovery
(every 60 s) fall inside the window, as in production; their polls show as the maximum.

    python -m bench.bench_poll --rows 100000 1000000 10000000 --polls 20
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from bench import common
from bench.bench_backfill import make_poller

TARGET_MS = 1.0


def run(server: common.BenchServer, rows: int, polls: int, rate: float,
        tmp: Path = Path("/tmp/pggit-bench-poll")) -> dict[str, Any]:
    gen = common.database_for(server, rows)
    state = common.fresh_dir(tmp / str(rows))
    cfg = common.exporter_config(server.exporter_dsn(gen.dbname), state,
                                 start_position="now", poll_interval="1s")
    poller, database = make_poller(cfg)
    times = common.StatementTimes(server, gen.dbname) if server.has_pgss else None
    db_ms: list[float] = []
    wall_ms: list[float] = []
    try:
        with common.LiveWriter(server.superuser_dsn(gen.dbname), rate) as writer:
            for _ in range(3):  # discovery, first gauges, first rows
                poller.poll_once()
                time.sleep(cfg.poll_interval)
            before_rows = writer.rows
            if times:
                times.reset()
            next_at = time.monotonic()
            for _ in range(polls):
                next_at += cfg.poll_interval
                start_db = times.total_ms() if times else 0.0
                t = time.perf_counter()
                poller.poll_once()
                wall_ms.append((time.perf_counter() - t) * 1000)
                if times:
                    db_ms.append(times.total_ms() - start_db)
                time.sleep(max(0.0, next_at - time.monotonic()))
            inserted = writer.rows - before_rows
        out: dict[str, Any] = {
            "rows": rows, "polls": polls, "live_insert_rows_per_second": rate,
            "rows_inserted_during_window": inserted,
            "wall_ms": _round(common.summarize(wall_ms)),
            "pending_gaps_at_end": poller.cursors["performance_metrics"].pending_count(),
        }
        if times:
            out["db_ms"] = _round(common.summarize(db_ms))
            out["statements"] = times.by_statement(10)
            out["method"] = "pg_stat_statements (total_exec_time + total_plan_time)"
        else:
            out["method"] = "client-side wall time of poll_once (upper bound)"
        return out
    finally:
        if times:
            times.close()
        database.close()


def _round(d: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 3) for k, v in d.items()}


def flatness(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Median DB (or wall) time per poll at each size and the ratio largest/smallest."""
    key = "db_ms" if "db_ms" in results[0] else "wall_ms"
    medians = {str(r["rows"]): r[key]["median"] for r in results}
    first, last = results[0][key]["median"], results[-1][key]["median"]
    return {"metric": key, "median_by_rows": medians,
            "ratio_largest_to_smallest": round(last / first, 2) if first else None,
            "target_ms": TARGET_MS,
            "meets_target": all(r[key]["median"] < TARGET_MS for r in results)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000, 10_000_000])
    parser.add_argument("--polls", type=int, default=20)
    parser.add_argument("--rate", type=float, default=100.0, help="live inserts per second")
    common.add_common_args(parser)
    args = parser.parse_args()
    with common.server_from_args(args) as server:
        sizes = [run(server, n, args.polls, args.rate) for n in args.rows]
        result = {"machine": common.machine_info(server), "poll": sizes,
                  "summary": flatness(sizes)}
    common.write_result(args, "poll", result)


if __name__ == "__main__":
    main()
