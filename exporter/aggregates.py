"""Cumulative histograms and counters kept as plain data.

The exporter builds Prometheus histograms from a stream of rows, so the running bucket
counts are its state: they must survive restarts (checkpointed as JSON together with the
read position) and be copied cheaply into an immutable snapshot for each scrape.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Iterable, Mapping
from typing import Any

Labels = tuple[str, ...]
Exemplar = tuple[str, float, float]


def thresholds_us(bounds: tuple[float, ...]) -> list[int]:
    """Integer microsecond thresholds: bucket index = count of thresholds <= duration µs.

    For each bound b this is the smallest integer t with t / 1e6 > b, so integer comparison
    (in Python's bisect and in SQL's width_bucket alike) puts a duration in exactly the bucket
    `le=b` would, without float rounding deciding differently in the two places.
    """
    out = []
    for b in bounds:
        t = math.floor(b * 1e6)
        while t / 1e6 <= b:
            t += 1
        while (t - 1) / 1e6 > b:
            t -= 1
        out.append(t)
    return out


class Aggregates:
    """Histogram cells are lists `[count per bucket ..., count in +Inf, sum]`, not cumulative.

    Non-cumulative cells make an observation one increment; rendering accumulates once per
    scrape. Counters are floats. Exemplars (trace ids for span histograms) are kept per bucket.
    """

    def __init__(self, bounds: Mapping[str, tuple[float, ...]]):
        self.bounds = dict(bounds)
        self.histograms: dict[str, dict[Labels, list[float]]] = {n: {} for n in self.bounds}
        self.counters: dict[str, dict[Labels, float]] = {}
        self.exemplars: dict[str, dict[Labels, dict[int, Exemplar]]] = {}

    def observe(self, name: str, labels: Labels, value: float, count: int = 1,
                exemplar: Exemplar | None = None) -> None:
        bounds = self.bounds[name]
        cells = self.histograms[name]
        cell = cells.get(labels)
        if cell is None:
            cell = cells[labels] = [0] * (len(bounds) + 1) + [0.0]
        i = bisect_left(bounds, value)
        cell[i] += count
        cell[-1] += value * count
        if exemplar is not None:
            self.exemplars.setdefault(name, {}).setdefault(labels, {})[i] = exemplar

    def add_buckets(self, name: str, labels: Labels, counts: Iterable[int], total: float) -> None:
        """Merge pre-bucketed counts (from an aggregate backfill query) into a cell."""
        bounds = self.bounds[name]
        cell = self.histograms[name].setdefault(labels, [0] * (len(bounds) + 1) + [0.0])
        for i, c in enumerate(counts):
            cell[i] += c
        cell[-1] += total

    def inc(self, name: str, labels: Labels, amount: float = 1.0) -> None:
        series = self.counters.setdefault(name, {})
        series[labels] = series.get(labels, 0.0) + amount

    def touch(self, name: str, labels: Labels) -> None:
        """Create a counter at 0 so it is exported before its first increment."""
        self.counters.setdefault(name, {}).setdefault(labels, 0.0)

    def label_values(self) -> dict[tuple[str, int], set[str]]:
        """Every (metric, label position) value present, to re-admit them after a restart."""
        seen: dict[tuple[str, int], set[str]] = {}
        for table in (self.histograms, self.counters):
            for name, cells in table.items():
                for labels in cells:
                    for i, v in enumerate(labels):
                        seen.setdefault((name, i), set()).add(v)
        return seen

    def copy(self) -> Aggregates:
        other = Aggregates(self.bounds)
        other.histograms = {n: {k: list(v) for k, v in c.items()}
                            for n, c in self.histograms.items()}
        other.counters = {n: dict(c) for n, c in self.counters.items()}
        other.exemplars = {n: {k: dict(v) for k, v in c.items()}
                           for n, c in self.exemplars.items()}
        return other

    def to_json(self) -> dict[str, Any]:
        return {
            "bounds": {n: list(b) for n, b in self.bounds.items()},
            "histograms": {n: [[list(k), v] for k, v in c.items()]
                           for n, c in self.histograms.items()},
            "counters": {n: [[list(k), v] for k, v in c.items()]
                         for n, c in self.counters.items()},
            "exemplars": {n: [[list(k), [[i, list(e)] for i, e in v.items()]]
                              for k, v in c.items()] for n, c in self.exemplars.items()},
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any],
                  bounds: Mapping[str, tuple[float, ...]]) -> Aggregates:
        """Restore; bucket bounds must match the configuration, or the counts mean nothing."""
        saved = {n: tuple(b) for n, b in data.get("bounds", {}).items()}
        for name, b in bounds.items():
            if name in saved and saved[name] != tuple(b):
                raise ValueError(
                    f"bucket bounds of {name} changed since the state was saved "
                    f"(saved {list(saved[name])}, configured {list(b)})")
        agg = cls(bounds)
        for name, cells in data.get("histograms", {}).items():
            if name in agg.histograms:
                agg.histograms[name] = {tuple(k): v for k, v in cells}
        agg.counters = {n: {tuple(k): v for k, v in c} for n, c in data.get("counters", {}).items()}
        agg.exemplars = {n: {tuple(k): {int(i): tuple(e) for i, e in v} for k, v in c}
                         for n, c in data.get("exemplars", {}).items()}
        return agg
