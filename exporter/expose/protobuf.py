"""The protobuf exposition: length-delimited `io.prometheus.client.MetricFamily` messages.

Prometheus asks for it first when it runs with `--enable-feature=native-histograms`, and it
is the only format that carries native histograms (text and OpenMetrics 1.0 cannot). Every
histogram is sent with its classic buckets (with their exemplars) and its native buckets, so
the same page serves Prometheus with and without the feature.

The wire format is written here directly (varints, fixed 64-bit doubles, length-prefixed
messages; the schema is client_model's metrics.proto) rather than through generated message
classes: the protobuf runtime would need a compiled descriptor the project does not ship, and
like the text encoder this keeps bytes from one render to the next: each series' labels, its
whole message while its values stay the same, and a native cell's fields until it changes
(bench/bench_native.py measures renders with all, a tenth and none of the series changed).
tests/test_expose_protobuf.py decodes the output with the protobuf runtime against
metrics.proto's descriptor, and the real Prometheus reads it.
"""

from __future__ import annotations

import math
import re
import struct
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache
from itertools import accumulate, chain, repeat
from operator import sub
from typing import Any

from prometheus_client.registry import Collector

from exporter.aggregates import Exemplar, Labels
from exporter.catalog import metric
from exporter.expose.families import Histogram, Part, Series
from exporter.native import ZERO_THRESHOLD, NativeCell
from exporter.otlp.encode import varint as _varint

CONTENT_TYPE = ("application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; "
                "encoding=delimited")
_MEDIA_TYPE = "application/vnd.google.protobuf"

COUNTER, GAUGE, SUMMARY, UNTYPED, HISTOGRAM = 0, 1, 2, 3, 4
_TYPES = {"counter": COUNTER, "gauge": GAUGE, "histogram": HISTOGRAM, "summary": SUMMARY,
          "info": GAUGE, "stateset": GAUGE, "gaugehistogram": 5, "unknown": UNTYPED}

_pack_double = struct.Struct("<d").pack
_SMALL = [bytes((n,)) for n in range(128)]
_ZERO_THRESHOLD = b"\x31" + _pack_double(ZERO_THRESHOLD)
"""Field 6 (zero_threshold), a double: the same bytes in every histogram."""


def accepts(accept: str | None) -> bool:
    """Whether the Accept header prefers the delimited MetricFamily protobuf over the rest.

    The media range must name both the message and the delimited encoding (other protobuf
    messages are not ours to answer), and its q must be at least every other range's.
    """
    best_other = 0.0
    ours = 0.0
    for item in (accept or "").split(","):
        media, *params = (p.strip() for p in item.split(";"))
        values = dict(p.partition("=")[::2] for p in params)
        try:
            q = float(values.get("q", "1"))
        except ValueError:
            q = 0.0
        if (media.lower() == _MEDIA_TYPE
                and values.get("proto") == "io.prometheus.client.MetricFamily"
                and values.get("encoding") == "delimited"):
            ours = max(ours, q)
        elif media:
            best_other = max(best_other, q)
    return ours > 0 and ours >= best_other


_VARINTS = [_varint(n) for n in range(1 << 14)]
_DELTA_BYTES = {d: _VARINTS[(d << 1) ^ (d >> 63)] for d in range(-(1 << 13), 1 << 13)}
"""sint64 deltas that fit two bytes, zigzag-encoded, by value: neighbouring buckets differ
little, so nearly every delta a render writes is looked up here rather than built."""
_GAP = {1: 1, 2: 2, 3: 3}
_APART = re.compile(b"[^\x01-\x03]")
"""Where two hit buckets are in different spans (see _full_layout)."""
_BRIDGED = re.compile(b"[\x02\x03]")
"""Where one or two empty buckets between two hit ones are sent as zero deltas."""


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited field (a string, a nested message, a packed list)."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _double(number: int, value: float) -> bytes:
    return _varint(number << 3 | 1) + _pack_double(value)


def _uint(number: int, value: int) -> bytes:
    return _varint(number << 3) + _varint(value)


