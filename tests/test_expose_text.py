"""The direct encoder writes what prometheus_client writes for the same families.

The reference (tests/expose_reference.py) is how the exporter rendered /metrics before: one
prometheus_client family per part, parts of one name merged, `generate_latest`. Bytes are
compared, and both outputs are also read back with prometheus_client's parsers.
"""

from __future__ import annotations

import math
import random
from decimal import Decimal
from typing import Any

import pytest
from prometheus_client.openmetrics.exposition import ALLOWUTF8, DOTS, UNDERSCORES, VALUES
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)
from prometheus_client.parser import text_string_to_metric_families as parse_text
from prometheus_client.utils import floatToGoString

from exporter.aggregates import Aggregates
from exporter.expose.families import Histogram, Part, Series, from_aggregates
from exporter.expose.text import Encoder
from tests import expose_reference

OPS = "pggit_operation_duration_seconds"
SPANS = "pggit_span_duration_seconds"
CPU = "pggit_operation_cpu_seconds_total"
ERRORS = "pggit_operation_errors_total"
QUANTILES = "pggit_baseline_duration_seconds"
BOUNDS = (0.0001, 0.001, 0.01, 0.1, 1.0, 60.0)

HOSTILE = ["", "plain", 'quote"d', "back\\slash", "new\nline", 'all\\n"\n\\', "trailing\\",
           "ünïcødé ☃ 日本語 🚀", "x" * 10_000, "%s %d {0} }{ %%", "tab\tcr\r", "a=b,c"]
FLOATS: list[Any] = [0.0, -0.0, 1.0, 0.1, 1.5, 1e-7, 5e-324, 999_999.0, 1e6, 123456789.0,
                     1e15, 1e16, 1e17, 1.7976931348623157e308, 2**53 + 1, 10**20, 3,
                     Decimal("2.5"), -1.0, -1e6, math.nan, math.inf, -math.inf]
COUNTS = [0, 1, 7, 999_999, 1_000_000, 1_234_567, 2**53 + 1, 10**17]
"""Bucket counts, including the ones where Go's float format switches to an exponent."""


def cell(seed: int, total: float) -> list[float]:
    return [COUNTS[(seed + i) % len(COUNTS)] for i in range(len(BOUNDS) + 1)] + [total]


def hostile_parts(parseable: bool = False) -> list[Part]:
    """Every awkward label value and number in every kind of family, two databases merged.

    `parseable` keeps to what the OpenMetrics parser accepts (counters, sums not negative
    or NaN); the byte comparison uses everything.
    """
    floats = [f for f in FLOATS if not parseable or (f >= 0 and not math.isnan(f))]
    ops = {(v, HOSTILE[-1 - i]): cell(i, floats[i % len(floats)]) for i, v in enumerate(HOSTILE)}
    spans = {(v, "span", "OK"): cell(i, 1.0) for i, v in enumerate(HOSTILE)}
    odd = "" if parseable else '"\\'  # the OpenMetrics parser reads no escapes in exemplars
    marks = {(v, "span", "OK"): {0: (f"trace{odd}{i}", 5e-05, 1700000000.25),
                                 len(BOUNDS): ("f" * 32, 100.0, 1700000001)}
             for i, v in enumerate(HOSTILE[:4])}
    cpu = {(v, "b"): floats[i % len(floats)] for i, v in enumerate(HOSTILE)}
    quantiles = {("op", v, "0.99"): f for v, f in zip(HOSTILE * 2, FLOATS, strict=False)}
    return [
        Series("pggit_exporter_build_info", {("0.1.0", "3.11.7"): 1}),
        Histogram(OPS, ops, BOUNDS, ("main",)),
        Series(CPU, cpu, ("main",)),
        Series(ERRORS, {}, ("main",)),
        Histogram("pggit_merge_duration_seconds", {}, BOUNDS, ("main",)),
        Series("pggit_merges_running", {}, ("main",)),
        Series(QUANTILES, quantiles, ("main",)),
        Histogram(SPANS, spans, BOUNDS, ("main",), marks),
        Histogram(OPS, {("commit", ""): cell(3, 2.5)}, BOUNDS, ("replica \"2\"",)),
        Series(CPU, {("commit", ""): 4.0}, ("replica \"2\"",)),
        Series(ERRORS, {("commit", ""): 1.0}, ("replica \"2\"",)),
    ]


