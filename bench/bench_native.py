"""Native histograms: quantile error against resolution and memory, and the /metrics page.

Durations follow the demo workload (exporter/demo/workload.py): each of pgGit's 33 operation
types log-normal around its typical duration from the demo's SQL catalog, sigma growing with
the typical duration, the workload's mix of types and its rare 8-30x outliers.

- `schemas`: for each schema, the relative error of p50/p90/p99 per operation type read from
  the native histogram the way Prometheus 2.42 reads it (`histogram_quantile`: linear within
  the bucket), against the exact `percentile_disc`; the classic buckets' error beside it; the
  buckets a series keeps (the limit's halving included) and the bytes a series takes.
- `page`: 660 label sets (33 types x 20 branches), the default 18 classic buckets, every
  series filled from its type's distribution. Render time uncached (right after a publish)
  for text and OpenMetrics (which write every value on every render) and protobuf (which
  reuses the message of a series whose values did not change, and a series' native spans
  while its bucket set stays the same): with every series changed by the poll before (a
  busy database) and each of them gaining a native bucket (the worst case), every series
  changed within its buckets, a tenth changed, none, and the first render after a restart.
  Page size plain and gzipped, and the page and series count with native histograms only,
  classic only, and both.

No database is needed.

    python -m bench.bench_native --out bench/results/native.json
"""

from __future__ import annotations

import argparse
import gc
import gzip
import math
import random
import re
import statistics
import time
import tracemalloc
from bisect import bisect_right
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import common
from bench.bench_render import side_by_side
from exporter import gc_tuning
from exporter.aggregates import Aggregates
from exporter.config import DEFAULT_BUCKETS
from exporter.demo.workload import OPERATION_WEIGHTS
from exporter.expose.families import Histogram, Part, from_aggregates
from exporter.expose.protobuf import ProtobufEncoder, native_fields
from exporter.expose.registry import Exposition
from exporter.native import (
    DEFAULT_MAX_BUCKETS,
    NativeCell,
    NativeSpec,
    Positions,
    thresholds_us,
)
from tests.test_expose_protobuf import PROMETHEUS_2_42_ACCEPT

HIST = "pggit_operation_duration_seconds"
CORE_SQL = Path(__file__).resolve().parent.parent / "exporter" / "demo" / "sql" / "core.sql"
QUANTILES = (0.5, 0.9, 0.99)
BRANCHES = 20
OUTLIER_PROBABILITY = 0.005
TARGET_MS = 20.0
DEFAULT_GC = (700, 10, 10)
"""CPython's own thresholds, for the one render measured without `exporter.gc_tuning`."""


def catalog() -> list[tuple[str, float, float, float]]:
    """(operation type, typical µs, sigma, weight) as the demo workload derives them."""
    rows = re.findall(r"\('(\w+)', '(?:[^']|'')*', '\w+', ([\d.]+), (?:true|false)\)",
                      CORE_SQL.read_text(encoding="utf-8"))
    out = []
    for name, typical_ms in rows:
        ms = float(typical_ms)
        sigma = 0.25 + min(0.3, math.log10(max(ms, 1.0)) * 0.1)
        out.append((name, max(ms, 0.05) * 1000.0, sigma, float(OPERATION_WEIGHTS.get(name, 2))))
    return out


def durations_us(rng: random.Random, typical_us: float, sigma: float, n: int) -> list[int]:
    out = []
    for _ in range(n):
        value = rng.lognormvariate(math.log(typical_us), sigma)
        if rng.random() < OUTLIER_PROBABILITY:
            value *= rng.uniform(8.0, 30.0)
        out.append(max(1, int(value)))
    return out


def exact(sorted_us: list[int], q: float) -> float:
    """SQL's percentile_disc: the first value whose cumulative fraction reaches q."""
    return sorted_us[max(0, math.ceil(q * len(sorted_us)) - 1)] / 1e6


def native_quantile(cell: NativeCell, q: float) -> float:
    """Prometheus 2.42's histogramQuantile for a positive-only native histogram."""
    total = cell.count()
    rank = q * total
    count = cell.zero
    if count >= rank and cell.zero:
        return 0.0
    width = 2.0 ** -cell.schema
    for i in sorted(cell.buckets):
        c = cell.buckets[i]
        count += c
        if count >= rank:
            lower, upper = 2 ** ((i - 1) * width), 2 ** (i * width)
            return lower + (upper - lower) * (rank - (count - c)) / c
    raise AssertionError("rank beyond the count")