def _label_pairs(pairs: Iterable[tuple[str, str]]) -> bytes:
    return b"".join(_field(1, _field(1, k.encode()) + _field(2, v.encode()))
                    for k, v in sorted(pairs))


def _family(name: str, help_text: str, kind: int, metrics: Sequence[bytes]) -> bytes:
    body = b"".join((_field(1, name.encode()), _field(2, help_text.encode()), _uint(3, kind),
                     *[_field(4, m) for m in metrics]))
    return _varint(len(body)) + body


def _exemplar(exemplar: Exemplar) -> bytes:
    trace_id, value, timestamp = exemplar
    seconds = math.floor(timestamp)
    nanos = round((timestamp - seconds) * 1e9)
    if nanos >= 1_000_000_000:
        seconds, nanos = seconds + 1, nanos - 1_000_000_000
    stamp = _uint(1, seconds) + (_uint(2, nanos) if nanos else b"")
    return (_field(1, _field(1, b"trace_id") + _field(2, trace_id.encode()))
            + _double(2, value) + _field(3, stamp))


def _bucket_head(count: int) -> bytes:
    """A classic Bucket's field 3 up to its upper bound: tag, length (1 + the count's bytes +
    the bound's 9: always one byte) and the cumulative count (field 1)."""
    encoded = _varint(count)
    return b"\x1a" + _SMALL[10 + len(encoded)] + b"\x08" + encoded


_BUCKET_HEADS = [_bucket_head(n) for n in range(1 << 14)]
"""Bucket heads by cumulative count, for the counts below 16,384 (most series' most buckets)."""


def _sint(n: int) -> bytes:
    """A zigzag-encoded sint64, looked up when it fits two bytes."""
    return _DELTA_BYTES.get(n) or _varint((n << 1) ^ (n >> 63))


def _native_head(schema: int, zero: int) -> bytes:
    """Schema, zero threshold and zero count: kept for the small zero counts, which most
    series have (most have none), so a render looks them up."""
    head = (b"\x28" + _SMALL[schema << 1 if schema >= 0 else ~(schema << 1)]
            + _ZERO_THRESHOLD + _uint(7, zero))
    if zero < 64:
        _HEADS[(schema, zero)] = head
    return head


_HEADS: dict[tuple[int, int], bytes] = {}


def native_fields(cell: NativeCell) -> bytes:
    """schema, zero threshold and count, positive spans and deltas of one native histogram.

    A span is a run of neighbouring buckets; its offset is the gap since the previous span
    (the first one's is its index). A gap of one or two empty buckets costs less as zero
    deltas than as a new span, so those are bridged (as client_golang does). The zero
    threshold is always sent, so an empty histogram is still a native one to Prometheus
    (which tells them apart by a non-zero threshold, buckets or zero count).

    When every series changed this is most of a protobuf render (660 series of about a
    hundred buckets), so the per-bucket work is a few passes in C: the counts read in one
    map, the deltas taken and looked up as their encoded bytes in one more. The spans depend
    only on which buckets are hit, so they are kept on the cell (`_Layout`) and, when a poll
    hit new buckets (counts only grow, so buckets are only ever added, at the end of the
    cell's dict), updated for the new ones rather than worked out again from all of them.
    """
    schema = cell.schema
    head = _HEADS.get((schema, cell.zero))
    if head is None:
        head = _native_head(schema, cell.zero)
    buckets = cell.buckets
    keys = list(buckets)
    layout = cell.layout
    if layout is None or layout.schema != schema or layout.keys != keys:
        layout = _relayout(layout, schema, buckets, keys)
        cell.layout = layout if layout.cacheable else None
    sent = layout.sent
    if not sent:
        cell.deltas = None
        return head
    pieces = _patched(cell.deltas, layout, buckets) if layout.cacheable else None
    if pieces is None:
        counts = list(map(buckets.get, sent, repeat(0)))
        if counts.count(0) != layout.bridged:
            # A bucket sent as hit is at zero now: only a hand-made cell loses counts.
            layout = _full_layout(schema, buckets, keys)
            cell.layout = None
            sent = layout.sent
            if not sent:
                cell.deltas = None
                return head
            counts = list(map(buckets.get, sent, repeat(0)))
        try:
            pieces = list(map(_DELTA_BYTES.__getitem__, map(sub, counts, chain((0,), counts))))
        except KeyError:  # a delta beyond two bytes
            pieces = list(map(_sint, map(sub, counts, chain((0,), counts))))
    # Kept for the next render, with what changes meanwhile (see NativeCell.deltas): set
    # last, after the layout, as a poll may copy this cell while it is rendered.
    cell.deltas = (sent, pieces, set()) if layout.cacheable else None
    encoded = b"".join(pieces)
    return b"".join((head, layout.spans, b"\x6a", _varint(len(encoded)), encoded))


