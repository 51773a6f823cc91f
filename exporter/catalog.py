"""The metric catalog: every metric the exporter serves, defined once.

Names, label sets and help texts are a contract with the Prometheus rules, the Grafana
dashboards, the README table and users' own queries. Everything else (the collector, the
rule renderer, the dashboard generator and the tests) reads them from here, so a renamed
metric breaks a test instead of silently breaking a dashboard.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from exporter.connect_errors import REASONS

Kind = Literal["counter", "gauge", "histogram", "info"]

DATABASE = "database"


@dataclass(frozen=True)
class Metric:
    """One exported metric family.

    `labels` excludes the `database` label, which every pgGit-derived series carries so that
    one exporter can serve several databases without the series colliding.
    """

    name: str
    kind: Kind
    help: str
    labels: tuple[str, ...]
    source: str
    per_database: bool = True

    @property
    def unit(self) -> str:
        """The OpenMetrics unit, taken from the name so the two cannot disagree."""
        base = self.name.removesuffix("_total")
        for unit in ("seconds", "bytes", "ratio"):
            if base.endswith("_" + unit):
                return unit
        return ""

    @property
    def family(self) -> str:
        """The family name prometheus_client expects (counters without `_total`)."""
        return self.name.removesuffix("_total") if self.kind == "counter" else self.name

    @property
    def all_labels(self) -> tuple[str, ...]:
        return ((DATABASE,) if self.per_database else ()) + self.labels


OP = ("operation_type", "branch")
ALERT = ("operation_type", "alert_type", "severity")
BASELINE = ("operation_type", "branch")

_METRICS: tuple[Metric, ...] = (
    # performance_metrics
    Metric("pggit_operation_duration_seconds", "histogram",
           "Duration of pgGit operations, from performance_metrics.duration_microseconds.",
           OP, "performance_metrics"),
    Metric("pggit_operation_errors_total", "counter",
           "pgGit operations that recorded error_details.", OP, "performance_metrics"),
    Metric("pggit_operation_cpu_seconds_total", "counter",
           "CPU time pgGit operations reported (cpu_microseconds).", OP, "performance_metrics"),
    Metric("pggit_operation_rows_affected_total", "counter",
           "Rows affected that pgGit operations reported.", OP, "performance_metrics"),
    Metric("pggit_operation_baseline_violations_total", "counter",
           "Operations slower than p99 times the multiplier of the baseline in force when the "
           "row was written (the exporter's mirror of check_performance_baseline()).",
           OP, "performance_metrics"),
    # performance_operation_types
    Metric("pggit_operation_type_info", "gauge",
           "The operation types pgGit knows, with their category and whether they are tracked.",
           ("operation_type", "category", "tracked"), "performance_operation_types"),
    # performance_baselines (active rows only)
    Metric("pggit_baseline_duration_seconds", "gauge",
           "Percentiles of the active baseline; branch=\"\" for all-branch baselines.",
           (*BASELINE, "quantile"), "performance_baselines"),
    Metric("pggit_baseline_threshold_seconds", "gauge",
           "Alert threshold of the active baseline: p99 times alert_threshold_multiplier.",
           BASELINE, "performance_baselines"),
    Metric("pggit_baseline_alert_threshold_multiplier", "gauge",
           "alert_threshold_multiplier of the active baseline.", BASELINE,
           "performance_baselines"),
    Metric("pggit_baseline_samples", "gauge",
           "sample_count the active baseline was calculated from.", BASELINE,
           "performance_baselines"),
    Metric("pggit_baseline_mean_seconds", "gauge",
           "Mean duration in the active baseline.", BASELINE, "performance_baselines"),
    Metric("pggit_baseline_stddev_seconds", "gauge",
           "Standard deviation of durations in the active baseline.", BASELINE,
           "performance_baselines"),
    Metric("pggit_baseline_calculated_timestamp_seconds", "gauge",
           "When the active baseline was calculated (Unix time).", BASELINE,
           "performance_baselines"),
    # performance_alerts
    Metric("pggit_alerts_total", "counter",
           "Alerts pgGit created, by the severity they were created with.", ALERT,
           "performance_alerts"),
    Metric("pggit_alerts_open", "gauge",
           "Unacknowledged alerts, by their current (possibly escalated) severity.", ALERT,
           "performance_alerts"),
    Metric("pggit_alerts_oldest_open_timestamp_seconds", "gauge",
           "Creation time of the oldest unacknowledged alert (Unix time).", ALERT,
           "performance_alerts"),
    # merge_performance_metrics
    Metric("pggit_merge_duration_seconds", "histogram",
           "Duration of merge phases (merge_base, conflict_detection, auto_resolution) and of "
           "whole merges (total).", ("phase", "status", "target_branch"),
           "merge_performance_metrics"),
    Metric("pggit_merges_total", "counter", "Completed merges.",
           ("source_branch", "target_branch", "status"), "merge_performance_metrics"),
    Metric("pggit_merge_conflicts_total", "counter", "Conflicts found in completed merges.",
           ("source_branch", "target_branch"), "merge_performance_metrics"),
    Metric("pggit_merge_auto_resolutions_total", "counter",
           "Conflict auto-resolution attempts in completed merges.", ("result",),
           "merge_performance_metrics"),
    Metric("pggit_merges_running", "gauge", "Merges started and not yet completed.", (),
           "merge_performance_metrics"),
    # later tables
    Metric("pggit_anomalies_total", "counter", "Anomalies pgGit detected.",
           ("operation_type", "anomaly_type", "severity"), "performance_anomalies"),
    Metric("pggit_notification_queue_depth", "gauge",
           "Items in pgGit's alert notification queue, by status.", ("status",),
           "alert_notification_queue"),
    Metric("pggit_notification_queue_oldest_pending_age_seconds", "gauge",
           "Age of the oldest pending or retrying notification; absent when none waits.", (),
           "alert_notification_queue"),
    Metric("pggit_notification_deliveries_total", "counter",
           "Notification delivery attempts pgGit logged, by channel (webhook_type) and status.",
           ("channel", "status"), "alert_notification_log"),
    Metric("pggit_notification_delivery_seconds_total", "counter",
           "Time pgGit spent delivering notifications (delivery_time_ms).",
           ("channel", "status"), "alert_notification_log"),
    Metric("pggit_baseline_recalculations_total", "counter",
           "Finished baseline recalculation runs.", ("operation_type", "status"),
           "baseline_recalc_execution"),
    Metric("pggit_baseline_recalculation_last_success_timestamp_seconds", "gauge",
           "End of the newest successful baseline recalculation (Unix time).",
           ("operation_type",), "baseline_recalc_execution"),
    Metric("pggit_baseline_changes_total", "counter",
           "Baseline recalculations recorded in the history, by direction of the p99 change.",
           ("operation_type", "direction"), "performance_baseline_history"),
    Metric("pggit_baseline_last_change_ratio", "gauge",
           "Relative p99 change of the newest recalculation (0.1 = 10 % slower).",
           ("operation_type",), "performance_baseline_history"),
    Metric("pggit_scheduled_job_runs_total", "counter", "Finished scheduled job runs.",
           ("job_name", "status"), "scheduled_job_execution"),
    Metric("pggit_scheduled_job_last_success_timestamp_seconds", "gauge",
           "End of the newest successful run of a scheduled job (Unix time).", ("job_name",),
           "scheduled_job_execution"),
    Metric("pggit_alert_snoozes_active", "gauge",
           "Active pgGit snoozes (alert_snooze rows active and not yet expired).",
           ("operation_type", "alert_type"), "alert_snooze"),
    Metric("pggit_correlations_active", "gauge",
           "Active performance correlations, by shared bottleneck and severity.",
           ("shared_bottleneck", "severity"), "performance_correlations"),
    # operation_traces
    Metric("pggit_span_duration_seconds", "histogram",
           "Duration of ended pgGit spans; exemplars carry the OTLP trace id.",
           ("operation_type", "span_name", "status"), "operation_traces"),
    Metric("pggit_spans_running", "gauge", "Spans still RUNNING.", ("operation_type",),
           "operation_traces"),
    # the exporter itself
    Metric("pggit_up", "gauge", "1 if the last contact with the database worked, else 0.", (),
           "exporter"),
    Metric("pggit_exporter_build_info", "gauge", "Version of the exporter; always 1.",
           ("version", "python_version"), "exporter", per_database=False),
    Metric("pggit_exporter_collector_enabled", "gauge",
           "1 if the collector found its pgGit table and columns and is not disabled in the "
           "configuration, else 0.", ("collector",), "exporter"),
    Metric("pggit_exporter_collector_failing", "gauge",
           "1 while an enabled collector's reads keep failing for a reason other than the "
           "connection (it is skipped and retried with backoff), else 0.", ("collector",),
           "exporter"),
    Metric("pggit_exporter_rows_read_total", "counter",
           "Rows read from pgGit tables (tables of running collectors only).", ("table",),
           "exporter"),
    Metric("pggit_exporter_invalid_rows_total", "counter",
           "Row values the exporter could not map as they are (reason null where a value is "
           "needed, negative, not_finite for +-infinity or NaN, out_of_range for times a span "
           "cannot carry), one per row and column; the row's other values are "
           "counted as usual. Kept in the checkpoint.", ("table", "reason"), "exporter"),
    Metric("pggit_exporter_poll_duration_seconds", "histogram",
           "Wall time of one poll of a database (all tables, one snapshot).", (), "exporter"),
    Metric("pggit_exporter_lag_seconds", "gauge",
           "Now minus the time of the newest row read from the table (tables of running "
           "collectors only; +-infinity times are left out).", ("table",), "exporter"),
    Metric("pggit_exporter_pending_gaps", "gauge",
           "Ids below the read position not yet visible (open transactions or rollbacks), "
           "plus rows waiting to finish.", ("table",), "exporter"),
    Metric("pggit_exporter_errors_total", "counter",
           "Errors by stage (connect, discover, read, checkpoint, send) and reason: "
           + ", ".join(REASONS) + ".", ("stage", "reason"), "exporter"),
    Metric("pggit_exporter_label_overflow_total", "counter",
           "Rows whose label value was folded into __other__ by the label cap. Kept in the "
           "checkpoint.", ("label",), "exporter"),
    Metric("pggit_exporter_last_poll_success_timestamp_seconds", "gauge",
           "When a poll of the database last succeeded (Unix time).", (), "exporter"),
    Metric("pggit_exporter_spans_total", "counter",
           "Spans handed to the OTLP sender, by result: exported; dropped (no room in "
           "the queue, or given up); timed_out (sent while still running); unguarded (a span "
           "lease standby held more than half of queue_size spans the holder had not "
           "announced, and let the oldest go: they are lost if the holder dies before sending "
           "them).",
           ("result",), "exporter"),
    Metric("pggit_exporter_span_queue_depth", "gauge",
           "Spans waiting to be sent to the OTLP endpoint.", (), "exporter"),
    Metric("pggit_exporter_span_lease_held", "gauge",
           "1 while this exporter holds the database's span lease and so is the one sending "
           "its spans; 0 on a standby.", (), "exporter"),
    Metric("pggit_exporter_read_mode", "gauge",
           "1 for the method that reads the source's changes (start_time_window needs "
           "pg_read_all_stats; periodic_full_scan is the SELECT-only fallback).",
           ("source", "mode"), "exporter"),
    Metric("pggit_exporter_silences", "gauge",
           "Alertmanager silences the exporter keeps in step with pgGit snoozes.", (),
           "exporter"),
    Metric("pggit_exporter_silence_sync_errors_total", "counter",
           "Failed attempts to keep Alertmanager silences in step with pgGit snoozes.", (),
           "exporter"),
    Metric("pggit_exporter_config_last_reload_successful", "gauge",
           "1 if the configuration and web config files on disk are in force, 0 if the last "
           "reload or web config re-read was rejected.", (), "exporter", per_database=False),
    Metric("pggit_exporter_config_last_reload_success_timestamp_seconds", "gauge",
           "When the configuration was last loaded successfully (Unix time).", (), "exporter",
           per_database=False),
)

METRICS: dict[str, Metric] = {m.name: m for m in _METRICS}


def metric(name: str) -> Metric:
    """Look a metric up by its exposed name, failing loudly on a typo."""
    try:
        return METRICS[name]
    except KeyError:
        raise KeyError(f"metric {name!r} is not in the catalog") from None


def exposed_series_names(m: Metric) -> tuple[str, ...]:
    """Every sample name a family produces, for checking PromQL that names them."""
    if m.kind == "histogram":
        return (m.name + "_bucket", m.name + "_sum", m.name + "_count")
    return (m.name,)


def markdown_table() -> str:
    """The README's metric table, generated so it cannot drift from the code."""
    lines = ["| metric | type | labels | from | help |", "|---|---|---|---|---|"]
    for m in _METRICS:
        labels = ", ".join(m.all_labels)
        lines.append(f"| `{m.name}` | {m.kind} | {labels} | {m.source} | {m.help} |")
    return "\n".join(lines)