def classic_quantile(bounds: tuple[float, ...], counts: list[int], q: float) -> float:
    """Prometheus' bucketQuantile: linear within the bucket, 0 below the first bound, the
    highest finite bound when the rank falls into +Inf."""
    total = sum(counts)
    rank = q * total
    cumulative = 0
    for k, c in enumerate(counts):
        cumulative += c
        if cumulative >= rank:
            if k == len(bounds):
                return bounds[-1]
            lower = bounds[k - 1] if k else 0.0
            return lower + (bounds[k] - lower) * (rank - (cumulative - c)) / c
    return bounds[-1]


def measure_schemas(samples: dict[str, list[int]], schemas: range,
                    max_buckets: int) -> dict[str, Any]:
    bounds = DEFAULT_BUCKETS
    out: dict[str, Any] = {}
    classic_errors: list[float] = []
    for values in samples.values():
        ordered = sorted(values)
        agg = Aggregates({HIST: bounds})
        for us in values:
            agg.histograms[HIST].setdefault(("x",), [0] * (len(bounds) + 1) + [0.0])
            agg.observe(HIST, ("x",), us / 1e6)
        counts = [int(c) for c in agg.histograms[HIST][("x",)][:-1]]
        classic_errors += [abs(classic_quantile(bounds, counts, q) / exact(ordered, q) - 1)
                           for q in QUANTILES]
    out["classic"] = {"max_error": round(max(classic_errors), 4),
                      "median_error": round(statistics.median(classic_errors), 4),
                      "buckets": len(bounds) + 1}
    for schema in schemas:
        spec = NativeSpec(schema, max_buckets)
        errors: list[float] = []
        buckets: list[int] = []
        kept_schemas: list[int] = []
        cells = []
        for values in samples.values():
            ordered = sorted(values)
            cell = NativeCell(schema)
            page = Counter(spec.index(us / 1e6) for us in values)
            zero = page.pop(None, 0)
            cell.add(spec, page, zero)
            cells.append(cell)
            buckets.append(len(cell.buckets))
            kept_schemas.append(cell.schema)
            errors += [abs(native_quantile(cell, q) / exact(ordered, q) - 1) for q in QUANTILES]
        out[f"schema_{schema}"] = {
            "bucket_width": round(2 ** (2.0 ** -schema) - 1, 4),
            "max_error": round(max(errors), 4),
            "median_error": round(statistics.median(errors), 4),
            "buckets_mean": round(statistics.mean(buckets), 1),
            "buckets_max": max(buckets),
            "series_halved": sum(s < schema for s in kept_schemas),
            "bytes_per_series": bytes_per_series(cells),
        }
    return out


def render_state_per_series(cells: list[NativeCell]) -> int:
    """Python heap the protobuf encoder keeps on a series' cell after a render: its encoded
    fields, its spans' layout and its deltas (`NativeCell.deltas`)."""
    copies = [NativeCell(c.schema, c.zero, c.buckets) for c in cells]
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    for cell in copies:
        cell.encoded = native_fields(cell)
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    return round(sum(s.size_diff for s in after.compare_to(before, "filename")) / len(cells))


def bytes_per_series(cells: list[NativeCell]) -> int:
    """Python heap a series' native cell takes (the object, its dict and its counts)."""
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    copies = [c.copy() for c in cells]
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    size = sum(s.size_diff for s in after.compare_to(before, "filename"))
    del copies
    return round(size / len(cells))


def filled_aggregates(rng: random.Random, ops: list[tuple[str, float, float, float]],
                      rows_per_series: int, spec: NativeSpec) -> Aggregates:
    agg = Aggregates({HIST: DEFAULT_BUCKETS}, spec)
    for name, typical, sigma, _ in ops:
        for b in range(BRANCHES):
            labels = (name, f"feature/branch-{b:02d}")
            for us in durations_us(rng, typical, sigma, rows_per_series):
                agg.observe(HIST, labels, us / 1e6)
    return agg


def native_only(parts: list[Part]) -> list[Part]:
    """The page a histogram without classic buckets would make (the +Inf count and sum)."""
    out: list[Part] = []
    for p in parts:
        if isinstance(p, Histogram):
            cells = {k: [sum(v[:-1]), v[-1]] for k, v in p.cells.items()}
            out.append(Histogram(p.name, cells, (), p.prefix, {}, p.native))
        else:
            out.append(p)
    return out


