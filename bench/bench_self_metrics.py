"""Cost of rendering the exporter's own metrics from state at scrape time.

The self-metrics used to be prometheus_client Counter/Gauge/Histogram objects set as polls
happened; they are now built at each render from every database's `DatabaseHealth`
(`exporter.expose.self_metrics`). Both are rendered here with `generate_latest`, side by side
in one run, for the same series (the objects also write `_created` series): `databases`
databases x 13 collectors x 8 incremental tables, a few error stages and overflowed labels.

- `from_state`: the custom collector (this version).
- `global_objects`: the same series set on prometheus_client's own metric objects (before).

The exposition renders at most once per publish (registry.py caches the page), so this cost is
paid per poll that changed something, not per scrape.
"""

from __future__ import annotations

import argparse
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from bench import common
from bench.bench_render import side_by_side
from exporter.catalog import metric
from exporter.counts import INVALID, OVERFLOW, Counts
from exporter.expose.self_metrics import POLL_BUCKETS, SelfMetrics

COLLECTORS = [f"collector_{i}" for i in range(13)]
TABLES = [f"table_{i}" for i in range(8)]
STAGES = ("connect", "read", "checkpoint")


def from_state(databases: int) -> CollectorRegistry:
    registry = CollectorRegistry()
    sm = SelfMetrics(registry)
    for d in range(databases):
        health = sm.database(f"db{d}")
        health.contact(True)
        health.collectors(dict.fromkeys(COLLECTORS, True))
        for stage in STAGES:
            health.error(stage)
        health.polled(rows=dict.fromkeys(TABLES, 100), pending=dict.fromkeys(TABLES, 1),
                      lag=dict.fromkeys(TABLES, 0.5), took=0.01, at=1.0,
                      counts=Counts({OVERFLOW: {("branch",): 3.0},
                                     INVALID: {(t, "null"): 1.0 for t in TABLES}}))
    return registry


def global_objects(databases: int) -> CollectorRegistry:
    registry = CollectorRegistry()

    def make(name: str) -> Any:
        spec = metric(name)
        kind = {"counter": Counter, "gauge": Gauge}.get(spec.kind)
        if kind is None:
            return Histogram(spec.name, spec.help, spec.all_labels, buckets=POLL_BUCKETS,
                             registry=registry)
        return kind(spec.family, spec.help, spec.all_labels, registry=registry)

    m = {name: make(name) for name in (
        "pggit_up", "pggit_exporter_collector_enabled", "pggit_exporter_collector_failing",
        "pggit_exporter_rows_read_total", "pggit_exporter_pending_gaps",
        "pggit_exporter_lag_seconds", "pggit_exporter_errors_total",
        "pggit_exporter_label_overflow_total", "pggit_exporter_invalid_rows_total",
        "pggit_exporter_poll_duration_seconds",
        "pggit_exporter_last_poll_success_timestamp_seconds")}
    for d in range(databases):
        db = f"db{d}"
        m["pggit_up"].labels(db).set(1)
        for c in COLLECTORS:
            m["pggit_exporter_collector_enabled"].labels(db, c).set(1)
            m["pggit_exporter_collector_failing"].labels(db, c).set(0)
        for stage in STAGES:
            m["pggit_exporter_errors_total"].labels(db, stage).inc()
        for t in TABLES:
            m["pggit_exporter_rows_read_total"].labels(db, t).inc(100)
            m["pggit_exporter_pending_gaps"].labels(db, t).set(1)
            m["pggit_exporter_lag_seconds"].labels(db, t).set(0.5)
            m["pggit_exporter_invalid_rows_total"].labels(db, t, "null").inc()
        m["pggit_exporter_label_overflow_total"].labels(db, "branch").inc(3)
        m["pggit_exporter_poll_duration_seconds"].labels(db).observe(0.01)
        m["pggit_exporter_last_poll_success_timestamp_seconds"].labels(db).set(1.0)
    return registry


def samples(registry: CollectorRegistry) -> set[str]:
    """The series both render; prometheus_client's own objects add `_created` series, which
    the collector does not (the pgGit-derived counters never had them either)."""
    return {line for line in generate_latest(registry).decode().splitlines()
            if not line.startswith("#") and "_created" not in line}


def run(repeat: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for databases in (1, 10, 50):
        ours, before = from_state(databases), global_objects(databases)
        assert samples(ours) == samples(before)
        timings = side_by_side({"from_state": lambda r=ours: generate_latest(r),
                                "global_objects": lambda r=before: generate_latest(r)}, repeat)
        timings["ratio_median"] = round(timings["from_state"]["median_ms"]
                                        / timings["global_objects"]["median_ms"], 2)
        out[f"{databases}_databases"] = timings
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=50)
    parser.add_argument("--out", help="also write the result as JSON here")
    args = parser.parse_args()
    common.write_result(args, "self_metrics",
                        {"machine": common.machine_info(), "self_metrics": run(args.repeat)})


if __name__ == "__main__":
    main()
