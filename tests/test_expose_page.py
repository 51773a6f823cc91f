"""The whole /metrics page: every family once, one # EOF, rendered once per change."""

from __future__ import annotations

import gzip
import threading
from collections.abc import Callable, Iterable

import pytest
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)
from prometheus_client.parser import text_string_to_metric_families as parse_text

from exporter.aggregates import Aggregates
from exporter.expose.families import Part, Series, from_aggregates
from exporter.expose.registry import Exposition
from exporter.expose.self_metrics import SelfMetrics

OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"
OPS = "pggit_operation_duration_seconds"
COUNTERS = ("pggit_operation_errors_total", "pggit_operation_cpu_seconds_total")


def database(name: str, rows: int) -> Callable[[], Iterable[Part]]:
    """A source as a poller is one: histograms, counters (one still empty) and a gauge."""
    agg = Aggregates({OPS: (0.001, 0.1, 1.0)})
    for i in range(rows):
        agg.observe(OPS, ("commit", f"branch-{i % 3}"), 0.01 * i)
        agg.inc("pggit_operation_cpu_seconds_total", ("commit", f"branch-{i % 3}"), 0.5)

    def collect() -> Iterable[Part]:
        yield from from_aggregates(agg, (name,), COUNTERS)
        yield Series("pggit_merges_running", {(): 1.0}, (name,))
    return collect


@pytest.fixture
def exposition() -> Exposition:
    exp = Exposition()
    metrics = SelfMetrics(exp.registry)
    for name, rows in (("main", 5), ("replica", 3)):
        exp.add_source(database(name, rows))
        metrics["pggit_up"].labels(name).set(1)
        metrics["pggit_exporter_errors_total"].labels(name, "read", "other").inc()
    return exp


def type_lines(body: bytes) -> list[str]:
    return [line.split()[2] for line in body.decode().splitlines() if line.startswith("# TYPE")]


def test_text_page_has_every_family_once(exposition: Exposition) -> None:
    body, content_type = exposition.render(None)
    assert content_type.startswith("text/plain; version=0.0.4")
    names = type_lines(body)
    assert len(names) == len(set(names))
    families = {f.name: f for f in parse_text(body.decode())}
    assert {"pggit_exporter_build_info", OPS, "pggit_operation_errors", "pggit_up",
            "pggit_exporter_errors", "process_cpu_seconds"} <= set(families)
    assert {s.labels["database"] for s in families[OPS].samples} == {"main", "replica"}
    counts = {"main": 0.0, "replica": 0.0}
    for s in families[OPS].samples:
        if s.name == OPS + "_count":
            counts[s.labels["database"]] += s.value
    assert counts == {"main": 5, "replica": 3}


def test_openmetrics_page_has_every_family_once_and_one_eof(exposition: Exposition) -> None:
    body, content_type = exposition.render(OPENMETRICS)
    assert content_type.startswith("application/openmetrics-text; version=1.0.0")
    text = body.decode()
    assert text.endswith("\n# EOF\n")
    assert text.count("# EOF") == 1
    names = type_lines(body)
    assert len(names) == len(set(names))
    families = {f.name: f for f in parse_openmetrics(text)}
    assert families[OPS].unit == "seconds"
    assert families["pggit_operation_errors"].samples == []


def test_escaping_the_scraper_asks_for_is_named_in_the_content_type(
        exposition: Exposition) -> None:
    accept = "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8"
    body, content_type = exposition.render(accept)
    assert content_type.endswith("escaping=allow-utf-8")
    page = without_clock(body)
    assert f"# TYPE {OPS} histogram" in page
    assert page == without_clock(exposition.render(OPENMETRICS)[0])


def without_clock(body: bytes) -> list[str]:
    """The page minus the families that move on their own between two renders (CPU time,
    memory, garbage collections), which say nothing about how a format is chosen."""
    moving = ("process_", "python_gc_")
    return [line for line in body.decode().splitlines()
            if not line.removeprefix("# HELP ").removeprefix("# TYPE ")
            .removeprefix("# UNIT ").startswith(moving)]


def test_the_gzip_page_is_the_page_compressed_once_per_change(
        exposition: Exposition) -> None:
    plain, _ = exposition.render(None)
    packed, _ = exposition.render(None, compressed=True)
    assert gzip.decompress(packed) == plain
    assert exposition.render(None, compressed=True)[0] is packed
    exposition.changed()
    again, _ = exposition.render(None, compressed=True)
    assert again is not packed
    assert gzip.decompress(again) == exposition.render(None)[0]


class Counting:
    """A source that counts how often the exposition collects it."""

    def __init__(self, hold: threading.Event | None = None):
        self.calls = 0
        self.hold = hold

    def __call__(self) -> list[Part]:
        self.calls += 1
        if self.hold is not None:
            self.hold.wait(30)
        return [Series("pggit_merges_running", {(): 1.0}, ("main",))]


def test_each_format_is_rendered_once_per_change() -> None:
    exp = Exposition()
    source = Counting()
    exp.add_source(source)
    for _ in range(3):
        exp.render(None)
    assert source.calls == 1
    exp.render(OPENMETRICS)
    exp.render(OPENMETRICS)
    assert source.calls == 2
    exp.changed()
    exp.render(None)
    exp.render(None)
    assert source.calls == 3


def test_concurrent_scrapes_of_a_stale_page_render_it_once() -> None:
    exp = Exposition()
    hold = threading.Event()
    source = Counting(hold)
    exp.add_source(source)
    bodies: list[bytes] = []
    scrapes = [threading.Thread(target=lambda: bodies.append(exp.render(None)[0]))
               for _ in range(4)]
    for t in scrapes:
        t.start()
    # Give every scrape the chance to arrive while the first render is held up.
    threading.Event().wait(0.3)
    hold.set()
    for t in scrapes:
        t.join(30)
    assert source.calls == 1
    assert len(bodies) == 4 and len(set(bodies)) == 1


def test_a_change_published_during_a_render_reaches_the_next_scrape() -> None:
    exp = Exposition()
    calls: list[int] = []

    def source() -> list[Part]:
        calls.append(1)
        if len(calls) == 1:
            exp.changed()  # a poll publishes while this render is under way
            return [Series("pggit_merges_running", {(): 1.0}, ("main",))]
        return [Series("pggit_merges_running", {(): 2.0}, ("main",))]

    exp.add_source(source)
    assert b'pggit_merges_running{database="main"} 1.0\n' in exp.render(None)[0]
    assert b'pggit_merges_running{database="main"} 2.0\n' in exp.render(None)[0]
    exp.render(None)
    assert len(calls) == 2
