"""/metrics render time for 660 label sets (33 operation types x 20 branches), 14 buckets.

Side by side in one run, each round timing every candidate once (the machine is shared, so
its load changes during a run; the medians and minimums compare like with like):

- `ours_cached`: `Exposition.render` when nothing was published since the last scrape: the
  cached bytes (what every scrape between two polls costs);
- `ours_uncached` / `ours_uncached_openmetrics`: `Exposition.render` right after a publish:
  the direct encoder (`exporter.expose.text`) writes the aggregates, prometheus_client adds
  the process and self-metrics (what the first scrape after a poll costs). The encoder keeps
  only line starts between renders, never values, so this is a full render of the numbers;
- `ours_cached_gzip` / `ours_uncached_gzip`: the same with gzip, as Prometheus asks for it
  (the compressed page is cached beside the page);
- `ours_cold` / `ours_cold_openmetrics`: a fresh encoder, as on the first scrape after a
  start, when every line start is built;
- `prometheus_client` / `prometheus_client_openmetrics`: `generate_latest` on a registry
  holding a prometheus_client `Histogram` (and `Counter`s) with the same label sets, bucket
  counts and process collectors, i.e. an exporter that keeps live client objects.

`identical_to_prometheus_client` checks our bytes against prometheus_client's encoders on the
same families (tests/expose_reference.py). Two pages: the duration histogram alone (the figure
the issue compares with, 77 ms), and the histogram with the four per-operation counters the
exporter also serves for those label sets. No database is needed.

    python -m bench.bench_render --repeat 30
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Callable
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.openmetrics import exposition as openmetrics
from prometheus_client.openmetrics.exposition import CONTENT_TYPE_LATEST as OPENMETRICS

from bench import common
from exporter.aggregates import Aggregates
from exporter.catalog import metric
from exporter.expose import families
from exporter.expose.families import Part
from exporter.expose.registry import Exposition
from exporter.expose.text import Encoder
from exporter.map.performance_metrics import CPU, ERRORS, HIST, ROWS, VIOLATIONS
from tests import expose_reference

BOUNDS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
          1.0, 2.5)
"""14 bucket bounds (+Inf comes on top), from the default range."""
OPERATIONS = 33
BRANCHES = 20
COUNTERS = (ERRORS, CPU, ROWS, VIOLATIONS)
TARGET_MS = 20.0


def label_sets() -> list[tuple[str, str]]:
    return [(f"operation_{o:02d}", f"feature/branch-{b:02d}")
            for o in range(OPERATIONS) for b in range(BRANCHES)]


def aggregates(with_counters: bool, seed: int = 1) -> Aggregates:
    rng = random.Random(seed)
    agg = Aggregates({HIST: BOUNDS})
    for labels in label_sets():
        counts = [rng.randrange(0, 100_000) for _ in range(len(BOUNDS) + 1)]
        agg.add_buckets(HIST, labels, counts, rng.uniform(1, 1e5))
        if with_counters:
            for name in COUNTERS:
                agg.inc(name, labels, rng.uniform(1, 1e6))
    return agg


def client_registry(agg: Aggregates) -> CollectorRegistry:
    """The same series as live prometheus_client objects (with the `database` label)."""
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    spec = metric(HIST)
    hist = Histogram(spec.name, spec.help, spec.all_labels, buckets=BOUNDS, registry=registry)
    for labels, cell in agg.histograms[HIST].items():
        child = hist.labels("main", *labels)
        # Set the internal counts directly: observing millions of values would only slow
        # the setup down, and the encoder reads nothing else.
        for i, count in enumerate(cell[:-1]):
            child._buckets[i].set(count)
        child._sum.set(cell[-1])
    for name in COUNTERS:
        if name not in agg.counters:
            continue
        cspec = metric(name)
        counter = Counter(cspec.family, cspec.help, cspec.all_labels, registry=registry)
        for labels, value in agg.counters[name].items():
            counter.labels("main", *labels).inc(value)
    return registry


def parts(agg: Aggregates) -> list[Part]:
    counters = tuple(n for n in COUNTERS if n in agg.counters)
    return list(families.from_aggregates(agg, ("main",), counters))


def exposition(agg: Aggregates) -> Exposition:
    exp = Exposition()
    exp.add_source(lambda: parts(agg))
    return exp


def side_by_side(candidates: dict[str, Callable[[], Any]],
                 repeat: int) -> dict[str, dict[str, float]]:
    """Each round times every candidate once, so all of them see the same machine load."""
    times: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(repeat):
        for name, fn in candidates.items():
            t = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - t) * 1000)
    return {name: {"min_ms": round(min(ms), 3), "median_ms": round(statistics.median(ms), 3),
                   "max_ms": round(max(ms), 3)} for name, ms in times.items()}


def page(with_counters: bool, repeat: int) -> dict[str, Any]:
    agg = aggregates(with_counters)
    exp, cached = exposition(agg), exposition(agg)
    registry = client_registry(agg)
    body, _ = cached.render(None)
    client_body = generate_latest(registry)

    def uncached(accept: str | None = None, compressed: bool = False) -> None:
        exp.changed()
        exp.render(accept, compressed)

    out: dict[str, Any] = {
        "label_sets": len(agg.histograms[HIST]), "buckets": len(BOUNDS),
        "families": 1 + (len(COUNTERS) if with_counters else 0),
        "bytes_ours": len(body), "bytes_prometheus_client": len(client_body),
        "identical_to_prometheus_client": {
            "text": Encoder(False).encode(parts(agg)) == expose_reference.render(
                parts(agg), False),
            "openmetrics": Encoder(True).encode(parts(agg)) == expose_reference.render(
                parts(agg), True)},
    }
    out |= side_by_side({
        "ours_cached": lambda: cached.render(None),
        "ours_uncached": uncached,
        "ours_uncached_openmetrics": lambda: uncached(OPENMETRICS),
        "ours_cached_gzip": lambda: cached.render(None, compressed=True),
        "ours_uncached_gzip": lambda: uncached(compressed=True),
        "ours_cold": lambda: Encoder(False).encode(parts(agg)),
        "ours_cold_openmetrics": lambda: Encoder(True).encode(parts(agg)),
        "prometheus_client": lambda: generate_latest(registry),
        "prometheus_client_openmetrics": lambda: openmetrics.generate_latest(registry),
    }, repeat)
    out["meets_target"] = max(out["ours_uncached"]["median_ms"],
                              out["ours_uncached_openmetrics"]["median_ms"]) <= TARGET_MS
    return out


def run(repeat: int) -> dict[str, Any]:
    return {"target_ms": TARGET_MS,
            "histogram_only": page(False, repeat),
            "histogram_and_counters": page(True, repeat)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--out", help="also write the result as JSON here")
    args = parser.parse_args()
    result = {"machine": common.machine_info(), "render": run(args.repeat)}
    common.write_result(args, "render", result)


if __name__ == "__main__":
    main()
