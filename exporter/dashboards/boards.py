"""The eight pgGit dashboards: each answers the questions of the pgGit SQL views it names.

pgGit describes its monitoring as SQL views (`v_performance_dashboard_summary` and friends,
listed in shared/PGGIT_SCHEMA.md). SREs want the same answers where their other dashboards are,
so every panel says which view's question it answers. Where a view's answer needs data the
exporter does not serve as a metric (single rows, user names), the panel says what it shows
instead and where the rest lives (the trace backend, or pgGit's view itself).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from exporter.dashboards.grafana import (
    Board,
    Query,
    bargauge,
    dashboard_link,
    heatmap,
    piechart,
    sel,
    stat,
    table,
    text,
    timeseries,
)

RI = "[$__rate_interval]"
RANGE = "[$__range]"

UIDS = {
    "overview": "pggit-overview",
    "operation": "pggit-operation",
    "branches": "pggit-branches",
    "merges": "pggit-merges",
    "alerts": "pggit-alerts",
    "baselines": "pggit-baselines",
    "traces": "pggit-traces",
    "exporter": "pggit-exporter",
}

OP_RULE = "operation_type:pggit_operation_duration_seconds"
BRANCH_RULE = "branch_operation_type:pggit_operation_duration_seconds"
PHASE_RULE = "phase:pggit_merge_duration_seconds"
TARGET_P99 = "target_branch:pggit_merge_duration_seconds:p99_5m"
DURATION = "pggit_operation_duration_seconds"
SPAN = "pggit_span_duration_seconds"
MERGE = "pggit_merge_duration_seconds"

# Delivery statuses pgGit's notification log uses for a delivered message ('sent' in the
# deployed functions; 'success'/'delivered' in the seeds' drafts).
DELIVERED = 'status=~"sent|success|delivered"'
Q99 = 'quantile="0.99"'
ALL_BRANCHES = 'branch=""'
PHASES_ONLY = 'phase!="total"'
WHOLE_MERGE = 'phase="total"'
CRITICAL = 'severity="CRITICAL"'
THRESHOLD = 'alert_type="THRESHOLD_EXCEEDED"'
FAILED = 'status="FAILED"'

LINK_OPERATION = dashboard_link(UIDS["operation"], "Operation detail for ${__field.labels"
                                ".operation_type}", "operation_type")
LINK_BRANCH = dashboard_link(UIDS["branches"], "Branch ${__field.labels.branch}", "branch")


BASELINE_P99_ALL_BRANCHES = sel("pggit_baseline_duration_seconds", Q99, ALL_BRANCHES,
                                skip=("branch",))


def rate(series: str, *matchers: str, skip: tuple[str, ...] = (), window: str = RI) -> str:
    return f"rate({sel(series, *matchers, skip=skip)}{window})"


def increase(series: str, *matchers: str, skip: tuple[str, ...] = (), window: str = RANGE
             ) -> str:
    return f"increase({sel(series, *matchers, skip=skip)}{window})"


def quantile(q: float, histogram: str, by: str = "", *matchers: str, window: str = RI,
             skip: tuple[str, ...] = ()) -> str:
    """`histogram_quantile` over the buckets, aggregated `by` the given labels (plus le)."""
    group = f"{by}, le" if by else "le"
    return (f"histogram_quantile({q}, sum by ({group}) "
            f"({rate(histogram + '_bucket', *matchers, skip=skip, window=window)}))")


def mean(histogram: str, by: str = "", *matchers: str) -> str:
    group = f"sum by ({by}) " if by else "sum "
    return (f"{group}({rate(histogram + '_sum', *matchers)}) / "
            f"{group}({rate(histogram + '_count', *matchers)})")


def ratio(numerator: str, denominator: str, by: str = "") -> str:
    """A ratio of sums, never an average of ratios; 0 rather than no data when nothing failed."""
    group = f"sum by ({by}) " if by else "sum "
    return f"({group}({numerator}) or {group}({denominator}) * 0) / {group}({denominator})"


def overview() -> Board:
    b = Board(UIDS["overview"], "pgGit / Overview",
              "Operations, errors, latency, open alerts and baselines of every pgGit database.",
              ("overview",))
    count = DURATION + "_count"
    b.row("Summary")
    b.add(
        stat("Operations per second", "pgGit operations per second, all types and branches.",
             "v_performance_dashboard_summary (total_metrics_recorded), "
             "v_complete_system_overview", "ops",
             Query(f"sum({sel('operation_type:pggit_operations:rate5m')})")),
        stat("Error ratio", "Share of operations that recorded error_details.",
             "v_performance_dashboard_summary", "percentunit",
             Query(ratio(rate("pggit_operation_errors_total"), rate(count))),
             thresholds=[(None, "green"), (0.01, "orange"), (0.05, "red")]),
        stat("Operations recorded", "Operations pgGit recorded in the dashboard's time range.",
             "v_performance_dashboard_summary (total_metrics_recorded)", "short",
             Query(f"sum({increase(count)})")),
        stat("Spans recorded", "Spans that ended in the dashboard's time range.",
             "v_performance_dashboard_summary (total_traces)", "short",
             Query(f"sum({increase(SPAN + '_count')})")),
        stat("Unacknowledged alerts", "Open (unacknowledged) pgGit alerts.",
             "v_performance_dashboard_summary (unacknowledged_alerts)", "short",
             Query(f"sum({sel('pggit_alerts_open')}) or vector(0)"),
             thresholds=[(None, "green"), (1, "orange")]),
        stat("Active baselines", "Operation types (and branches) with an active baseline.",
             "v_performance_dashboard_summary (active_baselines)", "short",
             Query(f"count({sel('pggit_baseline_threshold_seconds')}) or vector(0)")),
    )
    b.row("Throughput and latency")
    b.add(
        timeseries("Operations per second by type",
                   "Rate of pgGit operations per operation type (recording rule, 5m).",
                   "v_performance_trend_hourly (execution_count)", "ops",
                   Query(f"sum by (operation_type) "
                         f"({sel('operation_type:pggit_operations:rate5m')})",
                         "{{operation_type}}"), links=[LINK_OPERATION]),
        timeseries("Error ratio by type",
                   "Errors divided by operations per type (recording rule, 5m).",
                   "v_performance_dashboard_summary", "percentunit",
                   Query(f"max by (operation_type) "
                         f"({sel('operation_type:pggit_operation_errors:ratio_rate5m')})",
                         "{{operation_type}}"), links=[LINK_OPERATION]),
        timeseries("Latency p50 / p95 / p99, all operations",
                   "Quantiles of all operations selected, from the duration histogram.",
                   "v_performance_trend_hourly (avg_ms, p99_ms)", "s",
                   *(Query(quantile(q, DURATION), f"p{int(q * 100)}")
                     for q in (0.5, 0.95, 0.99)),
                   Query(mean(DURATION), "mean")),
        timeseries("p99 by operation type",
                   "99th percentile duration per operation type (recording rule, 5m).",
                   "v_performance_trend_hourly (p99_ms)", "s",
                   Query(f"max by (operation_type) ({sel(OP_RULE + ':p99_5m')})",
                         "{{operation_type}}"), links=[LINK_OPERATION]),
        timeseries("Executions per hour by type",
                   "Operations per hour per type, averaged over the last hour.",
                   "v_performance_trend_hourly (execution_count per hour)", "short",
                   Query(f"sum by (operation_type) "
                         f"({sel('operation_type:pggit_operations:rate1h')}) * 3600",
                         "{{operation_type}}")),
        timeseries("Hourly p99 by type",
                   "99th percentile over the last hour, per operation type.",
                   "v_performance_trend_hourly (p99_ms)", "s",
                   Query(f"max by (operation_type) ({sel(OP_RULE + ':p99_1h')})",
                         "{{operation_type}}")),
    )
    b.row("Alerts and slow operations")
    b.add(
        timeseries("Open alerts by severity",
                   "Unacknowledged pgGit alerts by their current (possibly escalated) severity.",
                   "v_performance_dashboard_summary (unacknowledged_alerts, critical_alerts)",
                   "short",
                   Query(f"sum by (severity) ({sel('pggit_alerts_open')})", "{{severity}}"),
                   stack=True, width=8),
        bargauge("Slowest operation types (p99, 24h)",
                 "Operation types ranked by their 99th percentile over the last 24 hours. "
                 "Single slow rows (with user names) stay in pgGit's view and in the traces.",
                 "v_slowest_operations_last_24h", "s",
                 Query("topk(10, " + quantile(0.99, DURATION, "operation_type", window="[24h]")
                       + ")",
                       "{{operation_type}}", instant=True),
                 width=8, links=[LINK_OPERATION]),
        bargauge("p99 over baseline p99",
                 "Current p99 divided by the active all-branch baseline p99; above 1 is slower "
                 "than the baseline.",
                 "v_slowest_operations_last_24h (percent_over_baseline)", "percentunit",
                 Query(f"topk(10, max by (operation_type) ({sel(OP_RULE + ':p99_5m')}) / "
                       f"max by (operation_type) ({BASELINE_P99_ALL_BRANCHES}))",
                       "{{operation_type}}", instant=True),
                 width=8, thresholds=[(None, "green"), (1.0, "orange"), (2.0, "red")],
                 links=[LINK_OPERATION]),
    )
    b.add(text("Per-user activity",
               "Per-user activity (v_user_performance_activity) is not exported as metrics.\n\n"
               "A user label would give one series per user, an unbounded label set, so the "
               "exporter has none in its catalog. User names travel as span attributes when "
               "the operator enables them (`traces.user_name` in the exporter config): look "
               "a user up in the trace backend (Traces dashboard). Only an operator who has "
               "added an opt-in user label of their own would see per-user panels here.",
               "v_user_performance_activity"))
    return b


def operation() -> Board:
    b = Board(UIDS["operation"], "pgGit / Operation detail",
              "One pgGit operation type: latency distribution with trace exemplars, p99 "
              "against its baseline and alert threshold, violations, errors, CPU and rows.",
              ("operation",), single_operation_type=True)
    count = DURATION + "_count"
    b.row("Latency")
    b.add(
        heatmap("Latency heatmap",
                "Distribution of operation durations from the histogram buckets. "
                "performance_metrics rows carry no trace id, so the trace links are on the "
                "span heatmap beside it.",
                "v_operation_performance_summary (p50_ms, p99_ms, min_ms, max_ms)",
                Query(f"sum by (le) ({increase(DURATION + '_bucket', window=RI)})"),
                width=12, height=9),
        heatmap("Span durations with trace exemplars",
                "Distribution of this operation's span durations. Exemplar dots carry the "
                "OTLP trace id: click one to open that trace in the trace backend.",
                "v_trace_hierarchy (duration_ms) for this operation type",
                Query(f"sum by (le) ({increase(SPAN + '_bucket', window=RI)})"),
                width=12, height=9),
        timeseries("p99 against baseline and alert threshold",
                   "Observed p99 with the active baseline's p99 and its alert threshold "
                   "(p99 times alert_threshold_multiplier) drawn as lines. Above the threshold "
                   "pgGit writes THRESHOLD_EXCEEDED alerts.",
                   "v_operation_performance_summary (p99_ms, baseline_p99_ms, status), "
                   "v_operation_performance_trend (p99_ms, baseline_ratio)", "s",
                   Query(quantile(0.99, DURATION), "observed p99"),
                   Query(f"max({sel('pggit_baseline_duration_seconds', Q99)})",
                         "baseline p99"),
                   Query(f"max({sel('pggit_baseline_threshold_seconds')})", "alert threshold"),
                   width=12, height=9),
        timeseries("p50 / p95 / p99 and mean",
                   "Quantiles and mean of the selected operation type (recording rules, 5m).",
                   "v_operation_performance_summary (avg_ms, p50_ms, p99_ms)", "s",
                   *(Query(f"max({sel(f'{OP_RULE}:{q}_5m')})", q) for q in ("p50", "p95", "p99")),
                   Query(f"max({sel(OP_RULE + ':mean5m')})", "mean"),
                   width=12, height=9),
    )
    b.row("Volume, violations, errors and resources")
    b.add(
        stat("Executions", "Operations of this type in the dashboard's time range.",
             "v_operation_performance_summary (execution_count)", "short",
             Query(f"sum({increase(count)})"), width=6),
        stat("Baseline violations", "Operations slower than their baseline's alert threshold "
             "in the time range.", "v_operation_performance_summary (status)", "short",
             Query(f"sum({increase('pggit_operation_baseline_violations_total')})"),
             width=6, thresholds=[(None, "green"), (1, "orange")]),
        stat("Errors", "Operations that recorded error_details in the time range.",
             "v_operation_performance_summary", "short",
             Query(f"sum({increase('pggit_operation_errors_total')})"), width=6,
             thresholds=[(None, "green"), (1, "red")]),
        stat("Baseline samples", "sample_count of the active baseline(s).",
             "v_operation_performance_summary (baseline_p99_ms)", "short",
             Query(f"max({sel('pggit_baseline_samples')})"), width=6),
        timeseries("Operations and violations per second",
                   "Rate of operations and of baseline violations, by branch.",
                   "v_operation_performance_summary (execution_count, status)", "ops",
                   Query(f"sum by (branch) ({rate(count)})", "ops {{branch}}"),
                   Query(f"sum by (branch) ({rate('pggit_operation_baseline_violations_total')})",
                         "violations {{branch}}"), width=8),
        timeseries("Errors per second", "Rate of operations that recorded error_details.",
                   "v_operation_performance_summary", "ops",
                   Query(f"sum by (branch) ({rate('pggit_operation_errors_total')})",
                         "{{branch}}"), width=8),
        timeseries("CPU and rows",
                   "CPU seconds per second the operations reported (cores busy) and rows "
                   "affected per second.", "v_operation_performance_summary", "short",
                   Query(f"sum({rate('pggit_operation_cpu_seconds_total')})", "CPU cores"),
                   Query(f"sum({rate('pggit_operation_rows_affected_total')})", "rows/s"),
                   width=8),
        table("Active baselines",
              "Percentiles of the active baselines for this operation type; branch empty means "
              "the all-branch baseline.", "v_operation_performance_summary (baseline_p99_ms)",
              "s",
              Query(f"max by (operation_type, branch, quantile) "
                    f"({sel('pggit_baseline_duration_seconds')})"),
              width=24, height=6),
    )
    return b


def branches() -> Board:
    b = Board(UIDS["branches"], "pgGit / Branches",
              "pgGit operations per branch: volume, latency, errors, top branches.",
              ("branches",))
    count = DURATION + "_count"
    b.row("Per branch")
    b.add(
        timeseries("Operations per second by branch", "Rate of operations per branch.",
                   "v_branch_performance_summary (operation_count)", "ops",
                   Query(f"sum by (branch) "
                         f"({sel('branch_operation_type:pggit_operations:rate5m')})",
                         "{{branch}}"), width=8, links=[LINK_BRANCH]),
        timeseries("p99 by branch", "99th percentile duration per branch, all types selected.",
                   "v_branch_performance_summary (p99_ms)", "s",
                   Query(quantile(0.99, DURATION, "branch"), "{{branch}}"), width=8,
                   links=[LINK_BRANCH]),
        timeseries("Mean duration by branch", "Mean operation duration per branch.",
                   "v_branch_performance_summary (avg_duration_ms)", "s",
                   Query(mean(DURATION, "branch"), "{{branch}}"), width=8),
        timeseries("Error ratio by branch", "Errors divided by operations, per branch.",
                   "v_branch_performance_summary", "percentunit",
                   Query(ratio(rate("pggit_operation_errors_total"), rate(count), "branch"),
                         "{{branch}}"), width=12),
        timeseries("p99 by branch and operation type",
                   "99th percentile per branch and type (recording rule, 5m).",
                   "v_branch_performance_summary (p99_ms)", "s",
                   Query(f"max by (branch, operation_type) ({sel(BRANCH_RULE + ':p99_5m')})",
                         "{{branch}} {{operation_type}}"), width=12),
    )
    b.row("Top branches")
    b.add(
        bargauge("Top branches by p99", "Branches ranked by 99th percentile over the time range.",
                 "v_branch_performance_summary (p99_ms)", "s",
                 Query(f"topk(10, {quantile(0.99, DURATION, 'branch', window=RANGE)})",
                       "{{branch}}", instant=True), width=8, links=[LINK_BRANCH]),
        bargauge("Top branches by volume", "Branches ranked by operations in the time range.",
                 "v_branch_performance_summary (operation_count)", "short",
                 Query(f"topk(10, sum by (branch) ({increase(count)}))", "{{branch}}",
                       instant=True), width=8, links=[LINK_BRANCH]),
        bargauge("Operation types per branch",
                 "Distinct operation types each branch ran in the time range.",
                 "v_branch_performance_summary (operation_types)", "short",
                 Query(f"count by (branch) (sum by (branch, operation_type) "
                       f"({increase(count)}) > 0)", "{{branch}}", instant=True), width=8),
        table("Branch summary",
              "Per branch: operations in the time range, mean and p99 over the time range.",
              "v_branch_performance_summary", "short",
              Query(f"sum by (branch) ({increase(count)})"),
              Query(f"sum by (branch) ({increase(DURATION + '_sum')}) / "
                    f"sum by (branch) ({increase(count)})"),
              Query(quantile(0.99, DURATION, "branch", window=RANGE)),
              width=24, height=8),
    )
    return b


def merges() -> Board:
    b = Board(UIDS["merges"], "pgGit / Merges",
              "pgGit merges: which phase is the bottleneck, success by branch pair, phase "
              "timeline, conflicts and auto-resolution.", ("merges",))
    b.row("Merges")
    b.add(
        stat("Merges in range", "Completed merges in the dashboard's time range.",
             "v_merge_statistics (merge_count)", "short",
             Query(f"sum({increase('pggit_merges_total')})"), width=6),
        stat("Success rate", "Share of completed merges with status SUCCESS.",
             "v_merge_statistics (successful_merges, failed_merges)", "percentunit",
             Query(ratio(increase("pggit_merges_total", 'status="SUCCESS"'),
                         increase("pggit_merges_total"))), width=6,
             thresholds=[(None, "red"), (0.8, "orange"), (0.95, "green")]),
        stat("Auto-resolution success rate", "Successful conflict auto-resolution attempts "
             "divided by all attempts.", "v_merge_performance_summary "
             "(auto_resolution_success_rate)", "percentunit",
             Query(ratio(increase("pggit_merge_auto_resolutions_total", 'result="success"'),
                         increase("pggit_merge_auto_resolutions_total"))), width=6),
        stat("Merges running", "Merges started and not yet completed.",
             "v_merge_performance_summary (completed_at IS NULL)", "short",
             Query(f"sum({sel('pggit_merges_running')})"), width=6),
    )
    b.row("Phases")
    b.add(
        piechart("Time spent per phase",
                 "Share of merge time spent in merge-base calculation, conflict detection and "
                 "auto-resolution: the largest slice is the bottleneck.",
                 "v_merge_bottleneck_analysis (Week 3 merge dashboard 1)", "s",
                 Query(f"sum by (phase) ({increase(MERGE + '_sum', PHASES_ONLY)})",
                       "{{phase}}", instant=True), width=8),
        timeseries("Phase p99 (phase timeline)",
                   "99th percentile per merge phase and of whole merges (recording rule, 5m).",
                   "v_merge_phase_timeline (p99_ms)", "s",
                   Query(f"max by (phase) ({sel(PHASE_RULE + ':p99_5m')})", "{{phase}}"),
                   width=8),
        timeseries("Phase p50 / p95, hourly",
                   "Median and 95th percentile per phase over the last hour.",
                   "v_merge_phase_timeline (p50_ms, p90_ms)", "s",
                   Query(f"max by (phase) ({sel(PHASE_RULE + ':p50_1h')})", "p50 {{phase}}"),
                   Query(f"max by (phase) ({sel(PHASE_RULE + ':p95_1h')})", "p95 {{phase}}"),
                   width=8),
        timeseries("Mean phase duration",
                   "Mean time per merge phase: the highest line is where merges wait.",
                   "v_merge_performance_summary (merge_base_calc_ms, conflict_detect_ms, "
                   "auto_resolution_ms)", "s",
                   Query(mean(MERGE, "phase"), "{{phase}}"), stack=False, width=12),
        timeseries("Merge p99 by target branch",
                   "99th percentile of whole merges per target branch (recording rule, 5m).",
                   "v_merge_statistics (max_duration_ms)", "s",
                   Query(f"max by (target_branch) ({sel(TARGET_P99, WHOLE_MERGE)})",
                         "{{target_branch}}"), width=12),
    )
    b.row("Branch pairs and conflicts")
    b.add(
        timeseries("Merges per second by status", "Rate of completed merges by merge_status.",
                   "v_merge_statistics (successful_merges, failed_merges)", "ops",
                   Query(f"sum by (status) ({sel('target_branch:pggit_merges:rate5m')})",
                         "{{status}}"), stack=True, width=12),
        timeseries("Conflicts per merge by branch pair",
                   "Conflicts found divided by merges completed, per source and target branch.",
                   "v_merge_conflict_analysis (avg_conflicts, Week 3 merge dashboard 4)",
                   "short",
                   Query(f"sum by (source_branch, target_branch) "
                         f"({rate('pggit_merge_conflicts_total')}) / "
                         f"sum by (source_branch, target_branch) ({rate('pggit_merges_total')})",
                         "{{source_branch}} → {{target_branch}}"), width=12),
        table("Success rate by branch pair",
              "Merges, success rate and conflicts per source/target pair in the time range.",
              "v_merge_statistics, v_merge_success_tracking (Week 3 merge dashboard 2)",
              "short",
              Query(f"sum by (source_branch, target_branch) ({increase('pggit_merges_total')})"),
              Query(ratio(increase("pggit_merges_total", 'status="SUCCESS"'),
                          increase("pggit_merges_total"), "source_branch, target_branch")),
              Query(f"sum by (source_branch, target_branch) "
                    f"({increase('pggit_merge_conflicts_total')})"),
              width=12, height=8),
        timeseries("Auto-resolution attempts", "Conflict auto-resolution attempts by result.",
                   "v_merge_performance_summary (total_conflicts_resolved)", "ops",
                   Query(f"sum by (result) ({rate('pggit_merge_auto_resolutions_total')})",
                         "{{result}}"), stack=True, width=12, height=8),
    )
    return b


def alerts() -> Board:
    b = Board(UIDS["alerts"], "pgGit / Alerts and notifications",
              "pgGit's own alerts, their acknowledgement, the notification queue and "
              "deliveries, snoozes, and the Prometheus alerts firing for pgGit.", ("alerts",))
    b.row("Alerts")
    b.add(
        stat("Open critical alerts", "Unacknowledged alerts of severity CRITICAL.",
             "v_performance_alerts_critical", "short",
             Query(f"sum({sel('pggit_alerts_open', CRITICAL)}) or vector(0)"),
             thresholds=[(None, "green"), (1, "red")], width=6),
        stat("Oldest unacknowledged alert", "Time since the oldest open alert was created: "
             "the acknowledgement delay so far. Per-alert response times stay in pgGit's view.",
             "v_performance_alerts_critical (minutes_unacknowledged), v_alert_response_sla",
             "s", Query(f"time() - min({sel('pggit_alerts_oldest_open_timestamp_seconds')})"),
             thresholds=[(None, "green"), (900, "orange"), (3600, "red")], width=6),
        stat("Prometheus alerts firing", "pgGit alerts firing in Prometheus now.",
             "v_performance_alerts_critical", "short",
             Query('count(ALERTS{alertname=~"Pggit.*", alertstate="firing"}) or vector(0)'),
             thresholds=[(None, "green"), (1, "red")], width=6),
        stat("Active snoozes", "pgGit snoozes in force (alert_snooze active, not expired).",
             "v_snoozed_alerts_audit", "short",
             Query(f"sum({sel('pggit_alert_snoozes_active')}) or vector(0)"), width=6),
        timeseries("Alerts created per minute by severity",
                   "pgGit alerts created, by the severity they were created with.",
                   "v_performance_alerts_recent", "cpm",
                   Query(f"sum by (severity) ({rate('pggit_alerts_total')}) * 60",
                         "{{severity}}"), stack=True, width=12),
        timeseries("Open alerts by operation type",
                   "Unacknowledged alerts per operation type and severity.",
                   "v_performance_alerts_recent (is_acknowledged), v_alert_frequency_by_operation "
                   "(currently_unacknowledged)", "short",
                   Query(f"sum by (operation_type, severity) ({sel('pggit_alerts_open')})",
                         "{{operation_type}} {{severity}}"), stack=True, width=12),
        bargauge("Alert frequency by operation",
                 "Alerts created per operation type in the dashboard's time range.",
                 "v_alert_frequency_by_operation", "short",
                 Query(f"sort_desc(sum by (operation_type) ({increase('pggit_alerts_total')}))",
                       "{{operation_type}}", instant=True), width=8, links=[LINK_OPERATION]),
        table("Unacknowledged alerts",
              "Open alerts per operation, type and severity, and how long the oldest waits.",
              "v_performance_alerts_recent, v_performance_alerts_critical", "short",
              Query(f"sum by (operation_type, alert_type, severity) "
                    f"({sel('pggit_alerts_open')})"),
              Query(f"time() - min by (operation_type, alert_type, severity) "
                    f"({sel('pggit_alerts_oldest_open_timestamp_seconds')})"),
              width=16),
    )
    b.row("Notifications")
    queue = "pggit_notification_queue_depth"
    deliveries = "pggit_notification_deliveries_total"
    b.add(
        timeseries("Notification queue by status", "Items in pgGit's notification queue.",
                   "v_notification_queue_health, v_alert_escalation_queue, v_pending_alerts",
                   "short", Query(f"sum by (status) ({sel(queue)})", "{{status}}"),
                   stack=True, width=8),
        timeseries("Oldest pending notification",
                   "Age of the oldest pending or retrying notification; no data when none "
                   "waits.", "v_pending_alerts (hours_pending), v_notification_queue_health "
                   "(max_age_minutes)", "s",
                   Query(f"max({sel('pggit_notification_queue_oldest_pending_age_seconds')})",
                         "oldest pending"), width=8),
        timeseries("Delivery success rate by channel",
                   "Delivered notification attempts divided by all attempts, per channel.",
                   "v_alert_delivery_success_rate (success_rate_pct), v_alert_delivery_summary",
                   "percentunit",
                   Query(ratio(rate(deliveries, DELIVERED), rate(deliveries), "channel"),
                         "{{channel}}"), width=8),
        timeseries("Deliveries per second", "Delivery attempts by channel and status.",
                   "v_alert_delivery_summary (delivered, failed)", "ops",
                   Query(f"sum by (channel, status) ({rate(deliveries)})",
                         "{{channel}} {{status}}"), stack=True, width=12),
        timeseries("Mean delivery time by channel", "Time per delivery attempt, per channel.",
                   "v_alert_delivery_success_rate (avg_success_delivery_ms)", "s",
                   Query(f"sum by (channel) "
                         f"({rate('pggit_notification_delivery_seconds_total')}) / "
                         f"sum by (channel) ({rate(deliveries)})", "{{channel}}"), width=12),
    )
    b.row("Snoozes and Prometheus alerts")
    b.add(
        table("Active snoozes", "Snoozes in force per operation type and alert type.",
              "v_snoozed_alerts_audit", "short",
              Query(f"sum by (operation_type, alert_type) "
                    f"({sel('pggit_alert_snoozes_active')}) > 0"), width=8),
        table("Prometheus alerts firing for pgGit",
              "Alerts named Pggit* that Prometheus is firing now, with their labels.",
              "v_performance_alerts_critical", "short",
              Query('ALERTS{alertname=~"Pggit.*", alertstate="firing"}'),
              hide=("Time", "Value", "__name__", "alertstate"), width=16),
    )
    return b


def baselines() -> Board:
    b = Board(UIDS["baselines"], "pgGit / Baselines and anomalies",
              "Baseline health and change impact, recalculation and job health, anomalies and "
              "correlated bottlenecks.", ("baselines",))
    b.row("Baselines")
    b.add(
        table("Active baselines",
              "Active baseline per operation type and branch: p99, threshold, samples and age.",
              "v_baseline_health", "short",
              Query(f"max by (operation_type, branch) "
                    f"({sel('pggit_baseline_duration_seconds', Q99)})"),
              Query(f"max by (operation_type, branch) "
                    f"({sel('pggit_baseline_threshold_seconds')})"),
              Query(f"max by (operation_type, branch) ({sel('pggit_baseline_samples')})"),
              Query(f"time() - max by (operation_type, branch) "
                    f"({sel('pggit_baseline_calculated_timestamp_seconds')})"),
              width=24, height=8),
        timeseries("Baseline p99 over time", "p99 of the active baseline per operation type.",
                   "v_baseline_health (p99_ms)", "s",
                   Query(f"max by (operation_type, branch) "
                         f"({sel('pggit_baseline_duration_seconds', Q99)})",
                         "{{operation_type}} {{branch}}"), width=12),
        timeseries("Threshold alerts per minute", "THRESHOLD_EXCEEDED alerts per operation "
                   "type: how often the baseline's threshold fires.",
                   "v_baseline_health (alerts_generated)", "cpm",
                   Query(f"sum by (operation_type) "
                         f"({rate('pggit_alerts_total', THRESHOLD)})"
                         " * 60", "{{operation_type}}"), width=12),
    )
    b.row("Change impact and recalculation")
    b.add(
        bargauge("Baseline changes by direction",
                 "Recalculations in the time range by direction of the p99 change.",
                 "v_baseline_change_impact (improvements, degradations), v_baseline_recalc_health",
                 "short",
                 Query(f"sum by (operation_type, direction) "
                       f"({increase('pggit_baseline_changes_total')}) > 0",
                       "{{operation_type}} {{direction}}", instant=True), width=8),
        timeseries("Last p99 change", "Relative p99 change of the newest recalculation "
                   "(0.1 = 10 % slower).", "v_baseline_change_impact (avg_change_pct)",
                   "percentunit",
                   Query(f"max by (operation_type) ({sel('pggit_baseline_last_change_ratio')})",
                         "{{operation_type}}"), width=8),
        timeseries("Time since last successful recalculation",
                   "Per operation type; a rising line is a recalculation that stopped working.",
                   "v_baseline_recalc_execution_health (hours_since_last, health_status)", "s",
                   Query(f"time() - max by (operation_type) "
                         f"({sel('pggit_baseline_recalculation_last_success_timestamp_seconds')})",
                         "{{operation_type}}"), width=8),
        timeseries("Recalculation runs by status", "Finished baseline recalculation runs.",
                   "v_baseline_recalc_execution_health (execution_count_30d, status)", "ops",
                   Query(f"sum by (status) ({rate('pggit_baseline_recalculations_total')})",
                         "{{status}}"), stack=True, width=8),
        timeseries("Scheduled job runs by status", "Finished scheduled job runs per job.",
                   "v_job_health_dashboard, v_job_execution_summary", "ops",
                   Query(f"sum by (job_name, status) "
                         f"({rate('pggit_scheduled_job_runs_total')})",
                         "{{job_name}} {{status}}"), stack=True, width=8),
        timeseries("Time since last successful job run", "Per scheduled job.",
                   "v_job_health_dashboard (hours_since_last_run), v_upcoming_scheduled_jobs",
                   "s",
                   Query(f"time() - max by (job_name) "
                         f"({sel('pggit_scheduled_job_last_success_timestamp_seconds')})",
                         "{{job_name}}"), width=8),
    )
    b.row("Anomalies and correlations")
    b.add(
        timeseries("Anomalies per minute by type and severity", "Anomalies pgGit detected.",
                   "v_recent_anomalies, v_anomaly_summary_by_operation", "cpm",
                   Query(f"sum by (anomaly_type, severity) ({rate('pggit_anomalies_total')})"
                         " * 60", "{{anomaly_type}} {{severity}}"), stack=True, width=12),
        bargauge("Anomalies by operation type", "Anomalies per operation type and type of "
                 "anomaly in the time range.",
                 "v_anomaly_summary_by_operation, v_anomaly_false_positive_analysis "
                 "(anomaly_count)", "short",
                 Query(f"sum by (operation_type, anomaly_type) "
                       f"({increase('pggit_anomalies_total')}) > 0",
                       "{{operation_type}} {{anomaly_type}}", instant=True), width=12),
        bargauge("Active correlations by bottleneck",
                 "Active performance correlations per shared bottleneck and severity.",
                 "v_active_correlations, v_bottleneck_summary, v_correlated_operation_graph",
                 "short",
                 Query(f"sum by (shared_bottleneck, severity) "
                       f"({sel('pggit_correlations_active')})",
                       "{{shared_bottleneck}} {{severity}}", instant=True), width=24, height=6),
    )
    return b


def traces() -> Board:
    b = Board(UIDS["traces"], "pgGit / Traces",
              "pgGit's spans (operation_traces): durations by operation and span name, "
              "failures, running spans, and links into the trace backend.", ("traces",))
    explore = ("/explore?schemaVersion=1&panes=%7B%22pggit%22:%7B%22datasource%22:"
               "%22${traces_datasource}%22,%22queries%22:%5B%7B%22refId%22:%22A%22,"
               "%22queryType%22:%22traceqlSearch%22,%22datasource%22:%7B%22type%22:%22tempo"
               "%22,%22uid%22:%22${traces_datasource}%22%7D%7D%5D,%22range%22:%7B%22from%22:"
               "%22now-1h%22,%22to%22:%22now%22%7D%7D%7D&orgId=1")
    b.add(text("Trace backend",
               f"Whole traces (the span tree of v_trace_hierarchy, with user and session "
               f"attributes) live in the trace backend: [open a trace search]({explore}). "
               f"Exemplar dots on the heatmap below link to single traces.",
               "v_trace_hierarchy (trace_path, depth)", height=3))
    b.add(
        heatmap("Span duration heatmap",
                "Distribution of ended span durations; exemplars carry the OTLP trace id.",
                "v_trace_hierarchy (duration_ms)",
                Query(f"sum by (le) ({increase(SPAN + '_bucket', window=RI)})"),
                width=24, height=9),
        timeseries("Span p99 by operation and span name",
                   "99th percentile per operation type and span name.",
                   "v_trace_hierarchy (span_name, duration_ms)", "s",
                   Query(quantile(0.99, SPAN, "operation_type, span_name"),
                         "{{operation_type}} / {{span_name}}"), width=12),
        timeseries("Spans per second by status", "Ended spans by span_status.",
                   "v_trace_hierarchy (span_status)", "ops",
                   Query(f"sum by (status) ({rate(SPAN + '_count')})", "{{status}}"),
                   stack=True, width=12),
        timeseries("Failed spans per second", "Spans that ended FAILED, per operation type.",
                   "v_trace_hierarchy (span_status = 'FAILED')", "ops",
                   Query(f"sum by (operation_type) ({rate(SPAN + '_count', FAILED)}) or "
                         f"sum by (operation_type) ({rate(SPAN + '_count')}) * 0",
                         "{{operation_type}}"), width=8),
        timeseries("Running spans", "Spans still RUNNING, per operation type; a line that "
                   "only grows is callers that crashed mid-span.",
                   "v_trace_hierarchy (span_status = 'RUNNING')", "short",
                   Query(f"sum by (operation_type) ({sel('pggit_spans_running')})",
                         "{{operation_type}}"), width=8),
        table("Slowest span names", "Span names by p99 over the time range.",
              "v_trace_hierarchy", "s",
              Query("topk(10, " + quantile(0.99, SPAN, "operation_type, span_name",
                                           window=RANGE) + ")"), width=8),
    )
    return b


def exporter_board() -> Board:
    b = Board(UIDS["exporter"], "pgGit / Exporter",
              "The exporter itself: is it up, how far behind, how long polls take, rows read, "
              "gaps, errors, label overflow and spans.", ("exporter",))
    fresh = "v_monitoring_dashboard_freshness"
    health = "v_monitoring_system_health"
    b.row("Health")
    b.add(
        stat("Database reachable", "1 when the last contact with the database worked.",
             health, "bool_yes_no",
             Query(f"min({sel('pggit_up')})"), thresholds=[(None, "red"), (1, "green")],
             width=6),
        stat("Scrape up", "Prometheus reached the exporter.", health, "bool_yes_no",
             Query(f"min({sel('up')})"), thresholds=[(None, "red"), (1, "green")], width=6),
        stat("Since last successful poll", "Time since a poll of the database last succeeded.",
             fresh + " (minutes_since_update)", "s",
             Query(f"time() - min({sel('pggit_exporter_last_poll_success_timestamp_seconds')})"),
             thresholds=[(None, "green"), (60, "orange"), (300, "red")], width=6),
        stat("Version", "The exporter's version (build info).", health, "none",
             Query(f"count by (version) ({sel('pggit_exporter_build_info')})", "{{version}}",
                   instant=True), width=6, text_mode="name"),
        timeseries("Lag by table", "Now minus the time of the newest row read, per table: how "
                   "far the dashboards are behind pgGit.", fresh + " (minutes_since_update)",
                   "s", Query(f"max by (table) ({sel('pggit_exporter_lag_seconds')})",
                              "{{table}}"), width=12),
        timeseries("Poll duration", "Wall time of one poll (all tables, one snapshot).",
                   health, "s",
                   Query(quantile(0.5, "pggit_exporter_poll_duration_seconds", "database"),
                         "p50 {{database}}"),
                   Query(quantile(0.99, "pggit_exporter_poll_duration_seconds", "database"),
                         "p99 {{database}}"), width=12),
    )
    b.row("Reading")
    b.add(
        timeseries("Rows read per second", "Rows read from each pgGit table.", health, "ops",
                   Query(f"sum by (table) ({rate('pggit_exporter_rows_read_total')})",
                         "{{table}}"), stack=True, width=8),
        timeseries("Pending gaps", "Ids below the read position not yet visible (open or "
                   "rolled-back transactions) plus rows waiting to finish.", health, "short",
                   Query(f"max by (table) ({sel('pggit_exporter_pending_gaps')})", "{{table}}"),
                   width=8),
        timeseries("Errors per second by stage", "connect, discover, read, checkpoint, send.",
                   health, "ops",
                   Query(f"sum by (stage) ({rate('pggit_exporter_errors_total')})", "{{stage}}"),
                   stack=True, width=8),
        timeseries("Label overflow", "Rows whose label value was folded into __other__ by "
                   "the label cap: raise max_label_values or fix the caller.", health, "ops",
                   Query(f"sum by (label) ({rate('pggit_exporter_label_overflow_total')})",
                         "{{label}}"), width=8),
        table("Collectors enabled", "1 when the collector found its pgGit table and columns; "
              "0 means that table is missing in this database (older pgGit).", health, "none",
              Query(f"max by (database, collector) "
                    f"({sel('pggit_exporter_collector_enabled')})"), width=8),
        timeseries("Alertmanager silences", "Silences kept in step with pgGit snoozes, and "
                   "failed sync attempts per second.", "v_snoozed_alerts_audit", "short",
                   Query(f"sum({sel('pggit_exporter_silences')})", "silences"),
                   Query(f"sum({rate('pggit_exporter_silence_sync_errors_total')})",
                         "sync errors/s"), width=8),
    )
    b.row("Spans")
    b.add(
        timeseries("Spans handled per second", "Spans the OTLP sender exported, dropped "
                   "or failed to send.", health, "ops",
                   Query(f"sum by (result) ({rate('pggit_exporter_spans_total')})",
                         "{{result}}"), stack=True, width=12),
        timeseries("Span queue depth", "Spans waiting to be sent to the OTLP endpoint.",
                   health, "short",
                   Query(f"sum({sel('pggit_exporter_span_queue_depth')})", "queued"),
                   width=12),
    )
    return b


BOARDS: dict[str, Callable[[], Board]] = {
    "overview": overview,
    "operation": operation,
    "branches": branches,
    "merges": merges,
    "alerts": alerts,
    "baselines": baselines,
    "traces": traces,
    "exporter": exporter_board,
}


def render_all() -> dict[str, dict[str, Any]]:
    """File stem -> dashboard JSON, for every dashboard, in a stable order."""
    return {f"pggit-{name}": build().to_json() for name, build in BOARDS.items()}
