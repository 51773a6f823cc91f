"""The exporter's own counters that must be exact: kept with the checkpoint, not in memory.

Rows folded by the label cap and rows with values the exporter cannot map are counted while
a poll reads them, so they are counted in the poll's copy and saved in the same checkpoint as
the read position: a poll that fails and is read again, or a kill -9, counts each row once.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

Labels = tuple[str, ...]

OVERFLOW = "pggit_exporter_label_overflow_total"
INVALID = "pggit_exporter_invalid_rows_total"

NULL = "null"
NEGATIVE = "negative"
NOT_FINITE = "not_finite"
OUT_OF_RANGE = "out_of_range"
REASONS = (NULL, NEGATIVE, NOT_FINITE, OUT_OF_RANGE)
"""The `reason` label's values: a NULL where a value is needed, a negative duration, count
or time span, and +-infinity or NaN (timestamps and numerics accept them)."""


class Counts:
    """Counter values by catalog name and label values (without the database label)."""

    def __init__(self, values: Mapping[str, Mapping[Labels, float]] | None = None):
        self.values: dict[str, dict[Labels, float]] = {
            name: dict(series) for name, series in (values or {}).items()}

    def inc(self, name: str, labels: Labels, amount: float = 1) -> None:
        series = self.values.setdefault(name, {})
        series[labels] = series.get(labels, 0) + amount

    def copy(self) -> Counts:
        return Counts(self.values)

    def to_json(self) -> dict[str, Any]:
        return {name: [[list(k), v] for k, v in series.items()]
                for name, series in self.values.items()}

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> Counts:
        return cls({name: {tuple(k): float(v) for k, v in series}
                    for name, series in (data or {}).items()})
