"""Helpers for the dashboard tests: the committed JSON and its PromQL.

Kept out of conftest so the dashboard tests can import them by name. The real Prometheus they
query is `tests.prom_processes.PrometheusServer`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
DASHBOARD_DIR = REPO / "grafana" / "dashboards"
PROVISIONING_DIR = REPO / "grafana" / "provisioning"
RULES_DIR = REPO / "prometheus" / "rules"
PGGIT_VIEWS = REPO / "tests" / "data" / "pggit_views.txt"

# What Grafana would put in for its built-in and our dashboard variables when a user picks
# "All" everywhere: every variable is used with =~, so ".*" selects everything.
VARIABLE_VALUES = {
    "job": ".*",
    "database": ".*",
    "branch": ".*",
    "operation_type": ".*",
}


def pggit_views() -> dict[str, str]:
    """View name -> "deployed" or "specified", from the list kept in tests/data."""
    views = {}
    for line in PGGIT_VIEWS.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            name, status = line.split()
            views[name] = status
    return views


def load_dashboards() -> dict[str, dict[str, Any]]:
    """File stem -> parsed JSON of every committed dashboard."""
    return {p.stem: json.loads(p.read_text(encoding="utf-8"))
            for p in sorted(DASHBOARD_DIR.glob("*.json"))}


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, including those nested in collapsed rows."""
    for p in dashboard.get("panels", []):
        yield p
        yield from p.get("panels", [])


def targets(dashboards: dict[str, dict[str, Any]]
            ) -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(dashboard stem, panel, target) for every query target."""
    for name, d in dashboards.items():
        for p in panels(d):
            for t in p.get("targets", []):
                yield name, p, t


def substitute(expr: str, *, rate_interval: str = "1m", range_: str = "5m") -> str:
    """Replace Grafana's template variables the way Grafana would before sending the query."""
    builtins = {"__rate_interval": rate_interval, "__interval": "15s", "__range": range_}
    values = {**builtins, **VARIABLE_VALUES}

    def repl(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2)
        if name not in values:
            raise KeyError(f"unknown template variable ${name} in {expr!r}")
        return values[name]

    return re.sub(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)", repl, expr)


_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGES = re.compile(r"\[[^\[\]]*\]")
_GROUPING = re.compile(
    r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", re.IGNORECASE)
_IDENT = re.compile(r"(?<![\w.])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?")
_KEYWORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left",
             "group_right", "offset", "bool", "inf", "nan", "atan2"}


def metric_names(expr: str) -> set[str]:
    """The metric (and recording rule) names a PromQL expression reads.

    A tokenizer, not a parser: strings, label matchers, range selectors and grouping label
    lists are removed first, then every identifier that is not a function call or a keyword
    is a metric name. Parse errors are promtool's job, not this one's.
    """
    text = _STRING.sub('""', expr)
    text = _MATCHERS.sub(" ", text)
    text = _RANGES.sub(" ", text)
    text = _GROUPING.sub(" ", text)
    names = set()
    for m in _IDENT.finditer(text):
        name, call = m.group(1), m.group(2)
        if call or name.lower() in _KEYWORDS:
            continue
        names.add(name)
    return names


def recorded_rule_names() -> set[str]:
    """Every `record:` name in the committed Prometheus rule files."""
    names: set[str] = set()
    for path in sorted(RULES_DIR.glob("*.yml")):
        doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        for group in doc.get("groups", []):
            names.update(r["record"] for r in group.get("rules", []) if "record" in r)
    return names
