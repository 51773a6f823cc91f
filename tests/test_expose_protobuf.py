"""The protobuf exposition, decoded by the protobuf runtime against client_model's schema.

It must carry every sample the text page carries (classic buckets included, for Prometheus
without native histograms), the native buckets exactly as the aggregates hold them, and the
exemplars OpenMetrics shows; and it is only served to a client that prefers it.
"""

from __future__ import annotations

import math
import random
import struct
import sys
import threading
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families as parse_text

from exporter.aggregates import Aggregates
from exporter.expose import protobuf
from exporter.expose.families import from_aggregates
from exporter.expose.protobuf import ProtobufEncoder
from exporter.expose.registry import Exposition
from exporter.expose.text import Encoder
from exporter.native import ZERO_THRESHOLD, NativeCell, NativeSpec
from tests.metrics_proto import parse_delimited
from tests.test_expose_text import BOUNDS, OPS, SPANS, hostile_parts

PROMETHEUS_2_42_ACCEPT = (
    "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;"
    "encoding=delimited,application/openmetrics-text;version=1.0.0;q=0.8,"
    "application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1")


@pytest.mark.parametrize(("accept", "wanted"), [
    (PROMETHEUS_2_42_ACCEPT, True),
    ("application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
     False),
    ("text/plain;version=0.0.4;q=0.9,application/vnd.google.protobuf;"
     "proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0.5", False),
    ("application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;"
     "encoding=text", False),
    ("application/vnd.google.protobuf;proto=other.Message;encoding=delimited", False),
    ("application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; "
     "encoding=delimited", True),
    ("", False),
    (None, False),
])
def test_protobuf_is_served_only_to_a_client_that_prefers_it(
        accept: str | None, wanted: bool) -> None:
    exposition = Exposition()
    body, content_type = exposition.render(accept)
    assert (content_type == protobuf.CONTENT_TYPE) is wanted
    if wanted:
        assert {f.name for f in parse_delimited(body)} >= {"pggit_exporter_build_info"}


def _text_samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], str]:
    out = {}
    for family in parse_text(text):
        for s in family.samples:
            labels = dict(s.labels)
            if "le" in labels:
                labels["le"] = repr(float(labels["le"]))
            out[(s.name, frozenset(labels.items()))] = repr(float(s.value))
    return out


def _proto_samples(families: list[Any]) -> dict[tuple[str, frozenset[tuple[str, str]]], str]:
    """The samples the text format would show for these families (no +Inf of its own when
    the histogram ends at a finite bound: that is the count)."""
    out = {}
    for f in families:
        for m in f.metric:
            labels = {lp.name: lp.value for lp in m.label}
            key = frozenset(labels.items())
            if m.HasField("histogram"):
                h = m.histogram
                for b in h.bucket:
                    out[(f.name + "_bucket", key | {("le", repr(b.upper_bound))})] = repr(
                        float(b.cumulative_count))
                out[(f.name + "_bucket", key | {("le", "inf")})] = repr(float(h.sample_count))
                out[(f.name + "_count", key)] = repr(float(h.sample_count))
                out[(f.name + "_sum", key)] = repr(h.sample_sum)
            elif m.HasField("counter"):
                out[(f.name, key)] = repr(m.counter.value)
            else:
                out[(f.name, key)] = repr(m.gauge.value)
    return out


def _observed_aggregates(seed: int, spec: NativeSpec | None = None) -> Aggregates:
    rng = random.Random(seed)
    agg = Aggregates({OPS: BOUNDS, SPANS: BOUNDS}, spec)
    for i in range(3000):
        labels = (rng.choice(["commit", "merge", 'we"ird\\op']), rng.choice(["main", "dev"]))
        agg.observe(OPS, labels, 0.0 if i % 500 == 0 else rng.lognormvariate(-6, 2))
    agg.observe(SPANS, ("commit", "span", "OK"), 0.002, exemplar=("ab" * 16, 0.002, 1.7e9))
    agg.observe(SPANS, ("commit", "span", "OK"), 900.0, exemplar=("cd" * 16, 900.0, 1.7e9 + .5))
    agg.inc("pggit_operation_errors_total", ("commit", "main"), 3)
    return agg