def _patched(deltas: tuple[list[int], list[bytes], set[int]] | None, layout: _Layout,
             buckets: Mapping[int, int]) -> list[bytes] | None:
    """The deltas of `layout.sent` from those of the last render: its pieces, with a piece
    inserted where the layout inserted a bucket, and re-encoded where a count changed or a
    bucket came in (there and at the next bucket, whose delta is from it). None when the
    last render's deltas are not for this layout or its parent, or when so much changed
    that encoding every delta is cheaper."""
    if deltas is None:
        return None
    old_sent, old_pieces, touched = deltas
    sent = layout.sent
    if old_sent is sent:
        changed: set[int] | list[int] = touched
    elif old_sent is layout.parent:
        changed = [*touched, *layout.inserted]
    else:
        return None
    if 3 * len(changed) > len(sent):
        return None
    pieces = list(old_pieces)
    if old_sent is not sent:
        for at, run in layout.inserts:  # the layout's own insertions, in its order
            pieces[at:at] = repeat(b"", run)
    get = buckets.get
    last = len(sent) - 1
    for q in {p + d for p in map(bisect_left, repeat(sent), changed) for d in (0, 1)}:
        if q <= last:
            prev = get(sent[q - 1], 0) if q else 0
            pieces[q] = _sint(get(sent[q], 0) - prev)
    return pieces


class _Layout:
    """What `native_fields` keeps of a cell between renders: everything but the counts.

    `keys` are the cell's bucket indices in its dict's order when this was made (what it is
    checked against), `sent` the indices sent, ascending (the hit buckets and the empty ones
    bridged between them), `bridged` how many of those are empty, `starts` and `ends` each
    span's first and last index, `pieces` each span's encoded bytes and `spans` those joined.
    A layout updated from another (`_relayout`) keeps the other's `sent` as `parent`, and
    what it inserted into it: `inserts`, (position, count) in order, and `inserted`, the
    indices (for `_patched`). Never changed once made: a poll's copy of a cell shares it
    with the original.
    """

    __slots__ = ("bridged", "cacheable", "ends", "inserted", "inserts", "keys", "parent",
                 "pieces", "schema", "sent", "spans", "starts")

    def __init__(self, schema: int, keys: list[int], sent: list[int], bridged: int,
                 starts: list[int], ends: list[int], pieces: list[bytes],
                 cacheable: bool = True, parent: list[int] | None = None,
                 inserts: Sequence[tuple[int, int]] = (), inserted: Sequence[int] = ()) -> None:
        self.schema, self.keys, self.sent, self.bridged = schema, keys, sent, bridged
        self.starts, self.ends, self.pieces = starts, ends, pieces
        self.spans = b"".join(pieces)
        self.cacheable = cacheable
        self.parent, self.inserts, self.inserted = parent, inserts, inserted


@lru_cache(maxsize=1 << 14)
def _span(offset: int, length: int) -> bytes:
    """A span (field 12): few distinct ones occur, so each is encoded once."""
    payload = b"\x08" + _sint(offset) + b"\x10" + _varint(length)
    return b"\x62" + _SMALL[len(payload)] + payload  # under 128 bytes


def _span_at(starts: list[int], ends: list[int], j: int) -> bytes:
    """Span `j`'s bytes: its offset is the gap since the previous span (the first one's is
    its index)."""
    offset = starts[j] - ends[j - 1] - 1 if j else starts[0]
    return _span(offset, ends[j] - starts[j] + 1)


