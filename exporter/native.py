"""Prometheus native histograms: exponential buckets kept sparse, beside the classic ones.

A native histogram's bucket `i` at schema `s` holds the values in (2^((i-1)/2^s), 2^(i/2^s)],
a zero bucket holds the values at most ZERO_THRESHOLD, and only buckets that were ever hit
exist. The resolution is fixed by the schema alone, so one range of buckets fits durations of
1 µs and of an hour alike: the relative width of every bucket is 2^(2^-s) - 1 (9 % at schema
3, 4.4 % at 4, 2.2 % at 5), and so is the worst error of a quantile read from it.

Every duration is observed at the configured schema and then, if its series' buckets have
been merged, at the series' own coarser schema. A series that would exceed `max_buckets`
halves its resolution (schema - 1, each pair of neighbouring buckets merged into one) until it
fits: what Prometheus does itself to a histogram over its `native_histogram_bucket_limit`,
and what client_golang's `NativeHistogramMaxBucketNumber` does. Counts stay exact through
it; only the resolution drops. Which schema a series ends at depends only on which buckets
were ever hit, not on the order they were hit in, so a backfill and a replay of the same rows
end in the same state.

pgGit durations are integer microseconds. `thresholds_us` gives the integer form of the
bucket boundaries, so Python's bisect and SQL's width_bucket file a duration into the same
bucket, as they do for the classic bounds.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from itertools import chain, repeat
from operator import add
from typing import Any

MIN_SCHEMA, MAX_SCHEMA = -4, 8
ZERO_THRESHOLD = 2.0 ** -128
"""The zero bucket's half-width; client_golang's default. Durations of 0 µs land in it."""
LOW_EXP, HIGH_EXP = -20, 32
"""Buckets are kept from 2^-20 s (0.95 µs) to 2^32 s (136 years); values beyond fall into the
first or last one. Up to 2^32 s every threshold in µs is below 2^53, so exact as a float."""

DEFAULT_SCHEMA = 5
"""Chosen in bench/bench_native.py: see bench/results/native.md."""
DEFAULT_MAX_BUCKETS = 160


@dataclass(frozen=True)
class NativeSpec:
    """The resolution asked for and the most buckets a series may keep."""

    schema: int = DEFAULT_SCHEMA
    max_buckets: int = DEFAULT_MAX_BUCKETS

    def __post_init__(self) -> None:
        if not MIN_SCHEMA <= self.schema <= MAX_SCHEMA:
            raise ValueError(f"native histogram schema must be {MIN_SCHEMA}..{MAX_SCHEMA}, "
                             f"not {self.schema}")
        if self.max_buckets < 1:
            raise ValueError("native histograms need at least one bucket")

    @property
    def first(self) -> int:
        """Index of the lowest kept bucket (never hit by a positive whole µs)."""
        return _boundaries(self.schema)[0]

    @property
    def bounds(self) -> tuple[float, ...]:
        """Upper bounds of the kept buckets, in seconds, from bucket `first` upwards."""
        return _boundaries(self.schema)[1]

    @property
    def thresholds(self) -> list[int]:
        """Integer µs thresholds: `bisect_right(thresholds, us)` is 0 for 0 µs (the zero
        bucket) and else the bucket's index minus `first`, as SQL's width_bucket computes."""
        return _thresholds(self.schema)

    def index(self, value: float) -> int | None:
        """The bucket at the configured schema of a value in seconds; None for the zero bucket."""
        if value <= ZERO_THRESHOLD:
            return None
        return _boundaries(self.schema)[0] + bisect_left(_boundaries(self.schema)[1], value)


@cache
def _boundaries(schema: int) -> tuple[int, tuple[float, ...]]:
    """(index of the first bucket, upper bounds from it up to 2^HIGH_EXP), computed once.

    A bound is 2^(i / 2^schema); the whole powers of two are exact (ldexp), the fractions
    within a power are Python's correctly rounded-or-nearly pow, like client_golang's table.
    """
    per_power = 2 ** schema if schema > 0 else 1
    step = 1 if schema > 0 else 2 ** -schema
    first = LOW_EXP * per_power // step
    last = -(-HIGH_EXP * per_power // step)
    fractions = [2.0 ** (j / per_power) for j in range(per_power)]
    bounds = []
    for i in range(first, last + 1):
        if schema > 0:
            power, j = divmod(i, per_power)
            bounds.append(fractions[j] * 2.0 ** power)
        else:
            bounds.append(2.0 ** (i * step))
    return first, tuple(bounds)


@cache
def _thresholds(schema: int) -> list[int]:
    return thresholds_us(_boundaries(schema)[1])


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



class Positions:
    """Classic and native thresholds merged: one bisect of a whole-µs duration tells both its
    buckets, which is what the hot path and the backfill file a row by.

    A position is the number of merged thresholds at or below a duration (`bisect_right`,
    SQL's `width_bucket`). No threshold of either kind lies strictly inside a position, so
    every duration with the same position has the same classic bucket (`classic`) and the
    same native one (`native`: the bucket's place among the spec's thresholds, 0 for the
    zero bucket, whose only duration is 0 µs).
    """

    def __init__(self, spec: NativeSpec, classic: list[int]):
        self.spec = spec
        self.thresholds = sorted(set(classic) | set(spec.thresholds))
        self.classic = [0, *(bisect_right(classic, t) for t in self.thresholds)]
        self.native = [0, *(bisect_right(spec.thresholds, t) for t in self.thresholds)]
        self._indices: dict[int, list[int]] = {}

    def indices(self, schema: int) -> list[int]:
        """Each position's native bucket index at `schema` (at most the spec's, a series
        that was halved), made once per schema. Position 0 gets the first bucket's: the
        caller takes the 0 µs durations out again (see `NativeCell.add_positions`)."""
        table = self._indices.get(schema)
        if table is None:
            by = self.spec.schema - schema
            first = self.spec.first
            table = self._indices[schema] = [downscale(first + p, by) for p in self.native]
        return table


def downscale(index: int, by: int) -> int:
    """The bucket at `by` schemas coarser that holds bucket `index`: ceil(index / 2^by)."""
    return (index + (1 << by) - 1) >> by


class NativeCell:
    """One series' native buckets: its schema (at most the configured one), the zero bucket's
    count and `{bucket index: count}` for the buckets ever hit. Counts are not cumulative."""

    __slots__ = ("buckets", "deltas", "encoded", "layout", "saved", "schema", "zero")

    def __init__(self, schema: int, zero: int = 0, buckets: Mapping[int, int] | None = None):
        self.schema = schema
        self.zero = zero
        self.buckets: Counter[int] = Counter() if buckets is None else Counter(buckets)
        self.encoded: bytes | None = None
        """The protobuf exposition's bytes for this cell, kept until it changes: a poll
        copies the cells it observes into, so unchanged series are not encoded again."""
        self.saved: str | None = None
        """The buckets as the checkpoint writes them, kept the same way (`to_json`)."""
        self.layout: Any = None
        """The protobuf exposition's spans (`exporter.expose.protobuf._Layout`), which depend
        only on which buckets are hit: kept while they stay the same (most polls only add to
        buckets already hit) and updated for the buckets a poll adds. Shared by a copy, so
        never changed in place."""
        self.deltas: tuple[Any, Any, set[int]] | None = None
        """The protobuf exposition's encoded bucket deltas of its last render, as `(sent,
        pieces, touched)`: `touched` holds the buckets whose counts changed since, which the
        methods below keep up to date, so that render re-encodes only around them (a poll
        changes a few buckets of a series; encoding them all is most of a render). A copy
        shares the pieces and gets its own `touched`."""

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, NativeCell) and self.schema == other.schema
                and self.zero == other.zero and self.buckets == other.buckets)

    def __repr__(self) -> str:
        return f"NativeCell({self.schema}, {self.zero}, {dict(sorted(self.buckets.items()))})"

    def count(self) -> int:
        return self.zero + sum(self.buckets.values())

    def add(self, spec: NativeSpec, counts: Mapping[int, int], zero: int = 0) -> None:
        """Add counts indexed at the configured schema, then fit the bucket limit."""
        self.encoded = self.saved = None
        self.zero += zero
        buckets = self.buckets
        by = spec.schema - self.schema
        touched = self.deltas[2] if self.deltas is not None else set()
        if by == 0:
            for i, c in counts.items():
                buckets[i] = buckets.get(i, 0) + c
            touched.update(counts)
        else:
            for i, c in counts.items():
                j = (i + (1 << by) - 1) >> by
                buckets[j] = buckets.get(j, 0) + c
                touched.add(j)
        if len(buckets) > spec.max_buckets:
            self.fit(spec.max_buckets)

    def add_durations_us(self, spec: NativeSpec, durations: list[int]) -> None:
        """Count whole-µs durations (none negative) straight at this cell's schema.

        A coarser schema's bounds are a subset of a finer one's, computed to the same floats,
        so bisecting its own thresholds files a duration exactly where downscaling the
        configured schema's bucket would. The counting runs in C (Counter.update over map),
        which keeps the hot path within a few tenths of a microsecond per row.
        """
        self.encoded = self.saved = None
        first, thresholds = _boundaries(self.schema)[0], _thresholds(self.schema)
        self._count(map(add, map(bisect_right, repeat(thresholds), durations), repeat(first)))
        # 0 µs is below every threshold, so it was counted at position 0: bucket `first`.
        self._settle(spec, first, durations.count(0))

    def add_positions(self, spec: NativeSpec, positions: Positions, counted: list[int]) -> None:
        """Count durations given by their `Positions` position (the hot path bisects once per
        row for both kinds of bucket). The counting runs in C (Counter.update over a table
        lookup of shared ints), which saves the native bisect and an int per row that
        `add_durations_us` costs."""
        self.encoded = self.saved = None
        table = positions.indices(self.schema)
        self._count(map(table.__getitem__, counted))
        # 0 µs is counted at position 0's bucket: it belongs in the zero bucket.
        self._settle(spec, table[0], counted.count(0))

    def _count(self, indices: Iterable[int]) -> None:
        """One more in each bucket of `indices` (one per duration), in C; the buckets are
        noted as touched only when a render kept deltas to patch."""
        if self.deltas is not None:
            indices = list(indices)
            self.deltas[2].update(indices)
        self.buckets.update(indices)

    def _settle(self, spec: NativeSpec, first: int, zeros: int) -> None:
        """After counting in bulk: move the `zeros` durations of 0 µs, counted in bucket
        `first`, to the zero bucket, and halve the resolution if the cell is over its limit."""
        buckets = self.buckets
        if zeros:
            self.zero += zeros
            buckets[first] -= zeros
            if not buckets[first]:
                del buckets[first]
        if len(buckets) > spec.max_buckets:
            self.fit(spec.max_buckets)

    def add_one(self, spec: NativeSpec, index: int | None, count: int = 1) -> None:
        self.encoded = self.saved = None
        if index is None:
            self.zero += count
            return
        by = spec.schema - self.schema
        if by:
            index = (index + (1 << by) - 1) >> by
        buckets = self.buckets
        buckets[index] = buckets.get(index, 0) + count
        if self.deltas is not None:
            self.deltas[2].add(index)
        if len(buckets) > spec.max_buckets:
            self.fit(spec.max_buckets)

    def fit(self, max_buckets: int, schema: int | None = None) -> None:
        """Halve the resolution until at most `max_buckets` buckets remain (and the schema is
        at most `schema`, when the configured one went down since the state was saved)."""
        self.encoded = self.saved = None
        if len(self.buckets) > max_buckets or (schema is not None and self.schema > schema):
            self.deltas = None  # every bucket changes
        while self.schema > MIN_SCHEMA and (
                len(self.buckets) > max_buckets or (schema is not None and self.schema > schema)):
            merged: Counter[int] = Counter()
            for i, c in self.buckets.items():
                merged[(i + 1) >> 1] += c
            self.buckets = merged
            self.schema -= 1

    def copy(self) -> NativeCell:
        other = NativeCell(self.schema, self.zero, self.buckets)
        other.encoded, other.saved, other.layout = self.encoded, self.saved, self.layout
        deltas = self.deltas  # one read: a render may replace it meanwhile
        if deltas is not None:
            other.deltas = (deltas[0], deltas[1], set(deltas[2]))
        return other

    def to_json(self) -> list[Any]:
        """[schema, zero count, "index,count,index,count,..."] by index.

        The checkpoint holds every series' buckets (about 580 KB for 660 busy series) and is
        written on every poll that read rows, most of which change a few series: one string
        per cell, kept until the cell changes, makes the others cost a copy of that string.
        """
        if self.saved is None:
            self.saved = ",".join(map(str, chain.from_iterable(sorted(self.buckets.items()))))
        return [self.schema, self.zero, self.saved]

    @classmethod
    def from_json(cls, data: list[Any]) -> NativeCell:
        schema, zero, text = data
        flat = list(map(int, text.split(","))) if text else []
        cell = cls(int(schema), int(zero), dict(zip(flat[::2], flat[1::2], strict=True)))
        cell.saved = text or None
        return cell


def seed_from_classic(spec: NativeSpec, bounds: tuple[float, ...],
                      counts: Iterable[float]) -> NativeCell:
    """Native buckets for counts that were only kept in classic buckets (a state file from
    before native histograms): each classic bucket's count goes to the native bucket holding
    its upper bound, the +Inf bucket's to the one above the last bound. The count and the sum
    stay exact and agree with the classic histogram; the distribution of those old rows keeps
    the classic resolution, which only shows in quantiles over windows reaching back before
    the upgrade."""
    cell = NativeCell(spec.schema)
    seeded: dict[int, int] = {}
    last = spec.index(bounds[-1])
    for k, c in enumerate(counts):
        if not c:
            continue
        i = spec.index(bounds[k]) if k < len(bounds) else (last or spec.first) + 1
        if i is None:
            cell.zero += int(c)
        else:
            seeded[i] = seeded.get(i, 0) + int(c)
    cell.add(spec, seeded)
    return cell
