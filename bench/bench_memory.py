"""Resident memory of the exporter process, by table size: after backfill and after polling.

For each size, `python -m exporter run` starts with no state against the table, backfills,
and `/readyz` turns 200; its VmRSS and VmHWM (peak) are read from /proc. Then a writer inserts
rows and Prometheus-like scrapes run every `--scrape-every` seconds for `--steady` seconds of
polling, and memory is read again. If memory does not depend on the table size, the numbers
for 1M and 10M rows are about the same. Time to ready is also the end-to-end backfill time of
the real process (interpreter start, imports, connection, backfill, first checkpoint).

    python -m bench.bench_memory --rows 1000000 10000000
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from bench import common

TARGET_MB = 100.0


def run(server: common.BenchServer, rows: int, steady: float, scrape_every: float,
        rate: float, tmp: Path = Path("/tmp/pggit-bench-memory")) -> dict[str, Any]:
    gen = common.database_for(server, rows)
    with common.ExporterProcess(server.exporter_dsn(gen.dbname), tmp / str(rows)) as proc:
        ready = proc.wait_ready()
        after_backfill = proc.memory_kb()
        scrapes = 0
        with common.LiveWriter(server.superuser_dsn(gen.dbname), rate):
            end = time.monotonic() + steady
            while time.monotonic() < end:
                status, _ = proc.get("/metrics")
                scrapes += status == 200
                time.sleep(scrape_every)
        after_steady = proc.memory_kb()
    mb = {k: round(v / 1024, 1) for k, v in after_steady.items()}
    return {
        "rows": rows, "seconds_to_ready": round(ready, 2),
        "after_backfill_mb": {k: round(v / 1024, 1) for k, v in after_backfill.items()},
        "after_steady_mb": mb, "steady_seconds": steady, "scrapes": scrapes,
        "target_mb": TARGET_MB, "meets_target": mb["VmHWM"] < TARGET_MB,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--steady", type=float, default=30.0, help="seconds of polling")
    parser.add_argument("--scrape-every", type=float, default=5.0)
    parser.add_argument("--rate", type=float, default=100.0, help="live inserts per second")
    common.add_common_args(parser)
    args = parser.parse_args()
    with common.server_from_args(args) as server:
        sizes = [run(server, n, args.steady, args.scrape_every, args.rate) for n in args.rows]
        result = {"machine": common.machine_info(server), "memory": sizes}
    common.write_result(args, "memory", result)


if __name__ == "__main__":
    main()
