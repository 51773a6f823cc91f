"""Prometheus text 0.0.4 and OpenMetrics 1.0.0, written straight from the exporter's data.

prometheus_client's encoder builds a Sample object per line and escapes and sorts every label
set again on every scrape: 120 ms for 660 label sets x 14 buckets (bench/bench_render.py).
Here the start of each line (sample name, sorted and escaped labels, `le`) is built once and
kept for as long as the series exists, so a render costs a running sum and a number format
per line. The bytes are the ones prometheus_client writes for the same families
(tests/test_expose_text.py holds them to it), so the page reads the same to every parser and
sits seamlessly beside the self-metrics prometheus_client still renders.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from prometheus_client.openmetrics.exposition import (
    UNDERSCORES,
    escape_label_name,
    escape_metric_name,
)
from prometheus_client.utils import floatToGoString

from exporter.aggregates import Exemplar, Labels
from exporter.catalog import Metric, metric
from exporter.expose.families import Histogram, Part, Series

SeriesKey = tuple[str, Labels]
StaticLabels = Mapping[str, Mapping[str, str]]
"""Constant labels by database name (`databases[].labels`), added to that database's series;
common labels (`replica`) go on every series."""
HistogramKey = tuple[str, Labels, tuple[float, ...]]


def _escape(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _count(count: int) -> str:
    """floatToGoString for a bucket count, from the integer's digits where they are exact.

    Below a million that is `123.0`. Up to 2**53 every integer is a float of its own, so
    the shortest digits that name it are its own, and Go's form is those digits as
    `d.ddd` with trailing zeros dropped and `e+NN`. Busy series have counts in the
    millions, and this keeps them as cheap as small ones.
    """
    if 0 <= count < 1_000_000:
        return f"{count}.0"
    if 1_000_000 <= count < 2**53:
        digits = str(count)
        mantissa = f"{digits[0]}.{digits[1:].rstrip('0')}".rstrip(".")
        return f"{mantissa}e+{len(digits) - 1:02d}"
    return floatToGoString(count)


def _le(bound: float) -> str:
    """`le` as the exporter has always written it (Python's repr, e.g. 0.0001, 60.0)."""
    return repr(float(bound))


class Encoder:
    """One format with one name escaping, keeping line starts from one render to the next.

    Not thread-safe: the exposition runs one render per encoder at a time. Starts of series
    that were not in a render are forgotten, so label sets that go away free their memory.
    Static labels are part of a series' start, so they cost nothing per render.
    """

    def __init__(self, openmetrics: bool, escaping: str = UNDERSCORES,
                 static_labels: StaticLabels | None = None,
                 common_labels: Mapping[str, str] | None = None):
        self.openmetrics = openmetrics
        self.escaping = escaping
        self.static_labels = static_labels or {}
        self.common_labels = tuple((common_labels or {}).items())
        self._headers: dict[str, str] = {}
        self._series_starts: dict[SeriesKey, dict[Labels, str]] = {}
        self._histogram_starts: dict[HistogramKey, dict[Labels, list[str]]] = {}

    def encode(self, parts: Iterable[Part]) -> bytes:
        """Every family once, in order of first appearance, with all parts of that name
        (one per database) under one header; families without series keep their header."""
        families: dict[str, list[Part]] = {}
        for part in parts:
            families.setdefault(part.name, []).append(part)
        out: list[str] = []
        series_starts: dict[SeriesKey, dict[Labels, str]] = {}
        histogram_starts: dict[HistogramKey, dict[Labels, list[str]]] = {}
        for name, group in families.items():
            spec = metric(name)
            header = self._headers.get(name)
            if header is None:
                header = self._headers[name] = self._header(spec)
            out.append(header)
            for part in group:
                if (spec.kind == "histogram") != isinstance(part, Histogram):
                    raise TypeError(f"{name} is a {spec.kind} in the catalog, "
                                    f"not a {type(part).__name__}")
                if isinstance(part, Histogram):
                    hkey = (name, part.prefix, part.bounds)
                    self._histogram(out, spec, part, self._histogram_starts.get(hkey, {}),
                                    histogram_starts.setdefault(hkey, {}))
                else:
                    skey = (name, part.prefix)
                    self._series(out, spec, part, self._series_starts.get(skey, {}),
                                 series_starts.setdefault(skey, {}))
        self._series_starts, self._histogram_starts = series_starts, histogram_starts
        return "".join(out).encode()

    def _header(self, spec: Metric) -> str:
        if spec.kind not in ("counter", "gauge", "histogram"):
            raise ValueError(f"{spec.name}: cannot expose a metric of kind {spec.kind}")
        esc = self.escaping
        if self.openmetrics:
            name = escape_metric_name(spec.family, esc)
            unit = f"# UNIT {name} {spec.unit}\n" if spec.unit else ""
            return f"# HELP {name} {_escape(spec.help)}\n# TYPE {name} {spec.kind}\n{unit}"
        name = escape_metric_name(spec.family + "_total" if spec.kind == "counter"
                                  else spec.family, esc)
        text = spec.help.replace("\\", r"\\").replace("\n", r"\n")
        return f"# HELP {name} {text}\n# TYPE {name} {spec.kind}\n"

    def _pairs(self, names: tuple[str, ...], values: Labels) -> list[tuple[str, str]]:
        """(name, value) sorted by name, with the database's static labels if it has any."""
        pairs = list(zip(names, values, strict=True))
        if self.static_labels and "database" in names:
            pairs += self.static_labels.get(values[names.index("database")], {}).items()
        return sorted(pairs + list(self.common_labels)) if self.common_labels else sorted(pairs)

    def _labels(self, pairs: list[tuple[str, str]]) -> list[str]:
        """`k="v"` pairs in the given (sorted) order, as prometheus_client writes them."""
        esc = self.escaping
        return [f'{escape_label_name(k, esc)}="{_escape(v)}"' for k, v in pairs]

    def _series(self, out: list[str], spec: Metric, part: Series, known: dict[Labels, str],
                kept: dict[Labels, str]) -> None:
        sample = escape_metric_name(spec.family + "_total" if spec.kind == "counter"
                                    else spec.family, self.escaping)
        names, prefix = spec.all_labels, part.prefix
        for labels, value in part.values.items():
            start = known.get(labels)
            if start is None:
                pairs = ",".join(self._labels(self._pairs(names, prefix + labels)))
                start = f"{sample}{{{pairs}}} " if pairs else f"{sample} "
            kept[labels] = start
            out.append(f"{start}{floatToGoString(value)}\n")

    def _bucket_starts(self, spec: Metric, les: list[str], values: Labels) -> list[str]:
        """One start per bucket (+Inf last), then `_count` and `_sum`; `le` is slotted into
        the sorted labels, which are escaped once for all of them."""
        esc = self.escaping
        sorted_pairs = self._pairs(spec.all_labels, values)
        pairs = self._labels(sorted_pairs)
        at = sum(name < "le" for name, _ in sorted_pairs)
        before = "".join(p + "," for p in pairs[:at])
        after = "".join("," + p for p in pairs[at:])
        bucket, le = escape_metric_name(spec.name + "_bucket", esc), escape_label_name("le", esc)
        starts = [f'{bucket}{{{before}{le}="{bound}"{after}}} ' for bound in les]
        plain = ",".join(pairs)
        for suffix in ("_count", "_sum"):
            starts.append(f"{escape_metric_name(spec.name + suffix, esc)}{{{plain}}} ")
        return starts

    def _histogram(self, out: list[str], spec: Metric, part: Histogram,
                   known: dict[Labels, list[str]], kept: dict[Labels, list[str]]) -> None:
        buckets = len(part.bounds) + 1
        les = [*map(_le, part.bounds), "+Inf"]
        exemplars = part.exemplars if self.openmetrics else {}
        for labels, cell in part.cells.items():
            starts = known.get(labels)
            if starts is None:
                starts = self._bucket_starts(spec, les, part.prefix + labels)
            kept[labels] = starts
            marks = exemplars.get(labels)
            running = 0
            for i in range(buckets):
                running += int(cell[i])
                if marks and i in marks:
                    out.append(f"{starts[i]}{_count(running)}{_exemplar(marks[i])}\n")
                else:
                    out.append(f"{starts[i]}{_count(running)}\n")
            out.append(f"{starts[buckets]}{_count(running)}\n")
            out.append(f"{starts[buckets + 1]}{floatToGoString(cell[-1])}\n")


def _exemplar(exemplar: Exemplar) -> str:
    """` # {trace_id="..."} value timestamp`, the OpenMetrics exemplar of a bucket line."""
    trace_id, value, timestamp = exemplar
    return f' # {{trace_id="{_escape(trace_id)}"}} {floatToGoString(value)} {timestamp}'

