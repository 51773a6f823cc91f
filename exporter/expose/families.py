"""What sources hand to /metrics: their published data for one catalog metric, as it is.

A source (a database poller, its span source) passes the dicts it has published by
reference: published state is never mutated afterwards, so a render reads it without copying
and without taking the source's lock. Names, help, type and unit are not carried here; the
encoder takes them from the catalog, so they cannot disagree with it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from exporter.aggregates import Aggregates, Exemplar, Labels
from exporter.native import NativeCell


@dataclass(frozen=True, slots=True)
class Series:
    """A counter's or a gauge's values by label values (the catalog says which it is).

    `prefix` holds the leading label values the source adds to every series (the database).
    """

    name: str
    values: Mapping[Labels, float]
    prefix: Labels = ()


@dataclass(frozen=True, slots=True)
class Histogram:
    """Cells as `Aggregates` keeps them: non-cumulative integer counts per bucket, the count
    above the last bound, then the sum. Exemplars are `{bucket index: exemplar}` per series.
    `native` holds the same observations' native buckets; only the protobuf format shows them.
    """

    name: str
    cells: Mapping[Labels, Sequence[float]]
    bounds: tuple[float, ...]
    prefix: Labels = ()
    exemplars: Mapping[Labels, Mapping[int, Exemplar]] = field(default_factory=dict)
    native: Mapping[Labels, NativeCell] = field(default_factory=dict)


Part = Series | Histogram


def from_aggregates(agg: Aggregates, prefix: Labels,
                    counter_names: tuple[str, ...] = ()) -> Iterator[Part]:
    """Every histogram and counter in `agg`; counters named in `counter_names` even if empty,
    so a counter is exported (at no series) before its first increment."""
    for name, cells in agg.histograms.items():
        yield Histogram(name, cells, agg.bounds[name], prefix, agg.exemplars.get(name, {}),
                        agg.native.get(name, {}))
    for name in sorted(set(agg.counters) | set(counter_names)):
        yield Series(name, agg.counters.get(name, {}), prefix)
