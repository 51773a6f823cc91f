"""Just enough of Grafana's dashboard model to write the pgGit dashboards as data.

Hand-editing eight dashboards of JSON drifts: one panel forgets its unit, another hard-codes a
datasource UID, a third names a metric that was renamed. Here every panel goes through one
constructor that insists on a unit and on a description naming the pgGit view it replaces,
every selector is built from the metric catalog (so a metric that is not served cannot be
named, and a label a metric does not carry is never filtered on), and the layout is computed,
so panels cannot overlap.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from exporter.catalog import METRICS, Metric
from exporter.dashboards.rules import PROMETHEUS_SERIES, RECORDING_RULES

SCHEMA_VERSION = 39
GRID_WIDTH = 24
TAG = "pggit"

PROMETHEUS = {"type": "prometheus", "uid": "${datasource}"}
TEMPO = {"type": "tempo", "uid": "${traces_datasource}"}

# Dashboard variable for each label it filters; every selector uses `=~` so "All" is `.*`.
LABEL_VARIABLES = {
    "job": "job",
    "database": "database",
    "branch": "branch",
    "operation_type": "operation_type",
}
_HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def _catalog_metric(series: str) -> Metric | None:
    """The catalog family a sample name belongs to (`x_bucket` belongs to histogram `x`)."""
    if series in METRICS:
        return METRICS[series]
    for suffix in _HISTOGRAM_SUFFIXES:
        base = series.removesuffix(suffix)
        if base != series and base in METRICS and METRICS[base].kind == "histogram":
            return METRICS[base]
    return None


def series_labels(series: str) -> tuple[str, ...]:
    """Labels a series carries in Prometheus, including the `job` the scrape adds."""
    m = _catalog_metric(series)
    if m is not None:
        return ("job", *m.all_labels)
    if series in RECORDING_RULES:
        return RECORDING_RULES[series]
    if series in PROMETHEUS_SERIES:
        return ("job",) if series != "ALERTS" else ()
    raise KeyError(f"{series!r} is neither in the metric catalog nor a known recording rule")


def sel(series: str, *matchers: str, skip: tuple[str, ...] = ()) -> str:
    """`series{...}` filtered by every dashboard variable the series has a label for.

    `matchers` are extra PromQL label matchers (`'severity="CRITICAL"'`); `skip` leaves a
    variable out where a panel deliberately shows all values (e.g. all branches of a merge).
    """
    labels = series_labels(series)
    m = _catalog_metric(series)
    # A baseline with branch="" holds for every branch, so it stays when a branch is chosen.
    all_branch = m is not None and m.source == "performance_baselines"
    parts = [f'{label}=~"${var}{"|" if all_branch and label == "branch" else ""}"'
             for label, var in LABEL_VARIABLES.items()
             if label in labels and label not in skip]
    parts.extend(matchers)
    return f"{series}{{{', '.join(parts)}}}"


@dataclass(frozen=True)
class Query:
    """One panel target. `instant` for tables and bar gauges, `fmt` for heatmaps and tables."""

    expr: str
    legend: str = ""
    instant: bool = False
    fmt: str = "time_series"
    exemplar: bool = False

    def to_json(self, ref_id: str) -> dict[str, Any]:
        return {
            "refId": ref_id,
            "datasource": PROMETHEUS,
            "editorMode": "code",
            "expr": self.expr,
            "legendFormat": self.legend or "__auto",
            "range": not self.instant,
            "instant": self.instant,
            "format": self.fmt,
            "exemplar": self.exemplar,
        }


@dataclass
class Panel:
    """A panel before layout; `replaces` names the pgGit view(s) whose question it answers."""

    kind: str
    title: str
    description: str
    replaces: str
    unit: str
    queries: list[Query] = field(default_factory=list)
    width: int = 12
    height: int = 8
    options: dict[str, Any] = field(default_factory=dict)
    custom: dict[str, Any] = field(default_factory=dict)
    thresholds: list[tuple[float | None, str]] | None = None
    links: list[dict[str, Any]] = field(default_factory=list)
    transformations: list[dict[str, Any]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self, panel_id: int, grid: dict[str, int]) -> dict[str, Any]:
        steps = self.thresholds or [(None, "green")]
        defaults: dict[str, Any] = {
            "unit": self.unit,
            "thresholds": {"mode": "absolute",
                           "steps": [{"color": c, "value": v} for v, c in steps]},
            "color": {"mode": "thresholds" if self.kind == "stat" else "palette-classic"},
            "links": self.links,
        }
        if self.custom:
            defaults["custom"] = self.custom
        out: dict[str, Any] = {
            "id": panel_id,
            "type": self.kind,
            "title": self.title,
            "description": f"{self.description} Replaces pgGit's {self.replaces}.",
            "gridPos": grid,
            "fieldConfig": {"defaults": defaults, "overrides": []},
            "options": self.options,
        }
        if self.queries:
            out["datasource"] = PROMETHEUS
            out["targets"] = [q.to_json(chr(ord("A") + i)) for i, q in enumerate(self.queries)]
        if self.transformations:
            out["transformations"] = self.transformations
        out.update(self.extra)
        return out


_LEGEND = {"showLegend": True, "displayMode": "table", "placement": "bottom",
           "calcs": ["mean", "max", "lastNotNull"]}
_REDUCE = {"calcs": ["lastNotNull"], "fields": "", "values": False}


def timeseries(title: str, description: str, replaces: str, unit: str, *queries: Query,
               stack: bool = False, **kw: Any) -> Panel:
    custom = {"drawStyle": "line", "lineWidth": 1, "fillOpacity": 10 if not stack else 60,
              "showPoints": "never", "spanNulls": False,
              "stacking": {"mode": "normal" if stack else "none", "group": "A"}}
    options = {"legend": _LEGEND, "tooltip": {"mode": "multi", "sort": "desc"}}
    return Panel("timeseries", title, description, replaces, unit, list(queries),
                 options=options, custom=custom, **kw)


def stat(title: str, description: str, replaces: str, unit: str, *queries: Query,
         text_mode: str = "auto", **kw: Any) -> Panel:
    kw.setdefault("width", 4)
    kw.setdefault("height", 4)
    options = {"reduceOptions": _REDUCE, "colorMode": "value", "graphMode": "area",
               "justifyMode": "auto", "orientation": "auto", "textMode": text_mode}
    return Panel("stat", title, description, replaces, unit, list(queries), options=options,
                 **kw)


def bargauge(title: str, description: str, replaces: str, unit: str, *queries: Query,
             **kw: Any) -> Panel:
    options = {"reduceOptions": _REDUCE, "displayMode": "gradient",
               "orientation": "horizontal", "showUnfilled": True, "valueMode": "color"}
    return Panel("bargauge", title, description, replaces, unit, list(queries),
                 options=options, **kw)


def piechart(title: str, description: str, replaces: str, unit: str, *queries: Query,
             **kw: Any) -> Panel:
    options = {"reduceOptions": _REDUCE, "pieType": "donut",
               "legend": {"showLegend": True, "displayMode": "table", "placement": "right",
                          "values": ["value", "percent"]},
               "tooltip": {"mode": "single", "sort": "none"}}
    return Panel("piechart", title, description, replaces, unit, list(queries),
                 options=options, **kw)


def table(title: str, description: str, replaces: str, unit: str, *queries: Query,
          hide: tuple[str, ...] = ("Time",), **kw: Any) -> Panel:
    """An instant-query table; several queries are joined on their labels (one row per set)."""
    transformations: list[dict[str, Any]] = []
    if len(queries) > 1:
        transformations.append({"id": "merge", "options": {}})
    transformations.append({"id": "organize", "options": {
        "excludeByName": dict.fromkeys(hide, True), "renameByName": {}}})
    options = {"showHeader": True, "cellHeight": "sm",
               "footer": {"show": False, "reducer": ["sum"], "fields": ""}}
    return Panel("table", title, description, replaces, unit,
                 [Query(q.expr, q.legend, instant=True, fmt="table") for q in queries],
                 options=options, transformations=transformations, **kw)


def heatmap(title: str, description: str, replaces: str, query: Query, **kw: Any) -> Panel:
    """A latency heatmap straight from the histogram buckets, exemplars on (trace links)."""
    options = {
        "calculate": False,
        "cellGap": 1,
        "color": {"mode": "scheme", "scheme": "Oranges", "fill": "dark-orange",
                  "scale": "exponential", "exponent": 0.5, "steps": 64, "reverse": False},
        "exemplars": {"color": "rgba(255,0,255,0.7)"},
        "filterValues": {"le": 1e-9},
        "legend": {"show": True},
        "rowsFrame": {"layout": "auto"},
        "tooltip": {"mode": "single", "yHistogram": True, "showColorScale": False},
        "yAxis": {"axisPlacement": "left", "unit": "s", "reverse": False},
    }
    q = Query(query.expr, "{{le}}", fmt="heatmap", exemplar=True)
    return Panel("heatmap", title, description, replaces, "s", [q], options=options, **kw)


def text(title: str, content: str, replaces: str, **kw: Any) -> Panel:
    kw.setdefault("width", GRID_WIDTH)
    kw.setdefault("height", 4)
    return Panel("text", title, content.split("\n", 1)[0], replaces, "none",
                 options={"mode": "markdown", "content": content,
                          "code": {"language": "plaintext", "showLineNumbers": False,
                                   "showMiniMap": False}}, **kw)


def dashboard_link(uid: str, title: str, var: str = "", field_label: str = "") -> dict[str, str]:
    """A data link to another pgGit dashboard, carrying time range and variables.

    With `var`, the clicked series' label `field_label` becomes that variable's value.
    """
    url = f"/d/{uid}?${{__url_time_range}}&${{datasource:queryparam}}"
    for v in ("job", "database"):
        url += f"&${{{v}:queryparam}}"
    if var:
        url += f"&var-{var}=${{__field.labels.{field_label or var}}}"
    return {"title": title, "url": url}


def _variable(name: str, label: str, query: str, *, multi: bool = True) -> dict[str, Any]:
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": PROMETHEUS,
        "definition": query,
        "query": {"query": query, "refId": "PrometheusVariableQueryEditor-VariableQuery",
                  "qryType": 1},
        "refresh": 2,
        "sort": 1,
        "multi": multi,
        "includeAll": multi,
        "allValue": ".*",
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]} if multi else {},
        "options": [],
        "regex": "",
        "hide": 0,
    }


def variables(*, single_operation_type: bool = False) -> list[dict[str, Any]]:
    """Datasources first (everything else queries through them), then narrowing filters."""
    count = "pggit_operation_duration_seconds_count"
    return [
        {"name": "datasource", "label": "Prometheus", "type": "datasource",
         "query": "prometheus", "current": {}, "hide": 0, "refresh": 1, "regex": "",
         "options": []},
        {"name": "traces_datasource", "label": "Traces", "type": "datasource",
         "query": "tempo", "current": {}, "hide": 0, "refresh": 1, "regex": "",
         "options": []},
        _variable("job", "Job", "label_values(pggit_up, job)"),
        _variable("database", "Database",
                  'label_values(pggit_up{job=~"$job"}, database)'),
        _variable("branch", "Branch",
                  f'label_values({count}{{job=~"$job", database=~"$database"}}, branch)'),
        _variable("operation_type", "Operation type",
                  f'label_values({count}{{job=~"$job", database=~"$database"}}, '
                  "operation_type)", multi=not single_operation_type),
    ]


@dataclass
class Board:
    """A dashboard being laid out left to right, top to bottom on Grafana's 24-column grid."""

    uid: str
    title: str
    description: str
    tags: tuple[str, ...] = ()
    single_operation_type: bool = False
    panels: list[dict[str, Any]] = field(default_factory=list)
    _x: int = 0
    _y: int = 0
    _line_height: int = 0

    def _newline(self) -> None:
        if self._x:
            self._y += self._line_height
        self._x = 0
        self._line_height = 0

    def row(self, title: str) -> Board:
        self._newline()
        self.panels.append({"id": len(self.panels) + 1, "type": "row", "title": title,
                            "collapsed": False, "panels": [],
                            "gridPos": {"x": 0, "y": self._y, "w": GRID_WIDTH, "h": 1}})
        self._y += 1
        return self

    def add(self, *panels: Panel) -> Board:
        for p in panels:
            if self._x + p.width > GRID_WIDTH:
                self._newline()
            grid = {"x": self._x, "y": self._y, "w": p.width, "h": p.height}
            self.panels.append(p.to_json(len(self.panels) + 1, grid))
            self._x += p.width
            self._line_height = max(self._line_height, p.height)
        return self

    def to_json(self) -> dict[str, Any]:
        return {
            "id": None,
            "uid": self.uid,
            "title": self.title,
            "description": self.description,
            "tags": [TAG, *self.tags],
            "timezone": "browser",
            "editable": True,
            "graphTooltip": 1,
            "fiscalYearStartMonth": 0,
            "liveNow": False,
            "refresh": "30s",
            "schemaVersion": SCHEMA_VERSION,
            "version": 1,
            "time": {"from": "now-1h", "to": "now"},
            "timepicker": {},
            "weekStart": "",
            "annotations": {"list": [{
                "builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                "enable": True, "hide": True, "iconColor": "rgba(0, 211, 255, 1)",
                "name": "Annotations & Alerts", "type": "dashboard"}]},
            "links": [{"title": "pgGit dashboards", "type": "dashboards", "tags": [TAG],
                       "asDropdown": True, "includeVars": True, "keepTime": True,
                       "targetBlank": False, "icon": "external link", "tooltip": "",
                       "url": ""}],
            "templating": {"list": variables(single_operation_type=self.single_operation_type)},
            "panels": self.panels,
        }