def classic_only(parts: list[Part]) -> list[Part]:
    return [Histogram(p.name, p.cells, p.bounds, p.prefix, p.exemplars, {})
            if isinstance(p, Histogram) else p for p in parts]


class Polls:
    """A stand-in for the poller: each `poll` copies the published aggregates (the cells
    carry what the encoder keeps of them, as a poll's copies do), observes into some series
    and publishes the copy, as a poll that read rows does."""

    def __init__(self, agg: Aggregates, exposition: Exposition) -> None:
        self.agg = agg
        self.exposition = exposition
        self.parts = list(from_aggregates(agg, ("main",)))
        self.rng = random.Random(11)
        exposition.add_source(lambda: self.parts)

    def poll(self, share: int, new_bucket: bool) -> None:
        """Three durations into every `share`-th series: with `new_bucket`, one of them in a
        native bucket the series never had (its bucket set changes, so its spans must be
        worked out again), else all in buckets it has (only counts change)."""
        agg = self.agg.copy()
        for labels in sorted(agg.native[HIST])[::share]:
            cell = agg.native[HIST][labels]
            hit = sorted(cell.buckets)
            targets = [self.rng.choice(hit) for _ in range(3)]
            if new_bucket:
                free = [i for i in range(hit[0] - 6, hit[-1] + 7) if i not in cell.buckets]
                targets[0] = self.rng.choice(free)
            for i in targets:
                # The middle of bucket i at the cell's schema: (2^((i-1)/2^s), 2^(i/2^s)].
                agg.observe(HIST, labels, 2.0 ** ((i - 0.5) / 2.0 ** cell.schema))
        self.agg = agg
        self.parts = list(from_aggregates(agg, ("main",)))
        self.exposition.changed()

    def restart(self) -> None:
        """The state as a restart loads it and a new encoder: nothing kept from earlier
        renders (relabelling drops the exposition's encoders)."""
        self.agg = Aggregates.from_json(self.agg.to_json(), self.agg.bounds,
                                        self.agg.native_spec)
        self.parts = list(from_aggregates(self.agg, ("main",)))
        self.exposition.relabel({}, {})
        self.exposition.changed()


def timed_rounds(cases: dict[str, tuple[Callable[[], Any], Callable[[], Any]]],
                 repeat: int) -> dict[str, dict[str, float]]:
    """Like bench_render.side_by_side, each round times every case once (so all of them see
    the same machine load), but each case's setup (the poll before a render) is not timed."""
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(repeat):
        for name, (setup, fn) in cases.items():
            setup()
            t = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - t) * 1000)
    return {name: {"min_ms": round(min(ms), 3), "median_ms": round(statistics.median(ms), 3),
                   "max_ms": round(max(ms), 3)} for name, ms in times.items()}