def test_protobuf_carries_every_sample_of_the_text_page() -> None:
    parts = [*hostile_parts(parseable=True),
             *from_aggregates(_observed_aggregates(1), ("other-db",))]
    text = Encoder(False).encode(parts).decode()
    families = parse_delimited(ProtobufEncoder().encode(parts))
    assert len({f.name for f in families}) == len(families)
    assert _proto_samples(families) == _text_samples(text)


def _decode_native(h: Any) -> dict[int, int]:
    buckets: dict[int, int] = {}
    index, count, deltas = 0, 0, iter(h.positive_delta)
    for n, span in enumerate(h.positive_span):
        index = span.offset if n == 0 else index + 1 + span.offset
        for k in range(span.length):
            count += next(deltas)
            if count:
                buckets[index + k] = count
        index += span.length - 1
    assert next(deltas, None) is None
    return buckets


@pytest.mark.parametrize("spec", [NativeSpec(), NativeSpec(8, 40), NativeSpec(-2)])
def test_native_buckets_are_the_aggregates_own(spec: NativeSpec) -> None:
    agg = _observed_aggregates(2, spec)
    families = {f.name: f for f in parse_delimited(
        ProtobufEncoder().encode(list(from_aggregates(agg, ("db",)))))}
    for m in families[OPS].metric:
        labels = {lp.name: lp.value for lp in m.label}
        cell = agg.native[OPS][(labels["operation_type"], labels["branch"])]
        h = m.histogram
        assert (h.schema, h.zero_count, h.zero_threshold) == (
            cell.schema, cell.zero, ZERO_THRESHOLD)
        assert _decode_native(h) == cell.buckets
        assert h.sample_count == cell.count()
        assert len(cell.buckets) <= spec.max_buckets


def test_exemplars_are_on_the_classic_buckets_as_in_openmetrics() -> None:
    agg = _observed_aggregates(3)
    families = {f.name: f for f in parse_delimited(
        ProtobufEncoder().encode(list(from_aggregates(agg, ("db",)))))}
    (span,) = families[SPANS].metric
    marked = [(b.upper_bound, b.exemplar) for b in span.histogram.bucket
              if b.HasField("exemplar")]
    assert [(bound, e.label[0].value, e.value, e.timestamp.seconds, e.timestamp.nanos)
            for bound, e in marked] == [
        (0.01, "ab" * 16, 0.002, 1_700_000_000, 0),
        (math.inf, "cd" * 16, 900.0, 1_700_000_000, 500_000_000)]
    assert span.histogram.bucket[-1].cumulative_count == span.histogram.sample_count == 2


def test_a_histogram_without_observations_is_still_a_native_one() -> None:
    """Prometheus 2.42 takes a histogram for a classic one unless it has native buckets, a
    zero count or a zero threshold; the threshold is always sent."""
    agg = Aggregates({OPS: BOUNDS})
    agg.native_cell(OPS, ("commit", "main"))
    agg.histograms[OPS][("commit", "main")] = [0] * (len(BOUNDS) + 1) + [0.0]
    (family,) = [f for f in parse_delimited(
        ProtobufEncoder().encode(list(from_aggregates(agg, ("db",))))) if f.name == OPS]
    assert family.metric[0].histogram.zero_threshold > 0


def test_the_page_has_the_self_metrics_in_their_own_types() -> None:
    body, _ = Exposition().render(PROMETHEUS_2_42_ACCEPT)
    families = {f.name: f for f in parse_delimited(body)}
    assert len(families) == len(parse_delimited(body))
    assert families["process_cpu_seconds_total"].type == 0
    assert families["python_info"].type == 1