def _relayout(layout: _Layout | None, schema: int, buckets: Mapping[int, int],
              keys: list[int]) -> _Layout:
    """The layout for `keys`: `layout` updated for the buckets added since it was made, when
    that is all that changed, else worked out afresh. A new bucket touches only the span it
    joins (or starts) and the offset of the span after it."""
    if (layout is None or layout.schema != schema or len(keys) <= len(layout.keys)
            or keys[:len(layout.keys)] != layout.keys):
        return _full_layout(schema, buckets, keys)
    sent, starts, ends = list(layout.sent), list(layout.starts), list(layout.ends)
    pieces = list(layout.pieces)
    bridged = layout.bridged
    inserts: list[tuple[int, int]] = []
    inserted: list[int] = []
    for k in keys[len(layout.keys):]:
        if not buckets[k]:
            return _full_layout(schema, buckets, keys)
        p = bisect_left(sent, k)
        if p < len(sent) and sent[p] == k:  # an empty bucket bridged so far
            bridged -= 1
            continue
        j = bisect_right(starts, k) - 1  # the span before k (k is in none)
        left = j >= 0 and k - ends[j] <= 3
        right = j + 1 < len(starts) and starts[j + 1] - k <= 3
        if left and right:
            added = range(ends[j] + 1, starts[j + 1])
            ends[j] = ends[j + 1]
            del starts[j + 1], ends[j + 1], pieces[j + 1]
        elif left:
            added = range(ends[j] + 1, k + 1)
            ends[j] = k
        elif right:
            j += 1
            added = range(k, starts[j])
            starts[j] = k
        else:
            j += 1
            added = range(k, k + 1)
            starts.insert(j, k)
            ends.insert(j, k)
            pieces.insert(j, b"")
        for changed in range(j, min(j + 2, len(starts))):
            pieces[changed] = _span_at(starts, ends, changed)
        sent[p:p] = added
        inserts.append((p, len(added)))
        inserted += added
        bridged += len(added) - 1
    return _Layout(schema, keys, sent, bridged, starts, ends, pieces, parent=layout.sent,
                   inserts=inserts, inserted=inserted)


def _full_layout(schema: int, buckets: Mapping[int, int], keys: list[int]) -> _Layout:
    """The layout worked out from all of the cell's buckets. A cell keeping a bucket at zero
    (never one the exporter fills, whose counts only grow) is not cached: that bucket could
    be hit again without the keys changing."""
    if 0 in buckets.values():
        hit = sorted(k for k, c in buckets.items() if c)
        cacheable = False
    else:
        hit = sorted(keys)
        cacheable = True
    if not hit:
        return _Layout(schema, keys, [], 0, [], [], [], cacheable)
    # One byte per pair of neighbouring hit buckets: 1 next to each other, 2 or 3 with one
    # or two empty buckets between (bridged by zero deltas), 4 or more for a new span.
    distances = list(map(sub, hit[1:], hit[:-1]))
    try:
        gaps = bytes(distances)
    except ValueError:
        gaps = bytes(map(_GAP.get, distances, repeat(4)))
    breaks = [m.start() for m in _APART.finditer(gaps)]
    starts = [hit[0], *[hit[b + 1] for b in breaks]]
    ends = [*[hit[b] for b in breaks], hit[-1]]
    # The hit buckets' own index objects, and new ones only for the few bridged buckets:
    # kept per series, a list of fresh ints would take 28 bytes a bucket more.
    bridged = [hit[m.start()] + j for m in _BRIDGED.finditer(gaps)
               for j in range(1, gaps[m.start()])]
    sent = sorted(hit + bridged) if bridged else hit
    pieces = [_span_at(starts, ends, j) for j in range(len(starts))]
    return _Layout(schema, keys, sent, len(sent) - len(hit), starts, ends, pieces, cacheable)