def measure_page(agg: Aggregates, repeat: int) -> dict[str, Any]:
    """Renders right after a publish (the page cache is stale) with no, a tenth and all
    series changed by the poll before; "new buckets" means each changed series also gained a
    native bucket, the worst case for the protobuf encoder, which keeps a series' spans while
    its bucket set stays the same. The first render after a restart has nothing kept."""
    exposition = Exposition()
    polls = Polls(agg, exposition)
    label_sets = len(agg.histograms[HIST])
    openmetrics = "application/openmetrics-text;version=1.0.0"

    def render(accept: str | None) -> Callable[[], Any]:
        return lambda: exposition.render(accept)

    # Sizes are of the page as filled, before the polls below add to it.
    parts = polls.parts
    pages = {
        "text": exposition.render(None)[0],
        "openmetrics": exposition.render(openmetrics)[0],
        "protobuf_both": ProtobufEncoder().encode(parts),
        "protobuf_native_only": ProtobufEncoder().encode(native_only(parts)),
        "protobuf_classic_only": ProtobufEncoder().encode(classic_only(parts)),
    }
    buckets_mean = round(statistics.mean(len(c.buckets) for c in agg.native[HIST].values()), 1)
    protobuf = render(PROMETHEUS_2_42_ACCEPT)
    exposition.render(PROMETHEUS_2_42_ACCEPT)
    gc_tuning.tune()  # as the service does once started

    def poll_with_default_gc() -> None:
        gc.set_threshold(*DEFAULT_GC)
        polls.poll(1, True)

    def tuned(setup: Callable[[], Any]) -> Callable[[], Any]:
        return lambda: (gc.set_threshold(*gc_tuning.THRESHOLDS), setup())

    cases = {
        "text_uncached": (exposition.changed, render(None)),
        "openmetrics_uncached": (exposition.changed, render(openmetrics)),
        "protobuf_uncached_all_changed_new_buckets": (lambda: polls.poll(1, True), protobuf),
        "protobuf_uncached_all_changed_same_buckets": (lambda: polls.poll(1, False), protobuf),
        "protobuf_uncached_tenth_changed_new_buckets": (lambda: polls.poll(10, True),
                                                        protobuf),
        "protobuf_uncached_none_changed": (exposition.changed, protobuf),
        "protobuf_first_after_restart": (polls.restart, protobuf),
    }
    # Every case under the service's thresholds but the one measured with CPython's own,
    # whatever order the rounds run them in.
    times = timed_rounds({
        "protobuf_uncached_all_changed_new_buckets_default_gc": (poll_with_default_gc,
                                                                 protobuf),
        **{name: (tuned(setup), fn) for name, (setup, fn) in cases.items()}}, repeat)
    classic_series = label_sets * (len(DEFAULT_BUCKETS) + 1 + 2)
    return {
        "label_sets": label_sets, "classic_buckets": len(DEFAULT_BUCKETS) + 1,
        "native_buckets_mean": buckets_mean,
        "render_state_bytes_per_series": render_state_per_series(
            list(agg.native[HIST].values())),
        "render_ms": times,
        "protobuf_meets_target_all_changed":
            times["protobuf_uncached_all_changed_new_buckets"]["median_ms"] <= TARGET_MS,
        "protobuf_meets_target_tenth_changed":
            times["protobuf_uncached_tenth_changed_new_buckets"]["median_ms"] <= TARGET_MS,
        "bytes": {name: len(body) for name, body in pages.items()},
        "bytes_gzip": {name: len(gzip.compress(body, 1)) for name, body in pages.items()},
        "series_ingested": {"classic_only": classic_series, "native_only": label_sets,
                            "both": classic_series + label_sets},
    }


def hot_path(samples: dict[str, list[int]], spec: NativeSpec, repeat: int) -> dict[str, Any]:
    """What a row costs in `PerformanceMetrics.observe_rows` for its buckets: the classic
    bisect and increment alone, and with the native buckets as the mapping counts them (one
    bisect among both kinds of threshold, positions collected per series and counted at the
    page's end by `add_positions`), beside the earlier way (a classic bisect per row, the
    native one at the page's end by `add_durations_us`)."""
    pages = [values[k:k + 76] for values in samples.values() for k in range(0, len(values), 76)]
    """About 76 rows per series and page: a 50,000-row page over 660 label sets."""
    rows = sum(map(len, pages))
    classic = thresholds_us(DEFAULT_BUCKETS)

    def classic_only() -> None:
        cell = [0] * (len(classic) + 1)
        for page in pages:
            for us in page:
                cell[bisect_right(classic, us)] += 1

    positions = Positions(spec, classic)

    def both() -> None:
        cell = [0] * (len(classic) + 1)
        native = NativeCell(spec.schema)
        merged, classic_of = positions.thresholds, positions.classic
        for page in pages:
            counted = []
            for us in page:
                position = bisect_right(merged, us)
                cell[classic_of[position]] += 1
                counted.append(position)
            native.add_positions(spec, positions, counted)

    def both_bisecting_twice() -> None:
        cell = [0] * (len(classic) + 1)
        native = NativeCell(spec.schema)
        for page in pages:
            durations = []
            for us in page:
                cell[bisect_right(classic, us)] += 1
                durations.append(us)
            native.add_durations_us(spec, durations)

    times = side_by_side({"classic_only": classic_only, "classic_and_native": both,
                          "classic_and_native_bisecting_twice": both_bisecting_twice}, repeat)
    rate = {name: round(rows / (t["median_ms"] / 1000)) for name, t in times.items()}
    return {"rows": rows, "rows_per_second": rate,
            "native_thresholds": len(spec.thresholds),
            "microseconds_per_row_added": round(1e6 / rate["classic_and_native"]
                                                - 1e6 / rate["classic_only"], 3),
            "time_ratio": round(times["classic_and_native"]["median_ms"]
                                / times["classic_only"]["median_ms"], 2)}