def test_a_reused_encoder_writes_what_a_fresh_one_writes_after_each_poll() -> None:
    """Messages of unchanged series are reused; a series with one more row must not be."""
    agg = _observed_aggregates(4)
    encoder = ProtobufEncoder()
    rng = random.Random(4)
    for _ in range(5):
        agg = agg.copy()
        labels = rng.choice(sorted(agg.histograms[OPS]))
        agg.observe(OPS, labels, rng.lognormvariate(-6, 2))
        if rng.random() < 0.5:
            agg.observe(SPANS, ("commit", "span", "OK"), 0.5, exemplar=("ef" * 16, 0.5, 1.8e9))
        parts = list(from_aggregates(agg, ("db",)))
        assert encoder.encode(parts) == ProtobufEncoder().encode(parts)


def test_native_buckets_with_counts_far_apart_and_far_away_decode_exactly() -> None:
    """Deltas beyond one byte, negative ones, and gaps of one, two, three and many buckets."""
    agg = Aggregates({OPS: BOUNDS}, NativeSpec(5, 1000))
    counts = {-300: 1, -299: 10**9, -297: 5, -294: 64, -293: 65, -290: 2**40, -286: 2,
              -100: 1, 40: 7}
    agg.add_native(OPS, ("commit", "main"), counts, zero=3)
    agg.histograms[OPS][("commit", "main")] = [0] * len(BOUNDS) + [sum(counts.values()) + 3,
                                                                   1.0]
    (family,) = [f for f in parse_delimited(
        ProtobufEncoder().encode(list(from_aggregates(agg, ("db",))))) if f.name == OPS]
    h = family.metric[0].histogram
    assert _decode_native(h) == counts and h.zero_count == 3
    assert [(s.offset, s.length) for s in h.positive_span] == [
        (-300, 11), (3, 1), (185, 1), (139, 1)]


def _reference_native_fields(cell: NativeCell) -> bytes:
    """The native fields written the plain way: every bucket from the lowest hit to the
    highest, runs of three or more empty ones starting a new span, each delta a varint."""
    def varint(n: int) -> bytes:
        n &= (1 << 64) - 1
        out = bytearray()
        while n >= 128:
            out.append(n & 0x7F | 0x80)
            n >>= 7
        return bytes(out + bytes((n,)))

    def sint(n: int) -> bytes:
        return varint((n << 1) ^ (n >> 63))

    out = b"\x28" + sint(cell.schema) + b"\x31" + struct.pack("<d", ZERO_THRESHOLD)
    out += b"\x38" + varint(cell.zero)
    hit = sorted(i for i, c in cell.buckets.items() if c)
    if not hit:
        return out
    spans: list[list[int]] = [[hit[0], hit[0]]]
    for i in hit[1:]:
        if i - spans[-1][1] > 3:
            spans.append([i, i])
        else:
            spans[-1][1] = i
    previous_end, previous_count, deltas = None, 0, b""
    for low, high in spans:
        offset = low if previous_end is None else low - previous_end - 1
        span = b"\x08" + sint(offset) + b"\x10" + varint(high - low + 1)
        out += b"\x62" + varint(len(span)) + span
        previous_end = high
        for i in range(low, high + 1):
            deltas += sint(cell.buckets.get(i, 0) - previous_count)
            previous_count = cell.buckets.get(i, 0)
    return out + b"\x6a" + varint(len(deltas)) + deltas


def _handmade(cell: NativeCell, buckets: dict[int, int]) -> NativeCell:
    """A cell changed outside NativeCell's methods (a bucket lost or kept at zero, which no
    poll does): a new cell, as a checkpoint restores it, keeping the old one's layout."""
    made = NativeCell(cell.schema, cell.zero, buckets)
    made.layout = cell.layout
    return made


