"""/metrics render time for 660 label sets (33 operation types x 20 branches), 14 buckets.

Three ways to produce the same page, side by side:

- `ours_cached`: `Exposition.render` when nothing was published since the last scrape: the
  cached bytes (what every scrape between two polls costs);
- `ours_uncached`: `Exposition.render` right after a publish: metric families built from the
  aggregates, then prometheus_client's encoder (what the first scrape after a poll costs);
- `prometheus_client`: `generate_latest` on a registry holding a prometheus_client `Histogram`
  (and `Counter`s) with the same label sets, bucket counts and process collectors, i.e. an
  exporter that keeps live client objects.

Two pages: the duration histogram alone (the figure the issue compares with, 77 ms), and the
histogram with the four per-operation counters the exporter also serves for those label sets.
No database is needed.

    python -m bench.bench_render --repeat 30
"""

from __future__ import annotations

import argparse
import random
import statistics
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.openmetrics.exposition import CONTENT_TYPE_LATEST as OPENMETRICS
from prometheus_client.utils import floatToGoString

from bench import common
from exporter.aggregates import Aggregates
from exporter.catalog import metric
from exporter.expose import families
from exporter.expose.registry import Exposition
from exporter.map.performance_metrics import CPU, ERRORS, HIST, ROWS, VIOLATIONS

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


class _Families:
    """Our families alone in a registry, to compare the prototype's bytes with."""

    def __init__(self, agg: Aggregates, counters: tuple[str, ...]):
        self.agg, self.counters = agg, counters

    def collect(self) -> Any:
        return families.from_aggregates(self.agg, ("main",), self.counters)


def exposition(agg: Aggregates) -> Exposition:
    exp = Exposition()
    counters = tuple(n for n in COUNTERS if n in agg.counters)
    exp.add_source(lambda: families.from_aggregates(agg, ("main",), counters))
    return exp


class DirectText:
    """A prototype of the encoder suggested for the exporter (not its code): the text format
    written straight from the aggregates, with each series' sample-line prefixes (name,
    escaped and sorted labels, `le`) built once and kept across renders, so a render is one
    cumulative sum and one number format per sample. Output is byte-identical to
    prometheus_client's for these families (`identical_to_encoder` in the results)."""

    def __init__(self, prefix: tuple[str, ...]):
        self.prefix = prefix
        self._lines: dict[tuple[str, tuple[str, ...]], list[str]] = {}

    @staticmethod
    def _labels(names: tuple[str, ...], values: tuple[str, ...]) -> str:
        pairs = sorted(zip(names, values, strict=True))
        return ",".join(f'{k}="{_escape(v)}"' for k, v in pairs)

    def _histogram_lines(self, name: str, labels: tuple[str, ...],
                         bounds: tuple[float, ...]) -> list[str]:
        key = (name, labels)
        lines = self._lines.get(key)
        if lines is None:
            spec = metric(name)
            values = self.prefix + labels
            with_le = (*spec.all_labels, "le")
            lines = [f"{spec.name}_bucket{{{self._labels(with_le, (*values, le))}}} "
                     for le in [*(floatToGoString(b) for b in bounds), "+Inf"]]
            plain = self._labels(spec.all_labels, values)
            lines += [f"{spec.name}_count{{{plain}}} ", f"{spec.name}_sum{{{plain}}} "]
            self._lines[key] = lines
        return lines

    def render(self, agg: Aggregates) -> bytes:
        out: list[str] = []
        for name, cells in agg.histograms.items():
            spec = metric(name)
            out.append(f"# HELP {spec.name} {_help(spec.help)}\n# TYPE {spec.name} histogram\n")
            n = len(agg.bounds[name]) + 1
            for labels, cell in cells.items():
                lines = self._histogram_lines(name, labels, agg.bounds[name])
                running = 0
                for i in range(n):
                    running += cell[i]
                    out.append(lines[i] + _number(running) + "\n")
                out.append(lines[n] + _number(running) + "\n")
                out.append(lines[n + 1] + floatToGoString(cell[-1]) + "\n")
        for name in sorted(agg.counters):
            spec = metric(name)
            out.append(f"# HELP {spec.family}_total {_help(spec.help)}\n"
                       f"# TYPE {spec.family}_total counter\n")
            for labels, value in agg.counters[name].items():
                key = (name, labels)
                line = self._lines.get(key)
                if line is None:
                    line = [f"{spec.family}_total{{"
                            f"{self._labels(spec.all_labels, self.prefix + labels)}}} "]
                    self._lines[key] = line
                out.append(line[0] + floatToGoString(value) + "\n")
        return "".join(out).encode()


def _escape(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r'\"')


def _help(text: str) -> str:
    return text.replace("\\", r"\\").replace("\n", r"\n")


def _number(count: float) -> str:
    """floatToGoString for the common case of a count below 1e6, without the call."""
    return f"{int(count)}.0" if 0 <= count < 1_000_000 and count == int(count) else \
        floatToGoString(count)


def timed(fn: Any, repeat: int) -> dict[str, float]:
    _, times = common.best_of(fn, repeat)
    ms = [t * 1000 for t in times]
    return {"min_ms": round(min(ms), 3), "median_ms": round(statistics.median(ms), 3),
            "max_ms": round(max(ms), 3)}


def page(with_counters: bool, repeat: int) -> dict[str, Any]:
    agg = aggregates(with_counters)
    exp = exposition(agg)
    registry = client_registry(agg)
    body, _ = exp.render(None)
    client_body = generate_latest(registry)

    def uncached(accept: str | None = None) -> None:
        exp.changed()
        exp.render(accept)

    out: dict[str, Any] = {
        "label_sets": len(agg.histograms[HIST]), "buckets": len(BOUNDS),
        "families": 1 + (len(COUNTERS) if with_counters else 0),
        "bytes_ours": len(body), "bytes_prometheus_client": len(client_body),
        "ours_cached": timed(lambda: exp.render(None), repeat),
        "ours_uncached": timed(uncached, repeat),
        "ours_uncached_openmetrics": timed(lambda: uncached(OPENMETRICS), repeat),
        "prometheus_client": timed(lambda: generate_latest(registry), repeat),
    }
    direct = DirectText(("main",))
    families_only = CollectorRegistry()
    counters = tuple(n for n in COUNTERS if n in agg.counters)
    families_only.register(_Families(agg, counters))
    out["prototype_direct_text"] = timed(lambda: direct.render(agg), repeat)
    out["prototype_identical_to_encoder"] = direct.render(agg) == generate_latest(families_only)
    out["meets_target"] = out["ours_uncached"]["median_ms"] <= TARGET_MS
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
