"""The exporter's own metrics, rendered at scrape time from the state they describe.

A custom collector, as client_python recommends for exporters: nothing is set on a global
metric object. Each database's poller keeps its `DatabaseHealth` (plain data) up to date and
the scrape renders what is true now, so the series of a table that was dropped, a collector
that was disabled or a database that was removed from the configuration disappear instead of
keeping their last value forever.

Counts that must survive a crash exactly (rows folded by the label cap, invalid rows) come
from the poller's checkpoint (`exporter.counts`); the rest describe the process and start
from zero with it, like any exporter's self-metrics.
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from exporter.catalog import metric
from exporter.counts import INVALID, Counts

POLL_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

SELF_METRICS = (
    "pggit_up",
    "pggit_exporter_collector_enabled",
    "pggit_exporter_collector_failing",
    "pggit_exporter_rows_read_total",
    "pggit_exporter_invalid_rows_total",
    "pggit_exporter_poll_duration_seconds",
    "pggit_exporter_lag_seconds",
    "pggit_exporter_pending_gaps",
    "pggit_exporter_errors_total",
    "pggit_exporter_label_overflow_total",
    "pggit_exporter_last_poll_success_timestamp_seconds",
    "pggit_exporter_spans_total",
    "pggit_exporter_span_queue_depth",
    "pggit_exporter_span_lease_held",
    "pggit_exporter_read_mode",
    "pggit_exporter_silences",
    "pggit_exporter_silence_sync_errors_total",
)

Labels = tuple[str, ...]
Samples = dict[str, dict[Labels, float]]
"""Values by metric name and full label values (database first)."""


class DatabaseHealth:
    """One database's poll state, as its poller last reported it.

    The poller calls the methods below from its thread; a scrape reads `samples()` from
    another, so every method swaps or updates under one lock.
    """

    def __init__(self, database: str):
        self.database = database
        self._lock = threading.Lock()
        self._up = False
        self._enabled: dict[str, bool] = {}
        self._failing: dict[str, str] = {}
        self._rows_read: dict[str, float] = {}
        self._pending: dict[str, float] = {}
        self._lag: dict[str, float] = {}
        self._errors: dict[tuple[str, str], float] = {}
        self._counts = Counts()
        self._last_success: float | None = None
        self._poll_cell = [0] * (len(POLL_BUCKETS) + 1) + [0.0]

    def contact(self, up: bool) -> None:
        """Whether the last contact with the database worked (`pggit_up`)."""
        with self._lock:
            self._up = up

    def error(self, stage: str, reason: str = "other", n: int = 1) -> None:
        with self._lock:
            key = (stage, reason)
            self._errors[key] = self._errors.get(key, 0) + n

    def collectors(self, enabled: Mapping[str, bool]) -> None:
        """Every collector of the database and whether it runs, after a discovery."""
        with self._lock:
            self._enabled = dict(enabled)
            self._failing = {c: m for c, m in self._failing.items() if enabled.get(c)}

    def failing(self, failing: Mapping[str, str]) -> None:
        """Collectors whose reads keep failing for a reason other than the connection, with
        the error."""
        with self._lock:
            self._failing = dict(failing)

    def polled(self, *, rows: Mapping[str, int], pending: Mapping[str, int],
               lag: Mapping[str, float], counts: Counts, took: float, at: float) -> None:
        """A poll was published. `pending` and `lag` hold exactly the tables read now: the
        tables of collectors that are disabled or failing vanish from every per-table series
        (their row counts are kept, in case they come back). `counts` is the checkpointed
        state, replaced whole."""
        with self._lock:
            for table, n in rows.items():
                self._rows_read[table] = self._rows_read.get(table, 0) + n
            self._pending = dict(pending)
            self._lag = dict(lag)
            self._counts = counts
            self._last_success = at
            self._poll_cell[bisect_left(POLL_BUCKETS, took)] += 1
            self._poll_cell[-1] += took

    def samples(self) -> tuple[Samples, list[float]]:
        """(series by metric name, the poll-duration histogram cell) as of now."""
        db = self.database
        with self._lock:
            tables = set(self._pending)
            enabled = dict(self._enabled)
            failing = set(self._failing)
            out: Samples = {
                "pggit_up": {(db,): 1.0 if self._up else 0.0},
                "pggit_exporter_collector_enabled": {
                    (db, c): 1.0 if on else 0.0 for c, on in enabled.items()},
                "pggit_exporter_collector_failing": {
                    (db, c): 1.0 if c in failing else 0.0 for c, on in enabled.items() if on},
                "pggit_exporter_rows_read_total": {
                    (db, t): n for t, n in self._rows_read.items() if t in tables},
                "pggit_exporter_pending_gaps": {(db, t): n for t, n in self._pending.items()},
                "pggit_exporter_lag_seconds": {(db, t): v for t, v in self._lag.items()},
                "pggit_exporter_errors_total": {(db, *k): n for k, n in self._errors.items()},
            }
            for name, series in self._counts.values.items():
                out[name] = {(db, *labels): v for labels, v in series.items()
                             if name != INVALID or labels[0] in tables}
            if self._last_success is not None:
                out["pggit_exporter_last_poll_success_timestamp_seconds"] = {
                    (db,): self._last_success}
            return out, list(self._poll_cell)


class _Child:
    """One series of a metric other components write to (the span sender, silences)."""

    def __init__(self, store: dict[Labels, float], labels: Labels, lock: threading.Lock):
        self._store, self._labels, self._lock = store, labels, lock
        with lock:
            store.setdefault(labels, 0.0)

    def inc(self, amount: float = 1.0) -> None:
        with self._lock:
            self._store[self._labels] = self._store.get(self._labels, 0.0) + amount

    def set(self, value: float) -> None:
        with self._lock:
            self._store[self._labels] = value


class _Family:
    def __init__(self, name: str, store: dict[Labels, float], lock: threading.Lock):
        self._names = metric(name).all_labels
        self._store, self._lock = store, lock

    def labels(self, *values: str, **by_name: str) -> _Child:
        if by_name:
            values = tuple(by_name[n] for n in self._names)
        if len(values) != len(self._names):
            raise ValueError(f"expected labels {self._names}, got {values}")
        return _Child(self._store, tuple(str(v) for v in values), self._lock)


class SelfMetrics(Collector):
    """The collector of every self-metric; registered on the exposition's registry.

    Databases report through their `DatabaseHealth`; components without one (the trace
    sender, the silence keeper) write through `self_metrics[name].labels(...)`, which keeps
    plain values here too. `remove(database)` forgets both, for a database taken out of the
    configuration.
    """

    def __init__(self, registry: CollectorRegistry | None = None):
        self._lock = threading.Lock()
        self._health: dict[str, DatabaseHealth] = {}
        self._written: dict[str, dict[Labels, float]] = {name: {} for name in SELF_METRICS}
        if registry is not None:
            registry.register(self)

    def database(self, name: str) -> DatabaseHealth:
        """The health a database's poller reports into (created on first use)."""
        with self._lock:
            health = self._health.get(name)
            if health is None:
                health = self._health[name] = DatabaseHealth(name)
            return health

    def remove(self, database: str) -> None:
        """Forget a database: every series labelled with it disappears."""
        with self._lock:
            self._health.pop(database, None)
            for series in self._written.values():
                for labels in [k for k in series if k and k[0] == database]:
                    del series[labels]

    def __getitem__(self, name: str) -> _Family:
        return _Family(name, self._written[name], self._lock)

    def describe(self) -> Iterable[Metric]:
        return ()

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            healths = list(self._health.values())
            merged: Samples = {name: dict(series) for name, series in self._written.items()}
        cells: dict[Labels, list[float]] = {}
        for health in healths:
            samples, cell = health.samples()
            cells[(health.database,)] = cell
            for name, series in samples.items():
                target = merged.setdefault(name, {})
                for labels, value in series.items():
                    target[labels] = target.get(labels, 0.0) + value
        for name in SELF_METRICS:
            spec = metric(name)
            if spec.kind == "histogram":
                yield _histogram(spec.name, spec.help, spec.all_labels, cells)
                continue
            family: Any = (CounterMetricFamily if spec.kind == "counter"
                           else GaugeMetricFamily)(spec.family, spec.help,
                                                   labels=spec.all_labels)
            for labels, value in sorted(merged[name].items()):
                family.add_metric(labels, value)
            yield family


def _histogram(name: str, help_text: str, label_names: tuple[str, ...],
               cells: Mapping[Labels, list[float]]) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, help_text, labels=label_names)
    for labels, cell in sorted(cells.items()):
        running, buckets = 0.0, []
        for bound, count in zip((*map(floatToGoString, POLL_BUCKETS), "+Inf"), cell[:-1],
                                strict=True):
            running += count
            buckets.append((bound, running))
        family.add_metric(labels, buckets, cell[-1])
    return family