def test_native_fields_are_the_plainly_written_ones_through_changes() -> None:
    """The encoder keeps each cell's spans and deltas between renders, updates the spans for
    the buckets a poll adds, re-encodes only the deltas around the buckets it touched and
    looks deltas up in tables: its bytes must stay those of the plain encoding as cells gain
    counts, gain buckets (one or several, next to a span, between two, inside a bridged gap
    or far away), lose buckets, keep buckets at zero and halve their resolution; and a poll's
    copy of a cell, which shares what was kept, must leave the original's bytes as they
    were. Polls change cells through NativeCell's methods, and so does this test."""
    rng = random.Random(13)
    for _ in range(300):
        cell = NativeCell(rng.randint(-4, 8), rng.choice([0, 3, 10**10]))
        spec = NativeSpec(cell.schema, 10**6)
        index = rng.randint(-400, 300)
        for _ in range(rng.choice([0, 1, 2, 3, 5, 30, 150])):
            index += rng.choice([1, 1, 1, 1, 2, 3, 4, 5, rng.randint(1, 600)])
            cell.buckets[index] = rng.choice([1, 2, rng.randint(1, 100), rng.randint(1, 10**4),
                                              rng.randint(1, 10**12)])
        for _ in range(12):
            expected = _reference_native_fields(cell)
            assert protobuf.native_fields(cell) == expected, cell
            keys = sorted(cell.buckets) or [0]
            change = rng.randrange(9)
            if change == 8:
                cell.add_durations_us(spec, [rng.choice([0, rng.randint(1, 10**7)])
                                             for _ in range(rng.choice([1, 3, 50]))])
            elif change >= 5:
                original = cell
                cell = cell.copy()
                for _ in range(rng.choice([1, 2, 4, 40])):
                    near = rng.choice(keys) + rng.choice([-5, -4, -3, -2, -1, 1, 2, 3, 4, 5])
                    cell.add_one(spec, near if change != 7 else rng.randint(-500, 500))
                assert protobuf.native_fields(original) == expected, original
            elif change == 0:
                cell.add(spec, {i: rng.choice([1, 50, 10**6])
                                for i in rng.sample(keys, min(3, len(keys)))})
            elif change == 1:
                cell.add(spec, {rng.choice(keys) + rng.randint(-4, 4): 1})
            elif change == 2 and cell.buckets:
                buckets = dict(cell.buckets)
                del buckets[rng.choice(keys)]
                k = rng.choice(keys) + rng.randint(1, 3)
                buckets[k] = buckets.get(k, 0) + 2
                cell = _handmade(cell, buckets)
            elif change == 3 and cell.buckets:
                cell = _handmade(cell, {**cell.buckets, rng.choice(keys): 0})
            else:
                cell.fit(max(1, len(cell.buckets) // 2))


def test_renders_racing_polls_leave_every_cell_encoded_as_written_plainly() -> None:
    """A render keeps its spans and deltas on the published cells while the poll thread
    copies them for the next poll (NativeCell.deltas): whatever the interleaving, a copy's
    touched buckets must cover every change since the deltas it took, so every later render
    is still the plain encoding. Thread switches are made frequent to interleave the two."""
    published = [_observed_aggregates(6)]
    stop = threading.Event()

    def render() -> None:
        encoder = ProtobufEncoder()
        while not stop.is_set():
            encoder.encode(list(from_aggregates(published[0], ("db",))))

    renderer = threading.Thread(target=render)
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    renderer.start()
    rng = random.Random(6)
    try:
        for _ in range(400):
            agg = published[0].copy()
            for labels in rng.sample(sorted(agg.native[OPS]), 2):
                for _ in range(rng.choice([1, 3, 20])):
                    agg.observe(OPS, labels, rng.lognormvariate(-6, 3))
            published[0] = agg
    finally:
        stop.set()
        renderer.join()
        sys.setswitchinterval(interval)
    for cell in published[0].native[OPS].values():
        assert protobuf.native_fields(cell) == _reference_native_fields(cell), cell