class ProtobufEncoder:
    """The exporter's parts as protobuf, keeping label and bucket-bound bytes between renders,
    and each histogram's message for as long as its values stay the same.

    Not thread-safe, like the text encoder: the exposition renders one page per format at a
    time. Entries of series missing from a render are forgotten.
    """

    def __init__(self, static_labels: Mapping[str, Mapping[str, str]] | None = None,
                 common_labels: Mapping[str, str] | None = None) -> None:
        self.static_labels = static_labels or {}
        self.common_labels = tuple((common_labels or {}).items())
        self._labels: dict[tuple[str, Labels], dict[Labels, Any]] = {}
        self._bounds: dict[tuple[float, ...], list[bytes]] = {}

    def _pairs(self, names: tuple[str, ...], values: Labels) -> list[tuple[str, str]]:
        """(name, value) with the database's static labels and the common ones, as the text
        encoder adds them."""
        pairs = list(zip(names, values, strict=True))
        if self.static_labels and "database" in names:
            pairs += self.static_labels.get(values[names.index("database")], {}).items()
        return sorted(pairs + list(self.common_labels))

    def encode(self, parts: Iterable[Part]) -> bytes:
        families: dict[str, list[Part]] = {}
        for part in parts:
            families.setdefault(part.name, []).append(part)
        out: list[bytes] = []
        labels: dict[tuple[str, Labels], dict[Labels, Any]] = {}
        for name, group in families.items():
            spec = metric(name)
            metrics: list[bytes] = []
            for part in group:
                key = (name, part.prefix)
                known = self._labels.get(key, {})
                kept = labels.setdefault(key, {})
                if isinstance(part, Histogram):
                    self._histograms(metrics, spec.all_labels, part, known, kept)
                else:
                    self._series(metrics, spec.kind, spec.all_labels, part, known, kept)
            if spec.kind == "counter":
                family, kind = spec.family + "_total", COUNTER
            else:
                family, kind = spec.family, _TYPES[spec.kind]
            out.append(_family(family, spec.help, kind, metrics))
        self._labels = labels
        return b"".join(out)

    def _label_bytes(self, names: tuple[str, ...], part: Part, labels: Labels,
                     known: dict[Labels, bytes], kept: dict[Labels, bytes]) -> bytes:
        encoded = known.get(labels)
        if encoded is None:
            encoded = _label_pairs(self._pairs(names, part.prefix + labels))
        kept[labels] = encoded
        return encoded

    def _series(self, out: list[bytes], kind: str, names: tuple[str, ...], part: Series,
                known: dict[Labels, bytes], kept: dict[Labels, bytes]) -> None:
        field = 3 if kind == "counter" else 2
        for labels, value in part.values.items():
            encoded = self._label_bytes(names, part, labels, known, kept)
            out.append(encoded + _field(field, _double(1, value)))

    def _bound_bytes(self, bounds: tuple[float, ...]) -> list[bytes]:
        """Each bucket's upper-bound field, +Inf last, computed once per set of bounds."""
        cached = self._bounds.get(bounds)
        if cached is None:
            cached = self._bounds[bounds] = [_double(2, b) for b in (*bounds, float("inf"))]
        return cached

    def _histograms(self, out: list[bytes], names: tuple[str, ...], part: Histogram,
                    known: dict[Labels, Any], kept: dict[Labels, Any]) -> None:
        """Each series' Metric message, kept with the values it was written from: a series
        whose counts, sum, exemplars and native buckets are those of the last render (most
        of them, after a poll that read a few rows) reuses its bytes."""
        finite = len(part.bounds)
        bound_bytes = self._bound_bytes(part.bounds)
        finite_bounds = bound_bytes[:finite]
        for labels, cell in part.cells.items():
            native = part.native.get(labels)
            if native is None:
                native_bytes = b""
            else:
                native_bytes = native.encoded
                if native_bytes is None:
                    native_bytes = native.encoded = native_fields(native)
            marks = part.exemplars.get(labels)
            values = tuple(cell)
            last = known.get(labels)
            if (last is not None and last[1] == values and last[2] is native_bytes
                    and last[3] == marks):
                kept[labels] = last
                out.append(last[4])
                continue
            encoded = last[0] if last is not None else _label_pairs(
                self._pairs(names, part.prefix + labels))
            cumulative = list(accumulate(map(int, values[:-1])))
            start = b"\x08" + _varint(cumulative[-1]) + b"\x11" + _pack_double(cell[-1])
            if cumulative[-1] < len(_BUCKET_HEADS) and not marks:
                # Every count below the table's end (the total is the largest): looked up.
                heads = map(_BUCKET_HEADS.__getitem__, cumulative)
                body = b"".join((start, *chain.from_iterable(
                    zip(heads, finite_bounds, strict=False)), native_bytes))
                message = encoded + b"\x3a" + _varint(len(body)) + body  # field 7
                kept[labels] = (encoded, values, native_bytes, marks, message)
                out.append(message)
                continue
            finite_counts = cumulative[:finite]
            # Below the table's end (cumulative counts only rise) the heads are looked up.
            small = bisect_left(finite_counts, len(_BUCKET_HEADS))
            heads = [*map(_BUCKET_HEADS.__getitem__, finite_counts[:small]),
                     *map(_bucket_head, finite_counts[small:])]
            if marks:
                buckets = [h + b for h, b in zip(heads, bound_bytes, strict=False)]
                for i, exemplar in marks.items():
                    bucket = _field(3, b"\x08" + _varint(cumulative[i]) + bound_bytes[i]
                                    + _field(3, _exemplar(exemplar)))
                    if i < finite:
                        buckets[i] = bucket
                    else:
                        buckets.append(bucket)
                body = b"".join((start, *buckets, native_bytes))
            else:
                body = b"".join((start, *chain.from_iterable(
                    zip(heads, bound_bytes, strict=False)), native_bytes))
            message = encoded + _field(7, body)
            kept[labels] = (encoded, values, native_bytes, dict(marks) if marks else marks,
                            message)
            out.append(message)


