"""`databases[].labels`: constant labels on every series of that database and on the OTLP
resource of its spans; bad names rejected by check-config with the key and the reason."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest
import yaml
from prometheus_client.openmetrics.parser import text_string_to_metric_families as om_families
from prometheus_client.parser import text_string_to_metric_families

from exporter import config
from exporter.expose.families import Histogram, Series
from exporter.expose.registry import Exposition
from exporter.expose.self_metrics import SelfMetrics
from tests.exporter_fixtures import ExporterProcess, scrape, total, wait_for, write_config
from tests.otlp_receiver import Receiver

STATIC = {"cluster": "eu-1", "env": "prod"}


def load(tmp_path: Path, labels: object) -> list[str]:
    cfg = tmp_path / "cfg.yml"
    cfg.write_text(yaml.safe_dump({"databases": [
        {"name": "a", "dsn": "host=db", "labels": labels}]}))
    try:
        config.load(cfg, {})
    except config.ConfigError as exc:
        return exc.problems
    return []


@pytest.mark.parametrize(("labels", "problem"), [
    ({"database": "x"}, "databases[0].labels.database: clashes with the exporter's own label "
                        "'database'"),
    ({"operation_type": "x"}, "databases[0].labels.operation_type: clashes with the "
                              "exporter's own label 'operation_type'"),
    ({"le": "1"}, "databases[0].labels.le: clashes with the exporter's own label 'le'"),
    ({"job": "x"}, "databases[0].labels.job: Prometheus sets 'job' on every scraped series; "
                   "set it in the scrape config instead"),
    ({"__name__": "x"}, "databases[0].labels.__name__: names starting with __ are reserved "
                        "by Prometheus"),
    ({"env-name": "x"}, "databases[0].labels.env-name: is not a valid Prometheus label name "
                        "([a-zA-Z_][a-zA-Z0-9_]*)"),
    ({"1env": "x"}, "databases[0].labels.1env: is not a valid Prometheus label name "
                    "([a-zA-Z_][a-zA-Z0-9_]*)"),
    ({"env": ""}, "databases[0].labels.env: must not be empty (an empty label is no label)"),
    ({"env": 3}, "databases[0].labels: must be a mapping of strings to strings, got {'env': 3}"),
])
def test_bad_static_label_is_rejected_with_the_reason(tmp_path: Path, labels: object,
                                                      problem: str) -> None:
    assert load(tmp_path, labels) == [problem]


def test_good_static_labels_load(tmp_path: Path) -> None:
    assert load(tmp_path, {"cluster": "eu-1", "env": "ünï \"quoted\""}) == []


def parts() -> list[Histogram | Series]:
    return [Histogram("pggit_operation_duration_seconds", {("commit", "main"): [1, 2, 0, 3.5]},
                      (0.1, 1.0), ("a",)),
            Histogram("pggit_operation_duration_seconds", {("commit", "main"): [0, 1, 0, 0.5]},
                      (0.1, 1.0), ("b",)),
            Series("pggit_operation_errors_total", {("commit", "main"): 2.0}, ("a",))]


def render(exposition: Exposition, openmetrics: bool) -> str:
    exposition.add_source(parts)
    up = SelfMetrics(exposition.registry)["pggit_up"]
    up.labels("a").set(1)
    up.labels("b").set(0)
    accept = "application/openmetrics-text; version=1.0.0" if openmetrics else None
    return exposition.render(accept)[0].decode()


@pytest.mark.parametrize("openmetrics", [False, True])
def test_static_labels_go_on_every_series_of_their_database_only(openmetrics: bool) -> None:
    plain = render(Exposition(), openmetrics)
    labelled = render(Exposition({"a": STATIC, "b": {}}), openmetrics)
    parse = om_families if openmetrics else text_string_to_metric_families

    def samples(text: str) -> list[tuple[str, dict[str, str], float]]:
        return [(s.name, s.labels, s.value) for f in parse(text) for s in f.samples
                if s.name.startswith(("pggit_operation", "pggit_up"))]

    expected = [(name, {**labels, **STATIC} if labels.get("database") == "a" else labels, v)
                for name, labels, v in samples(plain)]
    assert samples(labelled) == expected
    assert any(labels.get("database") == "b" for _, labels, _ in expected)
    assert ("pggit_up", {"database": "a", **STATIC}, 1.0) in samples(labelled)


@pytest.mark.parametrize("openmetrics", [False, True])
def test_without_static_labels_the_page_is_byte_identical(openmetrics: bool) -> None:
    first = render(Exposition(), openmetrics)
    second = render(Exposition({"a": {}, "b": {}}), openmetrics)
    strip = [ln for ln in first.splitlines() if not ln.startswith(("process_", "python_"))]
    again = [ln for ln in second.splitlines() if not ln.startswith(("process_", "python_"))]
    assert strip == again


def test_running_exporter_labels_its_self_metrics_and_spans(
        pggit_dsn: str, run_exporter, receiver: Receiver) -> None:
    exporter = run_exporter(
        pggit_dsn, database={"labels": STATIC},
        traces={"endpoint": receiver.grpc_endpoint, "protocol": "grpc", "insecure": True})
    with psycopg.connect(pggit_dsn, autocommit=True) as conn:
        conn.execute("SELECT pggit.record_performance_metric('commit', 1000)")
        span = conn.execute("SELECT pggit.start_performance_trace(NULL, NULL, NULL, 'merge', "
                            "'merge_branches', 1, 'tester', NULL, NULL)").fetchone()[0]
        conn.execute("SELECT pggit.end_performance_trace(%s)", (span,))
    wait_for(lambda: span in receiver.by_pggit_span_id(), 30, what="the span")
    (received,) = receiver.by_pggit_span_id()[span]
    assert {k: received.resource[k] for k in STATIC} == STATIC
    assert received.resource["pggit.database"] == "main"

    def labelled() -> list[tuple[str, dict[str, str]]] | None:
        found = [(s.name, s.labels) for f in text_string_to_metric_families(
            scrape(exporter.port)) for s in f.samples if "database" in s.labels]
        names = {n for n, _ in found}
        return found if {"pggit_up", "pggit_operation_duration_seconds_count"} <= names \
            else None

    found = wait_for(labelled, 30, what="pgGit series and self-metrics")
    for name, labels in found:
        assert {k: labels.get(k) for k in STATIC} == STATIC, name


def test_static_label_named_replica_points_at_the_replica_setting(tmp_path: Path) -> None:
    assert load(tmp_path, {"replica": "a"}) == [
        "databases[0].labels.replica: is set by the top-level `replica` setting, on every "
        "series of the process"]


@pytest.mark.parametrize("openmetrics", [False, True])
def test_replica_label_goes_on_every_series(openmetrics: bool) -> None:
    text = render(Exposition({"a": STATIC}, {"replica": "r1"}), openmetrics)
    parse = om_families if openmetrics else text_string_to_metric_families
    samples = [(s.name, s.labels) for f in parse(text) for s in f.samples]
    assert {n for n, _ in samples} >= {"pggit_exporter_build_info", "pggit_up",
                                       "pggit_operation_duration_seconds_bucket"}
    for name, labels in samples:
        assert labels.get("replica") == "r1", name


def test_ha_pair_serves_identical_series_but_for_the_replica_label(
        pggit_dsn: str, tmp_path: Path) -> None:
    """Two exporter processes, one database: the same pgGit series and values, told apart
    only by `replica`, so a deduplicating store keeps one copy."""
    with psycopg.connect(pggit_dsn, autocommit=True) as conn:
        for us in (500, 5_000, 50_000):
            conn.execute("SELECT pggit.record_performance_metric('commit', %s)", (us,))
    pair = []
    try:
        for name in ("a", "b"):
            cfg = write_config(tmp_path / f"{name}.yml", pggit_dsn, tmp_path / f"state-{name}",
                               replica=name)
            pair.append(ExporterProcess(cfg))

        def pggit_series(exporter: ExporterProcess) -> dict | None:
            s = exporter.samples()
            if total(s, "pggit_operation_duration_seconds_count") != 3:
                return None
            return {(n, tuple((k, v) for k, v in ls if k != "replica")): value
                    for (n, ls), value in s.items()
                    if n.startswith("pggit_") and not n.startswith("pggit_exporter_")
                    and ("replica", exporter.cfg_path.stem) in ls}

        a, b = (wait_for(lambda e=e: pggit_series(e), 30, what="both replicas caught up")
                for e in pair)
        assert a == b and a
    finally:
        for exporter in pair:
            exporter.close()
