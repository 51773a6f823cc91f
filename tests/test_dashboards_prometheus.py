"""Every panel query, sent to a real Prometheus scraping the exporter under the demo workload.

One module-scoped setup (the expensive part): a fresh pgGit database with the live workload;
the exporter as a subprocess (`python -m exporter run`) forwarding spans to a real OTLP receiver
and keeping silences in a real Alertmanager; and the real `prometheus` binary scraping it with
the shipped recording and alerting rules loaded. The demo runs until every panel that must
answer does (20-50 s, depending on the machine's load; at most DEMO_SECONDS_MAX), rather than
for a fixed time. Then each test asks Prometheus' HTTP API what Grafana would ask.

Prometheus scrapes every 2 s rather than every second: on a shared 2-core machine under this
workload a scrape of ~9k series sometimes takes longer than a second, and a timed-out scrape
marks every series stale. Queries are therefore evaluated at a moment just after a good
scrape (`good_moment`), which is what Grafana would have shown at that moment.
"""

from __future__ import annotations

import importlib.util
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.dashboards_fixtures import (
    REPO,
    RULES_DIR,
    load_dashboards,
    substitute,
    targets,
)
from tests.exporter_fixtures import ExporterProcess, wait_for, write_config
from tests.otlp_receiver import Receiver
from tests.prom_processes import AlertmanagerServer, PrometheusServer, write_yaml

pytestmark = pytest.mark.timeout(300)

DEMO_SECONDS_MAX = 150.0
CHECK_EVERY_SECONDS = 5.0
SCRAPE_INTERVAL = "2s"
RATE_INTERVAL = "30s"
DASHBOARDS = load_dashboards()

# Panels that return no series in a short demo run, and why. Anything not listed must
# return data, and a panel listed here that does return data fails the test too, so the list
# cannot silently go stale.
EMPTY_IN_SHORT_DEMO: dict[tuple[str, str], str] = {
    ("pggit-exporter", "Label overflow"):
        "the demo stays far below max_label_values, so nothing is folded into __other__",
    ("pggit-exporter", "Errors per second by stage"):
        "a healthy run has no exporter errors, and the counter has no series before the first",
}
# Panels whose data comes and goes within seconds in the demo, so an instant query may or may
# not see any: not required to answer, and not flagged when they do.
MAY_BE_EMPTY: dict[tuple[str, str], str] = {
    ("pggit-alerts", "Prometheus alerts firing for pgGit"):
        "only the `for: 0` alerts can fire in a short demo, and they need a baseline violation "
        "(or anomaly) inside their window, which most but not all demo runs produce",
    ("pggit-alerts", "Unacknowledged alerts"):
        "the demo acknowledges alerts within seconds; with none open the gauge has no series",
    ("pggit-alerts", "Oldest pending notification"):
        "absent by design while no notification waits, and the demo delivers within seconds",
}

HAS_SILENCER = importlib.util.find_spec("exporter.silences") is not None
if not HAS_SILENCER:
    EMPTY_IN_SHORT_DEMO[("pggit-exporter", "Alertmanager silences")] = (
        "the exporter's snooze-to-silence sync (exporter.silences) is not written yet")


def job_name() -> str:
    params = REPO / "prometheus" / "params.yml"
    if params.is_file():
        return (yaml.safe_load(params.read_text(encoding="utf-8")) or {}).get(
            "job", "pggit-exporter")
    return "pggit-exporter"


@pytest.fixture(scope="module")
def prometheus(pg_server: Any, tmp_path_factory: pytest.TempPathFactory
               ) -> Iterator[PrometheusServer]:
    if shutil.which("prometheus") is None:
        pytest.skip("prometheus is not installed (Debian package prometheus)")
    rule_files = sorted(RULES_DIR.glob("*.yml"))
    if not rule_files:
        pytest.skip("prometheus/rules/*.yml not written yet: panels read recording rules")
    from exporter.demo.schema import install_schema
    from exporter.demo.workload import Workload

    workdir = tmp_path_factory.mktemp("dashboards-live")
    name = f"dashboards_live_{int(time.time())}"
    dsn = pg_server.create_database(name)
    install_schema(dsn)
    receiver = Receiver()
    receiver.start()
    alertmanager = AlertmanagerServer(
        write_yaml(workdir / "alertmanager.yml", {"route": {"receiver": "null"},
                                                  "receivers": [{"name": "null"}]}), workdir)
    silences = {"enabled": HAS_SILENCER, "alertmanager_url": alertmanager.url,
                "sync_interval": "2s"}
    cfg = write_config(workdir / "exporter.yml", dsn, workdir / "state",
                       poll_interval="1s", gauge_interval="1s",
                       traces={"endpoint": receiver.grpc_endpoint, "protocol": "grpc",
                               "insecure": True},
                       silences=silences)
    exporter = ExporterProcess(cfg)
    server = PrometheusServer(write_yaml(workdir / "prometheus.yml", {
        "global": {"scrape_interval": SCRAPE_INTERVAL, "scrape_timeout": SCRAPE_INTERVAL,
                   "evaluation_interval": "1s"},
        "rule_files": [str(p) for p in rule_files],
        "scrape_configs": [{"job_name": job_name(),
                            "static_configs": [{"targets": [f"127.0.0.1:{exporter.port}"]}]}],
    }), workdir)
    # The demo's production rates give about one threshold alert an hour; the alert panels
    # need some within this short run, so outliers come at the rate of a bad day.
    workload = Workload(dsn, seed=7, ops_per_second=30.0, threads=3,
                        outlier_probability=0.005)
    try:
        server.wait_ready()
        workload.start()
        # Past the deadline the tests run anyway and name the panels still without data.
        deadline = time.monotonic() + DEMO_SECONDS_MAX
        while time.monotonic() < deadline:
            time.sleep(CHECK_EVERY_SECONDS)
            _, empty = panel_answers(server, good_moment(server))
            if empty <= set(EMPTY_IN_SHORT_DEMO):
                break
        yield server
    finally:
        workload.stop()
        server.stop()
        exporter.close()
        alertmanager.stop()
        receiver.stop()
        pg_server.drop_database(name)


