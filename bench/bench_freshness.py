"""Freshness: from an insert's commit to the row being counted on /metrics.

The exporter runs as a process with `poll_interval: 1s`. One row at a time is inserted with a
dedicated operation type; a client scrapes /metrics every `--scrape-every` seconds and notes
when the series' `_count` includes the row. Inserts are spaced by a random pause so that they
land at every phase of the poll cycle; the target is two poll intervals.

    python -m bench.bench_freshness --inserts 40
"""

from __future__ import annotations

import argparse
import random
import re
import time
from pathlib import Path
from typing import Any

import psycopg

from bench import common

OPERATION = "bench_freshness"
POLL_INTERVAL = 1.0
_COUNT = re.compile(
    rb'^pggit_operation_duration_seconds_count\{[^}]*operation_type="'
    + OPERATION.encode() + rb'"[^}]*\} ([0-9.e+]+)$', re.MULTILINE)

_INSERT = """
INSERT INTO pggit.performance_metrics
    (operation_type, duration_microseconds, duration_ms, start_time, end_time, user_name,
     recorded_at, period_start)
VALUES (%(op)s, 1500, 1.5, localtimestamp - interval '1500 microseconds', localtimestamp,
        'bench', localtimestamp, date_trunc('hour', localtimestamp))
"""


def visible_count(body: bytes) -> int:
    return int(sum(float(m) for m in _COUNT.findall(body)))


def run(server: common.BenchServer, rows: int, inserts: int, scrape_every: float,
        tmp: Path = Path("/tmp/pggit-bench-freshness"), seed: int = 7) -> dict[str, Any]:
    gen = common.database_for(server, rows)
    rng = random.Random(seed)
    latencies: list[float] = []
    scrape_ms: list[float] = []
    with common.ExporterProcess(server.exporter_dsn(gen.dbname), tmp,
                                poll_interval=f"{POLL_INTERVAL}s") as proc, \
            psycopg.connect(server.superuser_dsn(gen.dbname), autocommit=True) as conn:
        proc.wait_ready()
        seen = visible_count(proc.get("/metrics")[1])
        for _ in range(inserts):
            time.sleep(rng.uniform(0.1, 1.1))
            conn.execute(_INSERT, {"op": OPERATION})
            committed = time.perf_counter()
            while True:
                t = time.perf_counter()
                body = proc.get("/metrics")[1]
                scrape_ms.append((time.perf_counter() - t) * 1000)
                if visible_count(body) > seen:
                    latencies.append(time.perf_counter() - committed)
                    seen = visible_count(body)
                    break
                if time.perf_counter() - committed > 30:
                    raise TimeoutError("inserted row not visible within 30 s")
                time.sleep(scrape_every)
    stats = {k: round(v, 3) for k, v in common.summarize(latencies).items()}
    return {
        "rows": rows, "poll_interval_seconds": POLL_INTERVAL, "inserts": inserts,
        "scrape_every_seconds": scrape_every, "latency_seconds": stats,
        "scrape_ms": {k: round(v, 2) for k, v in common.summarize(scrape_ms).items()},
        "target_seconds": 2 * POLL_INTERVAL,
        "within_target_fraction": round(
            sum(1 for v in latencies if v <= 2 * POLL_INTERVAL) / len(latencies), 3),
        "meets_target": stats["max"] <= 2 * POLL_INTERVAL,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000,
                        help="rows already in the table (reuses the generated database)")
    parser.add_argument("--inserts", type=int, default=40)
    parser.add_argument("--scrape-every", type=float, default=0.02)
    common.add_common_args(parser)
    args = parser.parse_args()
    with common.server_from_args(args) as server:
        result = {"machine": common.machine_info(server),
                  "freshness": run(server, args.rows, args.inserts, args.scrape_every)}
    common.write_result(args, "freshness", result)


if __name__ == "__main__":
    main()
