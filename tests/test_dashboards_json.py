"""The committed dashboards are importable by Grafana and keep our conventions.

No JSON schema for Grafana dashboards is published on PyPI or npm (@grafana/schema ships
TypeScript types only), so these are structural checks written against what Grafana's
importer and provisioning need: ids, uids, gridPos, variables, datasources.
"""

from __future__ import annotations

import re
from itertools import combinations
from typing import Any

import yaml

from exporter.dashboards import dump, render_all
from tests.dashboards_fixtures import (
    DASHBOARD_DIR,
    PROVISIONING_DIR,
    load_dashboards,
    panels,
    pggit_views,
    targets,
)

DASHBOARDS = load_dashboards()
EXPECTED_UIDS = {"pggit-overview", "pggit-operation", "pggit-branches", "pggit-merges",
                 "pggit-alerts", "pggit-baselines", "pggit-traces", "pggit-exporter"}
ALLOWED_DATASOURCE_UIDS = {"${datasource}", "${traces_datasource}", "-- Grafana --"}
BUILTIN_VARIABLES = {"__all", "__rate_interval", "__interval", "__range", "__url_time_range",
                     "__field", "__value", "__series", "__data"}
VIEW = re.compile(r"\bv_[a-z0-9_]+\b")


def data_panels(d: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in panels(d) if p["type"] != "row"]