def good_moment(server: PrometheusServer) -> float:
    """A time just after a successful scrape, once the rules have evaluated on it.

    A timed-out scrape marks every series stale, and on a loaded machine some scrapes time
    out; querying at a moment right after a good scrape is what Grafana would show then.
    """
    def last_good() -> float | None:
        result = server.api("query", query="up[3m]")["data"]["result"]
        times = [float(t) for r in result for t, v in r["values"] if v == "1"]
        return max(times) if times else None

    scraped = wait_for(last_good, 30, 0.5, "a successful scrape")
    moment = scraped + 1.5
    time.sleep(max(0.0, moment - time.time()))
    return moment


def evaluate(server: PrometheusServer, target: dict[str, Any], at: float) -> dict[str, Any]:
    """The query as Grafana sends it: instant for tables and gauges, else a range."""
    expr = substitute(target["expr"], rate_interval=RATE_INTERVAL)
    if target["instant"]:
        return server.api("query", query=expr, time=f"{at:.3f}")
    return server.api("query_range", query=expr, start=f"{at - 60:.3f}", end=f"{at:.3f}",
                      step="5")


def panel_answers(server: PrometheusServer, at: float
                  ) -> tuple[set[tuple[str, str]], set[tuple[str, str]]]:
    """(dashboard, panel title) of the panels that answer at `at`, and of those that must
    answer but do not. A panel answers when any of its queries returns series (e.g. observed
    p99 with no baseline yet still draws a line)."""
    empty: set[tuple[str, str]] = set()
    answered: set[tuple[str, str]] = set()
    for name, panel, target in targets(DASHBOARDS):
        result = evaluate(server, target, at).get("data", {}).get("result", [])
        (answered if result else empty).add((name, panel["title"]))
    return answered, empty - answered - set(MAY_BE_EMPTY)


def test_every_panel_query_evaluates_without_error(prometheus: PrometheusServer) -> None:
    failures = {}
    at = good_moment(prometheus)
    for name, panel, target in targets(DASHBOARDS):
        body = evaluate(prometheus, target, at)
        if body.get("status") != "success":
            failures[(name, panel["title"], target["refId"])] = body.get("error")
    assert failures == {}


def test_panels_whose_data_the_demo_produces_return_series(
        prometheus: PrometheusServer) -> None:
    answered, empty = panel_answers(prometheus, good_moment(prometheus))
    assert empty - set(EMPTY_IN_SHORT_DEMO) == set(), "panels without data"
    assert set(EMPTY_IN_SHORT_DEMO) & answered == set(), "stale entries in EMPTY_IN_SHORT_DEMO"


def test_every_variable_query_offers_values(prometheus: PrometheusServer) -> None:
    at = good_moment(prometheus)
    d = DASHBOARDS["pggit-overview"]
    for var in d["templating"]["list"]:
        if var["type"] != "query":
            continue
        query = substitute(var["definition"])
        inner, label = query.removeprefix("label_values(").removesuffix(")").rsplit(",", 1)
        body = prometheus.api("series", start=f"{at - 5:.3f}", end=f"{at:.3f}",
                              **{"match[]": inner.strip()})
        values = {s.get(label.strip()) for s in body["data"]}
        assert values - {None}, var["name"]


def test_heatmap_exemplars_carry_a_trace_id(prometheus: PrometheusServer) -> None:
    """The exemplar link into the trace backend needs `trace_id` on the stored exemplars."""
    now = time.time()
    body = prometheus.api("query_exemplars", query="pggit_span_duration_seconds_bucket",
                          start=f"{now - 120:.3f}", end=f"{now:.3f}")
    exemplars = [e for s in body["data"] for e in s["exemplars"]]
    assert exemplars, "no exemplars stored (OpenMetrics scrape and exemplar storage)"
    assert all(e["labels"].get("trace_id") for e in exemplars)


def test_rules_loaded_into_prometheus_are_the_shipped_ones(
        prometheus: PrometheusServer) -> None:
    groups = prometheus.api("rules")["data"]["groups"]
    files = {Path(g["file"]).name for g in groups}
    assert files == {p.name for p in RULES_DIR.glob("*.yml")}
    assert all(r.get("health") != "err" for g in groups for r in g["rules"])
