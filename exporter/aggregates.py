"""Cumulative histograms and counters kept as plain data.

The exporter builds Prometheus histograms from a stream of rows, so the running bucket
counts are its state: they must survive restarts (checkpointed as JSON together with the
read position) and be copied cheaply into an immutable snapshot for each scrape.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Mapping
from typing import Any

from exporter.native import NativeCell, NativeSpec, seed_from_classic, thresholds_us

Labels = tuple[str, ...]
Exemplar = tuple[str, float, float]
__all__ = ["Aggregates", "Exemplar", "Labels", "thresholds_us"]


class Aggregates:
    """Histogram cells are lists `[count per bucket ..., count in +Inf, sum]`, not cumulative.

    Non-cumulative cells make an observation one increment; rendering accumulates once per
    scrape. Counters are floats. Exemplars (trace ids for span histograms) are kept per bucket.

    Every histogram is also a native histogram (`exporter.native`): each observation goes to
    both, so their counts and sums are the same ones, and the classic cell keeps the sum.
    """

    def __init__(self, bounds: Mapping[str, tuple[float, ...]],
                 native: NativeSpec | None = None):
        self.bounds = dict(bounds)
        self.native_spec = NativeSpec() if native is None else native
        self.histograms: dict[str, dict[Labels, list[float]]] = {n: {} for n in self.bounds}
        self.native: dict[str, dict[Labels, NativeCell]] = {n: {} for n in self.bounds}
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
        self.native_cell(name, labels).add_one(self.native_spec, self.native_spec.index(value),
                                               count)
        if exemplar is not None:
            self.exemplars.setdefault(name, {}).setdefault(labels, {})[i] = exemplar

    def add_buckets(self, name: str, labels: Labels, counts: Iterable[int], total: float) -> None:
        """Merge pre-bucketed counts (from an aggregate backfill query) into a cell."""
        bounds = self.bounds[name]
        cell = self.histograms[name].setdefault(labels, [0] * (len(bounds) + 1) + [0.0])
        for i, c in enumerate(counts):
            cell[i] += c
        cell[-1] += total

    def native_cell(self, name: str, labels: Labels) -> NativeCell:
        cells = self.native[name]
        cell = cells.get(labels)
        if cell is None:
            cell = cells[labels] = NativeCell(self.native_spec.schema)
        return cell

    def add_native(self, name: str, labels: Labels, counts: Mapping[int, int],
                   zero: int = 0) -> None:
        """Merge native bucket counts indexed at the configured schema (from a page of rows or
        an aggregate backfill query) into a series."""
        self.native_cell(name, labels).add(self.native_spec, counts, zero)

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
        other = Aggregates(self.bounds, self.native_spec)
        other.histograms = {n: {k: list(v) for k, v in c.items()}
                            for n, c in self.histograms.items()}
        other.native = {n: {k: v.copy() for k, v in c.items()} for n, c in self.native.items()}
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
            "native": {n: [[list(k), v.to_json()] for k, v in c.items()]
                       for n, c in self.native.items()},
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any],
                  bounds: Mapping[str, tuple[float, ...]],
                  native: NativeSpec | None = None) -> Aggregates:
        """Restore; bucket bounds must match the configuration, or the counts mean nothing.

        Native buckets saved at a finer schema than the configured one are merged down to it;
        a series saved without native buckets (a state file from before them) gets them
        seeded from its classic buckets (`seed_from_classic`), so both always count the same.
        """
        saved = {n: tuple(b) for n, b in data.get("bounds", {}).items()}
        for name, b in bounds.items():
            if name in saved and saved[name] != tuple(b):
                raise ValueError(
                    f"bucket bounds of {name} changed since the state was saved "
                    f"(saved {list(saved[name])}, configured {list(b)})")
        agg = cls(bounds, native)
        for name, cells in data.get("histograms", {}).items():
            if name in agg.histograms:
                agg.histograms[name] = {tuple(k): v for k, v in cells}
        agg.counters = {n: {tuple(k): v for k, v in c} for n, c in data.get("counters", {}).items()}
        agg.exemplars = {n: {tuple(k): {int(i): tuple(e) for i, e in v} for k, v in c}
                         for n, c in data.get("exemplars", {}).items()}
        spec = agg.native_spec
        for name, cells in data.get("native", {}).items():
            if name in agg.native:
                for k, v in cells:
                    cell = NativeCell.from_json(v)
                    cell.fit(spec.max_buckets, spec.schema)
                    agg.native[name][tuple(k)] = cell
        for name, cells in agg.histograms.items():
            natives = agg.native[name]
            for labels, cell in cells.items():
                if labels not in natives:
                    natives[labels] = seed_from_classic(spec, agg.bounds[name], cell[:-1])
        return agg
