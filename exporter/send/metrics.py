"""OTLP metrics: the series /metrics serves, pushed to an OTLP endpoint (off by default).

For stacks that ingest OTLP rather than scrape. The exporter's state is already aggregated
(cumulative counts since the state began), so no SDK instruments or aggregation are
involved: each push builds the SDK's metric data model straight from the published parts
and hands it to the official OTLP metric exporter, which owns the connection (endpoint,
TLS, headers, timeout, retries, `OTEL_EXPORTER_OTLP_METRICS_*`).

- The duration histograms go out as exponential histograms, from the native buckets: an
  OTLP exponential histogram at scale s is a native histogram at schema s with the bucket
  index shifted by one (OTLP's bucket i is (base^i, base^(i+1)], Prometheus' is
  (base^(i-1), base^i]). The zero bucket holds the 0 µs durations.
- Counters are cumulative monotonic sums (named without `_total`, as OTLP names them), gauges
  are gauges. The catalog's labels become data point attributes.
- What a database's series share goes on the resource, not on every point: one resource per
  database, with its static labels (`databases[].labels`) and the process's `replica`; the
  series of no database (build info, reload status) go on a resource with `replica` only.
  OTLP backends turn resource attributes into labels (or target info) themselves, so a point
  repeating them would only cost bytes on every push.
- Temporality is cumulative with the start time of this process: counts restored from the
  state file are part of the first push, as they are of the first scrape.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from urllib.parse import urlsplit

from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Buckets,
    ExponentialHistogram,
    ExponentialHistogramDataPoint,
    Gauge,
    Metric,
    MetricExporter,
    MetricExportResult,
    MetricsData,
    NumberDataPoint,
    ResourceMetrics,
    ScopeMetrics,
    Sum,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from exporter import __version__
from exporter.catalog import metric
from exporter.config import MetricsConfig
from exporter.expose.families import Histogram, Part
from exporter.native import NativeCell
from exporter.send.otlp import signal_protocol

log = logging.getLogger(__name__)

ENDPOINT_ENV = "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"
UNITS = {"seconds": "s", "bytes": "By"}
"""Prometheus unit suffixes in UCUM, as OTLP names units."""
SCOPE = InstrumentationScope("pggit-exporter", __version__)


def metrics_enabled(cfg: MetricsConfig, env: Mapping[str, str]) -> bool:
    """On when an endpoint is set in the YAML or in the metrics-specific OTLP variable; the
    general OTEL_EXPORTER_OTLP_ENDPOINT (set for traces) does not turn it on."""
    return bool(cfg.endpoint or env.get(ENDPOINT_ENV, "").strip())


def protocol(cfg: MetricsConfig, env: Mapping[str, str]) -> str:
    return signal_protocol(cfg.protocol, "metrics", env)


def build_exporter(cfg: MetricsConfig, env: Mapping[str, str] | None = None) -> MetricExporter:
    """The SDK's OTLP metric exporter for the protocol; unset fields fall to its env reading."""
    env = os.environ if env is None else env
    if protocol(cfg, env) == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter

        return OTLPMetricExporter(endpoint=cfg.endpoint, insecure=cfg.insecure,
                                  timeout=cfg.timeout)
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
        OTLPMetricExporter as HttpExporter,
    )

    endpoint = cfg.endpoint
    if endpoint is not None and urlsplit(endpoint).path in ("", "/"):
        endpoint = endpoint.rstrip("/") + "/v1/metrics"
    return HttpExporter(endpoint=endpoint, timeout=cfg.timeout)


def exponential_buckets(cell: NativeCell) -> Buckets:
    """The native buckets as OTLP's dense positive buckets (offset one lower, see above)."""
    if not cell.buckets:
        return Buckets(0, [])
    low, high = min(cell.buckets), max(cell.buckets)
    return Buckets(low - 1, [cell.buckets.get(i, 0) for i in range(low, high + 1)])


def resources(base: Mapping[str, str], static_labels: Mapping[str, Mapping[str, str]],
              common_labels: Mapping[str, str],
              databases: Iterable[str | None]) -> dict[str | None, Resource]:
    """The resource of each database (None: the process's series of no database).

    The static labels come first so that the exporter's own attributes win a clash, as on
    the trace resource (label names have no dots, so only a deliberate clash could).
    """
    out: dict[str | None, Resource] = {}
    for db in databases:
        attributes = {**(static_labels.get(db, {}) if db is not None else {}),
                      **common_labels, **base}
        if db is not None:
            attributes["pggit.database"] = db
        out[db] = Resource(attributes)
    return out


