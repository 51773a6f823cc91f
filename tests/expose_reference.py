"""The reference the direct encoder is held to: prometheus_client's own families and encoders.

This is how the exporter rendered /metrics before it had its own encoder: one
prometheus_client family per part, parts of the same name (one per database) merged into one
family, rendered by `generate_latest`. The tests and bench/bench_render.py compare against it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    Exemplar,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import generate_latest
from prometheus_client.openmetrics import exposition as openmetrics
from prometheus_client.openmetrics.exposition import UNDERSCORES

from exporter.catalog import metric
from exporter.expose.families import Histogram, Part


def family(part: Part) -> Metric:
    spec = metric(part.name)
    if isinstance(part, Histogram):
        out = HistogramMetricFamily(spec.family, spec.help, labels=spec.all_labels,
                                    unit=spec.unit)
        les = [repr(float(b)) for b in part.bounds] + ["+Inf"]
        for labels, cell in part.cells.items():
            marks = part.exemplars.get(labels, {})
            running = 0
            buckets: list[Any] = []
            for i, le in enumerate(les):
                running += int(cell[i])
                e = marks.get(i)
                if e is None:
                    buckets.append((le, running))
                else:
                    buckets.append((le, running, Exemplar({"trace_id": e[0]}, e[1], e[2])))
            out.add_metric(list(part.prefix + labels), buckets, cell[-1])
        return out
    cls = CounterMetricFamily if spec.kind == "counter" else GaugeMetricFamily
    series = cls(spec.family, spec.help, labels=spec.all_labels, unit=spec.unit)
    for labels, value in part.values.items():
        series.add_metric(list(part.prefix + labels), value)
    return series


def families(parts: Iterable[Part]) -> list[Metric]:
    """One family per name, in order of first appearance, samples of later parts appended."""
    merged: dict[str, Metric] = {}
    for part in parts:
        f = family(part)
        first = merged.get(f.name)
        if first is None:
            merged[f.name] = f
        else:
            first.samples.extend(f.samples)
    return list(merged.values())


class _Collector:
    def __init__(self, parts: list[Part]):
        self.parts = parts

    def collect(self) -> Iterator[Metric]:
        return iter(families(self.parts))


def registry(parts: Iterable[Part]) -> CollectorRegistry:
    out = CollectorRegistry(auto_describe=False)
    out.register(_Collector(list(parts)))
    return out


def render(parts: Iterable[Part], openmetrics_format: bool,
           escaping: str = UNDERSCORES) -> bytes:
    """What prometheus_client writes for these parts; OpenMetrics without the final # EOF,
    which the exposition adds once for the whole page."""
    if openmetrics_format:
        body = openmetrics.generate_latest(registry(parts), escaping=escaping)
        return body.removesuffix(b"# EOF\n")
    return generate_latest(registry(parts), escaping=escaping)
