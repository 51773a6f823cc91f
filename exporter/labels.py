"""Label values made safe for Prometheus: bounded in length and in how many there are.

pgGit's operation types, branch names and span names are free text written by callers; one
buggy caller generating names must not turn into a cardinality explosion in Prometheus.

The values the cap folds are shown as `__other__`, and only they: a caller's own value that
looks like the fold value (`__other__`, `___other__`, ...) is shown with one more leading
underscore, so `{operation_type="__other__"}` in a query always means "folded by the cap".
Only `operation_type` is constrained by pgGit (non-blank); branch, span and job names are free
text, so no fold value could be one pgGit cannot produce for every label: escaping can.
"""

from __future__ import annotations

import copy
import hashlib
import re
from collections.abc import Callable, Iterable

OTHER = "__other__"
_LOOKS_FOLDED = re.compile(r"_*__other__")


def shorten(value: str, max_length: int) -> str:
    """Cut an over-long value, keeping a hash of the whole so distinct values stay distinct."""
    if len(value) <= max_length:
        return value
    digest = hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return value[: max_length - 9] + "~" + digest


def escape(value: str) -> str:
    """A caller's value as shown: never equal to OTHER, and distinct values stay distinct."""
    return "_" + value if _LOOKS_FOLDED.fullmatch(value) else value


Overflow = Callable[[str, int], None]


class LabelCap:
    """Admits at most `max_values` distinct values per label name; the rest become __other__.

    Admitted values are derived from the restored aggregates on restart (see `admit`), so the
    same value maps to the same series across restarts without a separate state file. The cap
    is shared by every reader of a database; each counts its folds where it keeps its own
    state (see `counting`), so the overflow counter is checkpointed with the rows it counts.
    """

    def __init__(self, max_values: int, max_length: int, on_overflow: Overflow | None = None):
        self.max_values = max_values
        self.max_length = max_length
        self.on_overflow = on_overflow
        self._admitted: dict[str, set[str]] = {}
        self._cache: dict[tuple[str, str], str] = {}

    def counting(self, on_overflow: Overflow) -> LabelCap:
        """The same cap (same admitted values), counting its folds with `on_overflow`."""
        view = copy.copy(self)
        view.on_overflow = on_overflow
        return view

    def admit(self, label: str, values: Iterable[str]) -> None:
        """Mark values as already exported (from a checkpoint); they never fold."""
        self._admitted.setdefault(label, set()).update(v for v in values if v != OTHER)

    def _shown(self, value: str) -> str:
        return escape(shorten(value, self.max_length))

    def peek(self, label: str, value: str | None) -> str:
        """The value a gauge shows, without admitting it or counting an overflow.

        Gauges are rebuilt at every refresh from lookup tables; letting them admit values
        would spend the cap on names no row ever carried and count a fold per refresh.
        """
        if value is None:
            return ""
        short = self._shown(value)
        admitted = self._admitted.get(label, set())
        return short if short in admitted or len(admitted) < self.max_values else OTHER

    def __call__(self, label: str, value: str | None, rows: int = 1) -> str:
        """The value `rows` rows carry (one, or an aggregated group); a fold counts them all."""
        shown, folded = self.fold(label, value)
        if folded:
            self.overflowed(label, rows)
        return shown

    def fold(self, label: str, value: str | None) -> tuple[str, bool]:
        """(value to show, whether it was folded into __other__), admitting it if there is room.

        Counting is left to the caller: a batch mapping resolves a label once per page and
        counts every row it folded with `overflowed`, as if each row had been capped alone.
        """
        if value is None:
            return "", False
        key = (label, value)
        cached = self._cache.get(key)
        if cached is not None:
            return cached, False
        short = self._shown(value)
        admitted = self._admitted.setdefault(label, set())
        if short not in admitted:
            if len(admitted) >= self.max_values:
                return OTHER, True
            admitted.add(short)
        if len(self._cache) < 100_000:
            self._cache[key] = short
        return short, False

    def overflowed(self, label: str, rows: int) -> None:
        if rows and self.on_overflow is not None:
            self.on_overflow(label, rows)
