"""The recording rules the dashboards may name: the contract with `prometheus/rules/`.

Dashboards read precomputed rules where a panel shows a fleet-wide aggregate, because a
dashboard of 30 panels each running `histogram_quantile` over every bucket series is what makes
Grafana slow for everybody. The names below are agreed with the rules file; the tests check
every name a dashboard uses against this table and, when the rules file exists, that each one
is really recorded there.
"""

from __future__ import annotations

_OP = ("job", "database", "operation_type")
_BRANCH_OP = ("job", "database", "branch", "operation_type")
_PHASE = ("job", "database", "phase")


def _windows(prefix: str, suffixes: tuple[str, ...], labels: tuple[str, ...]
             ) -> dict[str, tuple[str, ...]]:
    return {f"{prefix}:{suffix}": labels for suffix in suffixes}


_QUANTILES = ("p50_5m", "p95_5m", "p99_5m", "p50_1h", "p95_1h", "p99_1h")

RECORDING_RULES: dict[str, tuple[str, ...]] = {
    **_windows("operation_type:pggit_operations", ("rate5m", "rate1h"), _OP),
    **_windows("operation_type:pggit_operation_errors", ("ratio_rate5m", "ratio_rate1h"), _OP),
    **_windows("operation_type:pggit_operation_duration_seconds", (*_QUANTILES, "mean5m"), _OP),
    **_windows("branch_operation_type:pggit_operations", ("rate5m",), _BRANCH_OP),
    **_windows("branch_operation_type:pggit_operation_errors", ("ratio_rate5m",), _BRANCH_OP),
    **_windows("branch_operation_type:pggit_operation_duration_seconds", _QUANTILES,
               _BRANCH_OP),
    **_windows("phase:pggit_merge_duration_seconds", _QUANTILES, _PHASE),
    "target_branch:pggit_merges:rate5m":
        ("job", "database", "source_branch", "target_branch", "status"),
    "target_branch:pggit_merge_duration_seconds:p99_5m":
        ("job", "database", "phase", "target_branch"),
}
"""Recording rule name -> the labels its result keeps (`sum by` these)."""

# Series Prometheus itself creates; dashboards may name them although no exporter serves them.
PROMETHEUS_SERIES: frozenset[str] = frozenset({"ALERTS", "up", "scrape_duration_seconds"})
