"""performance_baselines -> baseline gauges, and the history used to judge violations.

pgGit judges each metric against the newest active baseline (NULL or matching branch) at
insert time. To mirror that for rows read later, and for old rows on backfill, the exporter
keeps every baseline with its calculation time and picks the newest one calculated at or
before the row was written, so an old row is never judged by today's baseline.
"""

from __future__ import annotations

from bisect import bisect_right
from decimal import Decimal
from typing import Any

from exporter.map.base import Context, Gauges, Mapping
from exporter.read import performance_baselines as read
from exporter.read.spec import Row

QUANTILES = (("0.5", 5), ("0.75", 6), ("0.9", 7), ("0.95", 8), ("0.99", 9))


class BaselineHistory:
    """Thresholds per operation type ordered by calculation time."""

    def __init__(self) -> None:
        self.signature: tuple[Any, ...] | None = None
        self._times: dict[str, list[float]] = {}
        self._rows: dict[str, list[tuple[int | None, Decimal]]] = {}
        self.min_threshold: dict[str, Decimal] = {}

    def load(self, rows: list[tuple[str, int | None, float, int, Decimal]]) -> None:
        """Rows of (operation_type, branch_id, calculated epoch, p99 µs, multiplier)."""
        times: dict[str, list[float]] = {}
        entries: dict[str, list[tuple[int | None, Decimal]]] = {}
        minimum: dict[str, Decimal] = {}
        for op, branch_id, calculated, p99, multiplier in sorted(rows, key=lambda r: r[2]):
            threshold = Decimal(p99) * (Decimal(2) if multiplier is None else multiplier)
            if threshold.is_nan():
                # A 'NaN' multiplier passes pgGit's CHECK (> 0): no duration is greater than
                # NaN in PostgreSQL, so pgGit never alerts on such a baseline, and neither do we.
                threshold = Decimal("Infinity")
            times.setdefault(op, []).append(calculated)
            entries.setdefault(op, []).append((branch_id, threshold))
            minimum[op] = min(minimum.get(op, threshold), threshold)
        self._times, self._rows, self.min_threshold = times, entries, minimum

    def threshold_at(self, op: str, branch_id: int | None, at: float) -> Decimal | None:
        """The threshold of the baseline pgGit would have used for a row written at `at`."""
        times = self._times.get(op)
        if not times:
            return None
        rows = self._rows[op]
        for i in range(bisect_right(times, at) - 1, -1, -1):
            b, threshold = rows[i]
            if b is None or b == branch_id:
                return threshold
        return None


class PerformanceBaselines(Mapping):
    collector = "performance_baselines"
    table = "performance_baselines"
    needs = frozenset({"operation_type", "branch_id", "calculation_timestamp", "is_active",
                       "sample_count", "p50_microseconds", "p75_microseconds",
                       "p90_microseconds", "p95_microseconds", "p99_microseconds",
                       "mean_microseconds", "stddev_microseconds",
                       "alert_threshold_multiplier"})
    read_gauges = staticmethod(read.gauge_rows)

    def __init__(self) -> None:
        # Refreshed by the read stage each poll (exporter.read.performance_baselines).
        self.history = BaselineHistory()

    def gauges(self, ctx: Context, rows: list[Row]) -> Gauges:
        out: Gauges = {name: {} for name in (
            "pggit_baseline_duration_seconds", "pggit_baseline_threshold_seconds",
            "pggit_baseline_alert_threshold_multiplier", "pggit_baseline_samples",
            "pggit_baseline_mean_seconds", "pggit_baseline_stddev_seconds",
            "pggit_baseline_calculated_timestamp_seconds")}
        for row in rows:
            op, branch_id, calculated, samples, multiplier = row[:5]
            multiplier = float(2 if multiplier is None else multiplier)
            labels = (ctx.gauge_label("operation_type", op),
                      "" if branch_id is None else ctx.gauge_branch(branch_id))
            for quantile, i in QUANTILES:
                out["pggit_baseline_duration_seconds"][(*labels, quantile)] = row[i] / 1e6
            out["pggit_baseline_threshold_seconds"][labels] = row[9] * multiplier / 1e6
            out["pggit_baseline_alert_threshold_multiplier"][labels] = multiplier
            out["pggit_baseline_samples"][labels] = samples
            out["pggit_baseline_mean_seconds"][labels] = float(row[10]) / 1e6
            if row[11] is not None:
                out["pggit_baseline_stddev_seconds"][labels] = float(row[11]) / 1e6
            out["pggit_baseline_calculated_timestamp_seconds"][labels] = calculated
        return out