def normalised(families: Any) -> list[Any]:
    """Parsed families as comparable data (NaN equals NaN here)."""
    return [(f.name, f.type, f.unit, f.documentation,
             [(s.name, sorted(s.labels.items()), floatToGoString(s.value), s.timestamp,
               s.exemplar) for s in f.samples]) for f in families]


@pytest.mark.parametrize("escaping", [UNDERSCORES, ALLOWUTF8, DOTS, VALUES])
def test_text_is_byte_identical_to_prometheus_client(escaping: str) -> None:
    parts = hostile_parts()
    assert (Encoder(False, escaping).encode(parts)
            == expose_reference.render(parts, False, escaping))


@pytest.mark.parametrize("escaping", [UNDERSCORES, ALLOWUTF8, DOTS])
def test_openmetrics_is_byte_identical_to_prometheus_client(escaping: str) -> None:
    parts = hostile_parts()
    assert (Encoder(True, escaping).encode(parts)
            == expose_reference.render(parts, True, escaping))


def test_openmetrics_values_escaping_leaves_valid_names_as_they_are() -> None:
    """prometheus_client 0.26 writes `U__`-escaped sample names under unescaped HELP/TYPE
    lines, which its own parser then files under another family; the escaping scheme leaves
    names that are already valid unchanged, as the encoder does."""
    parts = hostile_parts(parseable=True)
    body = Encoder(True, VALUES).encode(parts)
    assert body == Encoder(True, UNDERSCORES).encode(parts)
    families = list(parse_openmetrics(body.decode() + "# EOF\n"))
    assert all(f.type != "unknown" for f in families)


@pytest.mark.parametrize("openmetrics", [False, True])
def test_counts_of_every_magnitude_are_written_as_prometheus_client_writes_them(
        openmetrics: bool) -> None:
    """Counts take a shortcut to Go's float format; it must agree at every size, around
    a million (where the exponent starts) and 2**53 (where floats stop being exact)."""
    rng = random.Random(7)
    counts = [10**e + d for e in range(20) for d in (-1, 0, 1)]
    counts += [2**53 + d for d in (-2, -1, 0, 1, 2)] + [-1, -10**7]
    counts += [rng.randrange(0, 2**e) for e in range(1, 64) for _ in range(20)]
    cells = {(f"op{i}", ""): [c, 0, 1.0] for i, c in enumerate(counts)}
    parts: list[Part] = [Histogram(OPS, cells, (1.0,), ("main",))]
    assert (Encoder(openmetrics).encode(parts)
            == expose_reference.render(parts, openmetrics))


def test_text_parses_as_prometheus_client_output_does() -> None:
    parts = hostile_parts()
    ours = parse_text(Encoder(False).encode(parts).decode())
    theirs = parse_text(expose_reference.render(parts, False).decode())
    assert normalised(ours) == normalised(theirs)


def test_openmetrics_parses_as_prometheus_client_output_does() -> None:
    parts = hostile_parts(parseable=True)
    ours = parse_openmetrics(Encoder(True).encode(parts).decode() + "# EOF\n")
    theirs = parse_openmetrics(expose_reference.render(parts, True).decode() + "# EOF\n")
    assert normalised(ours) == normalised(theirs)


@pytest.mark.parametrize("openmetrics", [False, True])
def test_hostile_label_values_read_back_unchanged(openmetrics: bool) -> None:
    body = Encoder(openmetrics).encode(hostile_parts(parseable=True)).decode()
    families = parse_openmetrics(body + "# EOF\n") if openmetrics else parse_text(body)
    cpu = next(f for f in families if f.name == "pggit_operation_cpu_seconds")
    assert {s.labels["operation_type"] for s in cpu.samples} >= set(HOSTILE)


def test_exemplars_are_written_in_openmetrics_only() -> None:
    parts = hostile_parts(parseable=True)
    assert b" # {" not in Encoder(False).encode(parts)
    spans = next(f for f in parse_openmetrics(Encoder(True).encode(parts).decode() + "# EOF\n")
                 if f.name == SPANS)
    marks = [s.exemplar for s in spans.samples if s.exemplar is not None]
    assert len(marks) == 8
    assert {e.labels["trace_id"] for e in marks} >= {"trace0", "f" * 32}
    assert all(set(e.labels) == {"trace_id"} for e in marks)