def _database(part: Part) -> str | None:
    """The database a part belongs to: sources put its name first in the prefix."""
    return part.prefix[0] if part.prefix and metric(part.name).per_database else None


def metrics_data(parts: Iterable[Part], resource: Mapping[str | None, Resource],
                 start_ns: int, now_ns: int) -> MetricsData:
    """Every part as OTLP metrics: one ResourceMetrics per database (by `_database`), in it
    one Metric per catalog name."""
    by_database: dict[str | None, list[Part]] = {}
    for part in parts:
        by_database.setdefault(_database(part), []).append(part)
    return MetricsData([
        ResourceMetrics(resource[db], [ScopeMetrics(SCOPE, _metrics(db_parts, start_ns, now_ns),
                                                    "")], "")
        for db, db_parts in by_database.items()])


def _metrics(parts: Iterable[Part], start_ns: int, now_ns: int) -> list[Metric]:
    points: dict[str, list[object]] = {}
    for part in parts:
        spec = metric(part.name)
        names = spec.all_labels
        out = points.setdefault(part.name, [])
        if isinstance(part, Histogram):
            for labels, cell in part.cells.items():
                native = part.native.get(labels)
                if native is None:
                    continue
                out.append(ExponentialHistogramDataPoint(
                    attributes=dict(zip(names, part.prefix + labels, strict=True)),
                    start_time_unix_nano=start_ns, time_unix_nano=now_ns,
                    count=int(sum(cell[:-1])), sum=float(cell[-1]), scale=native.schema,
                    zero_count=native.zero, positive=exponential_buckets(native),
                    negative=Buckets(0, []), flags=0, min=None, max=None))
        else:
            for labels, value in part.values.items():
                out.append(NumberDataPoint(
                    attributes=dict(zip(names, part.prefix + labels, strict=True)),
                    start_time_unix_nano=start_ns, time_unix_nano=now_ns, value=value))
    result = []
    for name, data_points in points.items():
        if not data_points:
            continue  # a counter before its first increment: OTLP has no empty metric
        spec = metric(name)
        if spec.kind == "histogram":
            data: object = ExponentialHistogram(data_points, AggregationTemporality.CUMULATIVE)
        elif spec.kind == "counter":
            data = Sum(data_points, AggregationTemporality.CUMULATIVE, is_monotonic=True)
        else:
            data = Gauge(data_points)
        result.append(Metric(spec.family if spec.kind == "counter" else spec.name, spec.help,
                             UNITS.get(spec.unit or "", ""), data))
    return result


class MetricsPusher:
    """A thread that pushes the published series every `interval`, and once more on stop."""

    def __init__(self, parts: Callable[[], Iterable[Part]], exporter: MetricExporter,
                 interval: float,
                 labels: Callable[[], tuple[Mapping[str, Mapping[str, str]],
                                            Mapping[str, str]]] = lambda: ({}, {})):
        """`labels` gives the static labels by database and the common ones (`replica`) at
        each push: a reload may change them."""
        self.parts = parts
        self.exporter = exporter
        self.interval = interval
        self.labels = labels
        self.base = dict(Resource.create({"service.name": "pggit-exporter",
                                          "service.version": __version__}).attributes)
        self.start_ns = time.time_ns()
        self.pushes = self.failures = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def push(self) -> bool:
        parts = list(self.parts())
        static_labels, common_labels = self.labels()
        data = metrics_data(parts, resources(self.base, static_labels, common_labels,
                                             {_database(part) for part in parts}),
                            self.start_ns, time.time_ns())
        try:
            ok = self.exporter.export(data) is MetricExportResult.SUCCESS
        except Exception as exc:  # the exporter's errors must not end the thread
            log.warning("OTLP metrics push failed: %s", exc)
            ok = False
        self.pushes += 1
        if not ok:
            self.failures += 1
            log.warning("OTLP metrics push was not accepted; the next push sends the totals")
        return ok

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.push()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="otlp-metrics", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.push()
        self.exporter.shutdown()