def run(repeat: int, rows: int, rows_per_series: int, max_buckets: int,
        schema: int) -> dict[str, Any]:
    rng = random.Random(7)
    ops = catalog()
    weights = sum(w for *_, w in ops)
    samples = {name: durations_us(rng, typical, sigma, max(1000, int(rows * w / weights)))
               for name, typical, sigma, w in ops}
    result = {"operation_types": len(ops), "rows": sum(len(v) for v in samples.values()),
              "max_buckets": max_buckets,
              "schemas": measure_schemas(samples, range(0, 9), max_buckets),
              "hot_path": hot_path(samples, NativeSpec(schema, max_buckets), max(3, repeat // 4))}
    agg = filled_aggregates(rng, ops, rows_per_series, NativeSpec(schema, max_buckets))
    result["page"] = {"schema": schema, "rows_per_series": rows_per_series,
                      **measure_page(agg, repeat)}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--rows", type=int, default=200_000,
                        help="rows over all operation types for the error table")
    parser.add_argument("--rows-per-series", type=int, default=1_000)
    parser.add_argument("--max-buckets", type=int, default=DEFAULT_MAX_BUCKETS)
    parser.add_argument("--schema", type=int, default=NativeSpec().schema)
    parser.add_argument("--out", help="also write the result as JSON here")
    args = parser.parse_args()
    result = {"machine": common.machine_info(),
              "native": run(args.repeat, args.rows, args.rows_per_series, args.max_buckets,
                            args.schema)}
    common.write_result(args, "native", result)
    if args.out:
        Path(args.out).with_suffix(".md").write_text(summary(result), encoding="utf-8")


def summary(result: dict[str, Any]) -> str:
    """The tables for the README and the closing note, from one run's JSON."""
    r = result["native"]
    m = result["machine"]
    lines = [
        "# Native histograms (bench/bench_native.py)", "",
        f"{m['timestamp']} · {m['nproc']} CPUs · Python {m['python']} · load average "
        f"{m['load_average_1m_at_start']} at start (the machine is shared).", "",
        f"## Quantile error per schema ({r['operation_types']} operation types of the demo "
        f"workload, {r['rows']:,} rows, p50/p90/p99, limit {r['max_buckets']} buckets)", "",
        "| histogram | bucket width | max error | median error | buckets (mean / max) "
        "| series halved | bytes per series |", "|---|---|---|---|---|---|---|"]
    c = r["schemas"]["classic"]
    lines.append(f"| classic (default 18 bounds) | n/a | {c['max_error']:.1%} | "
                 f"{c['median_error']:.2%} | {c['buckets']} | n/a | n/a |")
    for name, s in r["schemas"].items():
        if name == "classic":
            continue
        lines.append(f"| native schema {name.split('_')[1]} | {s['bucket_width']:.1%} | "
                     f"{s['max_error']:.1%} | {s['median_error']:.2%} | {s['buckets_mean']} / "
                     f"{s['buckets_max']} | {s['series_halved']} | {s['bytes_per_series']:,} |")
    p = r["page"]
    lines += ["", f"## /metrics for {p['label_sets']} label sets, schema {p['schema']}, "
              f"{p['rows_per_series']} rows per series ({p['native_buckets_mean']} native "
              f"buckets per series on average; after a render the protobuf encoder keeps "
              f"{p['render_state_bytes_per_series']:,} bytes per series; renders under "
              f"`exporter.gc_tuning` but the one marked default_gc)", "",
              "| render | min ms | median ms |", "|---|---|---|"]
    for name, t in p["render_ms"].items():
        lines.append(f"| {name} | {t['min_ms']} | {t['median_ms']} |")
    lines += ["", "| page | bytes | gzip bytes | series Prometheus ingests |", "|---|---|---|---|"]
    series = p["series_ingested"]
    for name, size in p["bytes"].items():
        ingested = {"text": series["classic_only"], "openmetrics": series["classic_only"],
                    "protobuf_both": f"{series['native_only']} (2.42: native only) or "
                                     f"{series['both']} (with scrape_classic_histograms)",
                    "protobuf_native_only": series["native_only"],
                    "protobuf_classic_only": series["classic_only"]}[name]
        lines.append(f"| {name} | {size:,} | {p['bytes_gzip'][name]:,} | {ingested} |")
    h = r["hot_path"]
    lines += ["", f"## Hot path per row ({h['rows']:,} durations, "
              f"{h['native_thresholds']} native thresholds)", "",
              f"classic only {h['rows_per_second']['classic_only']:,} rows/s, classic and "
              f"native {h['rows_per_second']['classic_and_native']:,} rows/s "
              f"({h['time_ratio']}x the time, {h['microseconds_per_row_added']} µs more per "
              "row); bisecting each kind of threshold, as before, "
              f"{h['rows_per_second']['classic_and_native_bisecting_twice']:,} rows/s.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