def encode_collector(registry: Collector) -> bytes:
    """What prometheus_client holds (self-metrics, process, platform), as protobuf.

    Its families carry samples with suffixes; they are regrouped per label set into the
    message each type has. `_created` samples are left out, as client_golang leaves them out.
    """
    out: list[bytes] = []
    for mf in registry.collect():
        kind = _TYPES.get(mf.type, UNTYPED)
        if mf.type == "counter":
            name = mf.name + "_total"
        elif mf.type == "info":
            name = mf.name + "_info"
        else:
            name = mf.name
        grouped: dict[tuple[tuple[str, str], ...], dict[str, list[tuple[dict[str, str], float]]]]
        grouped = {}
        for s in mf.samples:
            if s.name.endswith("_created"):
                continue
            rest = {k: v for k, v in s.labels.items() if k not in ("le", "quantile")}
            suffix = s.name[len(mf.name):]
            grouped.setdefault(tuple(sorted(rest.items())), {}).setdefault(suffix, []).append(
                (s.labels, s.value))
        metrics = []
        for labels, samples in grouped.items():
            encoded = _label_pairs(labels)
            if kind == HISTOGRAM:
                body = [_uint(1, int(samples["_count"][0][1])),
                        _double(2, samples["_sum"][0][1])]
                for sample_labels, value in samples.get("_bucket", []):
                    bound = float(sample_labels["le"])
                    body.append(_field(3, _uint(1, int(value)) + _double(2, bound)))
                metrics.append(encoded + _field(7, b"".join(body)))
            elif kind == SUMMARY:
                body = [_uint(1, int(samples["_count"][0][1])),
                        _double(2, samples["_sum"][0][1])]
                for sample_labels, value in samples.get("", []):
                    body.append(_field(3, _double(1, float(sample_labels["quantile"]))
                                       + _double(2, value)))
                metrics.append(encoded + _field(4, b"".join(body)))
            else:
                field = {COUNTER: 3, GAUGE: 2}.get(kind, 5)
                for _, value in [v for vs in samples.values() for v in vs]:
                    metrics.append(encoded + _field(field, _double(1, value)))
        out.append(_family(name, mf.documentation, kind, metrics))
    return b"".join(out)
