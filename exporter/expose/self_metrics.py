"""The exporter's own metrics, as prometheus_client objects built from the catalog.

They describe the process (errors, polls, spans sent) rather than pgGit's data, so they
live in memory and start from zero with the process, like any exporter's self-metrics.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from exporter.catalog import metric

POLL_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

SELF_METRICS = (
    "pggit_up",
    "pggit_exporter_collector_enabled",
    "pggit_exporter_rows_read_total",
    "pggit_exporter_poll_duration_seconds",
    "pggit_exporter_lag_seconds",
    "pggit_exporter_pending_gaps",
    "pggit_exporter_errors_total",
    "pggit_exporter_label_overflow_total",
    "pggit_exporter_last_poll_success_timestamp_seconds",
    "pggit_exporter_spans_total",
    "pggit_exporter_span_queue_depth",
    "pggit_exporter_invalid_rows_total",
    "pggit_exporter_read_mode",
    "pggit_exporter_silences",
    "pggit_exporter_silence_sync_errors_total",
)


class SelfMetrics:
    """Lookup by catalog name: `self_metrics["pggit_exporter_errors_total"].labels(...)`."""

    def __init__(self, registry: CollectorRegistry):
        self._metrics: dict[str, Counter | Gauge | Histogram] = {}
        for name in SELF_METRICS:
            spec = metric(name)
            kwargs = {"labelnames": spec.all_labels, "registry": registry}
            if spec.kind == "counter":
                self._metrics[name] = Counter(spec.family, spec.help, **kwargs)
            elif spec.kind == "histogram":
                self._metrics[name] = Histogram(spec.name, spec.help, buckets=POLL_BUCKETS,
                                                **kwargs)
            else:
                self._metrics[name] = Gauge(spec.name, spec.help, **kwargs)

    def __getitem__(self, name: str) -> Counter | Gauge | Histogram:
        return self._metrics[name]