@pytest.mark.parametrize("openmetrics", [False, True])
def test_families_without_series_keep_their_help_and_type(openmetrics: bool) -> None:
    parts: list[Part] = [Series(ERRORS, {}, ("main",)), Histogram(OPS, {}, BOUNDS, ("main",)),
                         Series("pggit_merges_running", {}, ("main",))]
    text = Encoder(openmetrics).encode(parts).decode()
    errors = "pggit_operation_errors" if openmetrics else "pggit_operation_errors_total"
    for name, kind in ((errors, "counter"), (OPS, "histogram"),
                       ("pggit_merges_running", "gauge")):
        assert f"# HELP {name} " in text
        assert f"# TYPE {name} {kind}\n" in text
    assert text == expose_reference.render(parts, openmetrics).decode()


@pytest.mark.parametrize("openmetrics", [False, True])
def test_databases_share_one_family_each(openmetrics: bool) -> None:
    parts = hostile_parts(parseable=True)
    text = Encoder(openmetrics).encode(parts).decode()
    types = [line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")]
    assert len(types) == len(set(types)) == len({p.name for p in parts})
    parse = parse_openmetrics if openmetrics else parse_text
    body = text + "# EOF\n" if openmetrics else text
    ops = next(f for f in parse(body) if f.name == OPS)
    assert {s.labels["database"] for s in ops.samples} == {"main", 'replica "2"'}


@pytest.mark.parametrize("openmetrics", [False, True])
def test_a_reused_encoder_follows_label_sets_that_come_and_go(openmetrics: bool) -> None:
    encoder = Encoder(openmetrics)
    first = hostile_parts()
    assert encoder.encode(first) == expose_reference.render(first, openmetrics)
    second: list[Part] = [
        Histogram(OPS, {("commit", ""): cell(5, 9.0), ("new", "op"): cell(1, 1.0)}, BOUNDS,
                  ("main",)),
        Series(CPU, {("plain", "b"): 2.0, ("added", "b"): 3.0}, ("main",)),
        Series(CPU, {}, ("replica \"2\"",)),
    ]
    assert encoder.encode(second) == expose_reference.render(second, openmetrics)
    assert encoder.encode(first) == expose_reference.render(first, openmetrics)


def counts_by_series(body: str, openmetrics: bool) -> dict[tuple[Any, ...], float]:
    parse = parse_openmetrics if openmetrics else parse_text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in parse(body + ("# EOF\n" if openmetrics else "")) for s in f.samples}


@pytest.mark.parametrize("openmetrics", [False, True])
def test_one_more_row_is_exactly_one_more_count(openmetrics: bool) -> None:
    """After a render has warmed the encoder, one observed row changes its own series by
    one and nothing else: no row lost, doubled or shown in a neighbouring series."""
    agg = Aggregates({OPS: BOUNDS})
    for i, op in enumerate(("commit", "merge", "branch")):
        for b in ("main", "dev"):
            agg.add_buckets(OPS, (op, b), [i + 1] * (len(BOUNDS) + 1), 1.0)
    encoder = Encoder(openmetrics)
    before = counts_by_series(
        encoder.encode(from_aggregates(agg, ("main",))).decode(), openmetrics)
    after_agg = agg.copy()
    after_agg.observe(OPS, ("merge", "dev"), 0.05)
    after = counts_by_series(
        encoder.encode(from_aggregates(after_agg, ("main",))).decode(), openmetrics)
    changed = {k: after[k] - before[k] for k in before if after[k] != before[k]}
    series = (("branch", "dev"), ("database", "main"), ("operation_type", "merge"))
    assert changed == {
        (OPS + "_bucket", tuple(sorted((*series, ("le", le))))): 1
        for le in ("0.1", "1.0", "60.0", "+Inf")
    } | {(OPS + "_count", series): 1, (OPS + "_sum", series): pytest.approx(0.05)}


def test_a_part_of_the_wrong_kind_is_refused() -> None:
    with pytest.raises(TypeError, match="histogram"):
        Encoder(False).encode([Series(OPS, {("commit", ""): 1.0}, ("main",))])


def test_a_series_with_the_wrong_number_of_labels_is_refused() -> None:
    with pytest.raises(ValueError):
        Encoder(False).encode([Series(CPU, {("commit",): 1.0}, ("main",))])
