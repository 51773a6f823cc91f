"""Metric families built from aggregates and gauges, with names and help from the catalog."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from prometheus_client.core import (
    CounterMetricFamily,
    Exemplar,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from exporter.aggregates import Aggregates, Labels
from exporter.catalog import metric


def _le(bound: float) -> str:
    return repr(float(bound))


def histogram(name: str, cells: Mapping[Labels, list[float]], bounds: tuple[float, ...],
              prefix: Labels = (), exemplars: Mapping[Labels, Mapping[int, tuple]] | None = None,
              ) -> HistogramMetricFamily:
    spec = metric(name)
    family = HistogramMetricFamily(spec.family, spec.help, labels=spec.all_labels,
                                   unit=spec.unit)
    les = [_le(b) for b in bounds] + ["+Inf"]
    for labels, cell in cells.items():
        ex = exemplars.get(labels, {}) if exemplars else {}
        running = 0
        buckets = []
        for i, le in enumerate(les):
            running += int(cell[i])
            e = ex.get(i)
            if e is not None:
                buckets.append((le, running, Exemplar({"trace_id": e[0]}, e[1], e[2])))
            else:
                buckets.append((le, running))
        family.add_metric(list(prefix + labels), buckets, cell[-1])
    return family


def counter(name: str, series: Mapping[Labels, float], prefix: Labels = ()
            ) -> CounterMetricFamily:
    spec = metric(name)
    family = CounterMetricFamily(spec.family, spec.help, labels=spec.all_labels, unit=spec.unit)
    for labels, value in series.items():
        family.add_metric(list(prefix + labels), value)
    return family


def gauge(name: str, series: Mapping[Labels, float], prefix: Labels = ()) -> GaugeMetricFamily:
    spec = metric(name)
    family = GaugeMetricFamily(spec.family, spec.help, labels=spec.all_labels, unit=spec.unit)
    for labels, value in series.items():
        family.add_metric(list(prefix + labels), value)
    return family


def from_aggregates(agg: Aggregates, prefix: Labels,
                    counter_names: tuple[str, ...] = ()) -> Iterator[Metric]:
    """Every histogram and counter in `agg`; counters named in `counter_names` even if empty."""
    for name, cells in agg.histograms.items():
        yield histogram(name, cells, agg.bounds[name], prefix, agg.exemplars.get(name))
    for name in sorted(set(agg.counters) | set(counter_names)):
        yield counter(name, agg.counters.get(name, {}), prefix)