def walk(obj: Any) -> Any:
    """Every dict nested anywhere in `obj`."""
    if isinstance(obj, dict):
        yield obj
        for v in obj.values():
            yield from walk(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from walk(v)


def test_committed_json_is_what_the_generator_renders() -> None:
    rendered = render_all()
    assert set(rendered) == set(DASHBOARDS), "run: python -m exporter.dashboards"
    for name, d in rendered.items():
        committed = (DASHBOARD_DIR / f"{name}.json").read_text(encoding="utf-8")
        assert committed == dump(d), f"{name}.json is stale; run python -m exporter.dashboards"


def test_every_dashboard_has_its_stable_uid_and_a_current_schema_version() -> None:
    assert {d["uid"] for d in DASHBOARDS.values()} == EXPECTED_UIDS
    for d in DASHBOARDS.values():
        assert d["schemaVersion"] >= 39
        assert d["id"] is None, "an id would collide on import into another Grafana"
        assert d["title"].startswith("pgGit / ")
        assert "pggit" in d["tags"] and len(d["tags"]) >= 2


def test_panel_ids_are_unique_within_each_dashboard() -> None:
    for name, d in DASHBOARDS.items():
        ids = [p["id"] for p in panels(d)]
        assert len(ids) == len(set(ids)), name
        assert all(isinstance(i, int) and i > 0 for i in ids), name


def test_panels_fit_the_grid_without_overlapping() -> None:
    for name, d in DASHBOARDS.items():
        boxes = [(p["title"], p["gridPos"]) for p in d["panels"]]
        for title, g in boxes:
            assert g["x"] >= 0 and g["y"] >= 0 and g["w"] > 0 and g["h"] > 0, (name, title)
            assert g["x"] + g["w"] <= 24, (name, title)
        for (t1, a), (t2, b) in combinations(boxes, 2):
            overlap = (a["x"] < b["x"] + b["w"] and b["x"] < a["x"] + a["w"]
                       and a["y"] < b["y"] + b["h"] and b["y"] < a["y"] + a["h"])
            assert not overlap, f"{name}: {t1!r} overlaps {t2!r}"


def test_every_panel_has_a_unit_and_a_description_naming_a_pgGit_view() -> None:
    for name, d in DASHBOARDS.items():
        for p in data_panels(d):
            assert p["fieldConfig"]["defaults"].get("unit"), (name, p["title"])
            assert VIEW.search(p["description"]), (name, p["title"], p["description"])


def test_views_the_panels_name_exist_in_pgGit() -> None:
    known = set(pggit_views())
    for name, d in DASHBOARDS.items():
        for p in data_panels(d):
            for view in VIEW.findall(p["description"]):
                assert view in known, f"{name}/{p['title']}: {view} is no pgGit view"


def test_every_deployed_pgGit_view_is_answered_by_some_panel() -> None:
    deployed = {v for v, status in pggit_views().items() if status == "deployed"}
    assert len(deployed) > 30
    named = {v for d in DASHBOARDS.values() for p in data_panels(d)
             for v in VIEW.findall(p["description"])}
    assert deployed - named == set()


def test_no_panel_or_target_hard_codes_a_datasource_uid() -> None:
    for name, d in DASHBOARDS.items():
        for obj in walk(d):
            ds = obj.get("datasource")
            if isinstance(ds, dict):
                assert ds.get("uid") in ALLOWED_DATASOURCE_UIDS, (name, ds)
            elif ds is not None:
                assert ds in ALLOWED_DATASOURCE_UIDS, (name, ds)


def test_variables_include_datasources_and_the_label_filters() -> None:
    for name, d in DASHBOARDS.items():
        variables = {v["name"]: v for v in d["templating"]["list"]}
        assert variables["datasource"]["type"] == "datasource"
        assert variables["datasource"]["query"] == "prometheus"
        assert variables["traces_datasource"]["type"] == "datasource"
        assert variables["traces_datasource"]["query"] == "tempo"
        for label in ("job", "database", "branch", "operation_type"):
            assert variables[label]["type"] == "query", (name, label)
            assert variables[label]["datasource"]["uid"] == "${datasource}"


def test_every_variable_a_dashboard_uses_is_defined() -> None:
    pattern = re.compile(r"\$\{(\w+)|\$(\w+)")
    for name, d in DASHBOARDS.items():
        defined = {v["name"] for v in d["templating"]["list"]} | BUILTIN_VARIABLES
        text = dump(d)
        used = {a or b for a, b in pattern.findall(text)}
        assert used - defined == set(), name


def test_dashboards_link_to_each_other() -> None:
    for name, d in DASHBOARDS.items():
        links = d["links"]
        assert any(link["type"] == "dashboards" and "pggit" in link["tags"]
                   and link["includeVars"] and link["keepTime"] for link in links), name


def test_data_links_point_at_existing_dashboards() -> None:
    for name, d in DASHBOARDS.items():
        for p in data_panels(d):
            for link in p["fieldConfig"]["defaults"].get("links", []):
                uid = re.match(r"/d/([\w-]+)", link["url"])
                assert uid and uid.group(1) in EXPECTED_UIDS, (name, p["title"], link)


def test_histogram_heatmaps_request_exemplars() -> None:
    heatmaps = [(name, p) for name, d in DASHBOARDS.items() for p in data_panels(d)
                if p["type"] == "heatmap"]
    assert {name for name, _ in heatmaps} >= {"pggit-operation", "pggit-traces"}
    for _, p in heatmaps:
        assert p["options"]["calculate"] is False, "buckets come precomputed from Prometheus"
        assert all(t["exemplar"] and t["format"] == "heatmap" for t in p["targets"])


def test_provisioned_prometheus_links_exemplars_to_the_provisioned_tempo() -> None:
    docs = [yaml.safe_load(p.read_text(encoding="utf-8"))
            for p in sorted((PROVISIONING_DIR / "datasources").glob("*.yml"))]
    sources = {ds["type"]: ds for doc in docs for ds in doc["datasources"]}
    destinations = sources["prometheus"]["jsonData"]["exemplarTraceIdDestinations"]
    assert [dest["name"] for dest in destinations] == ["trace_id"]
    assert destinations[0]["datasourceUid"] == sources["tempo"]["uid"]


def test_exemplar_label_is_the_one_the_exporter_writes() -> None:
    from prometheus_client.openmetrics.parser import text_string_to_metric_families

    from exporter.expose.families import Histogram
    from exporter.expose.text import Encoder

    labels = ("op", "span", "SUCCESS")
    part = Histogram("pggit_span_duration_seconds", {labels: [1, 1, 0.5]}, (1.0,), ("db",),
                     {labels: {0: ("abc", 0.5, 1.0)}})
    text = Encoder(openmetrics=True).encode([part]).decode() + "# EOF\n"
    exemplars = [s.exemplar for f in text_string_to_metric_families(text) for s in f.samples
                 if s.exemplar is not None]
    assert [set(e.labels) for e in exemplars] == [{"trace_id"}]


def test_per_user_activity_is_explained_where_it_is_missing() -> None:
    texts = [p for d in DASHBOARDS.values() for p in panels(d)
             if "v_user_performance_activity" in p.get("description", "")]
    assert texts, "v_user_performance_activity must be addressed"
    assert all("opt-in" in p["options"].get("content", p["description"]) for p in texts)


def test_stat_and_table_panels_query_what_they_display() -> None:
    for _, p, t in targets(DASHBOARDS):
        assert t["expr"].strip(), p["title"]
        if p["type"] in ("table",):
            assert t["instant"] and t["format"] == "table", p["title"]
        if p["type"] in ("bargauge", "piechart"):
            assert t["instant"], p["title"]
