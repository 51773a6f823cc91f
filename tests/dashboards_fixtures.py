"""Helpers for the dashboard tests: the committed JSON, its PromQL, and a real Prometheus.

Kept out of conftest so the dashboard tests can import them by name; nothing here is a mock:
`PrometheusServer` runs the real `prometheus` binary on a loopback port.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
DASHBOARD_DIR = REPO / "grafana" / "dashboards"
PROVISIONING_DIR = REPO / "grafana" / "provisioning"
RULES_DIR = REPO / "prometheus" / "rules"
SCHEMA_DOC = REPO.parent / "shared" / "PGGIT_SCHEMA.md"
SEEDS_DIR = REPO.parent / "shared" / "seeds"

# What Grafana would put in for its built-in and our dashboard variables when a user picks
# "All" everywhere: every variable is used with =~, so ".*" selects everything.
VARIABLE_VALUES = {
    "job": ".*",
    "database": ".*",
    "branch": ".*",
    "operation_type": ".*",
}


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


class PrometheusServer:
    """The real `prometheus` binary scraping given targets, on a loopback port."""

    def __init__(self, workdir: Path, port: int, targets: list[str],
                 rule_files: list[Path], job: str = "pggit-exporter",
                 scrape_interval: str = "1s") -> None:
        binary = shutil.which("prometheus")
        if binary is None:
            raise FileNotFoundError("prometheus")
        self.url = f"http://127.0.0.1:{port}"
        config = {
            "global": {"scrape_interval": scrape_interval, "scrape_timeout": scrape_interval,
                       "evaluation_interval": "1s"},
            "rule_files": [str(p) for p in rule_files],
            "scrape_configs": [{"job_name": job, "static_configs": [{"targets": targets}]}],
        }
        cfg_path = workdir / "prometheus.yml"
        cfg_path.write_text(yaml.safe_dump(config), encoding="utf-8")
        self.log_path = workdir / "prometheus.log"
        self.log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [binary, f"--config.file={cfg_path}", f"--storage.tsdb.path={workdir / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{port}", "--enable-feature=exemplar-storage"],
            stdout=self.log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"prometheus exited: {self.log_tail()}")
            try:
                with urllib.request.urlopen(self.url + "/-/ready", timeout=2) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"prometheus not ready: {self.log_tail()}")

    def api(self, path: str, **params: str) -> dict[str, Any]:
        """GET an API path; returns the decoded body even for 4xx (Prometheus' error JSON)."""
        url = f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=30) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return json.loads(exc.read() or b"{}") | {"http_status": exc.code}

    def log_tail(self, lines: int = 20) -> str:
        self.log.flush()
        text = self.log_path.read_text(encoding="utf-8", errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.log.close()


class AlertmanagerServer:
    """The real Alertmanager on a loopback port, clustering off, routing everything nowhere."""

    def __init__(self, workdir: Path, port: int) -> None:
        binary = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
        if binary is None:
            raise FileNotFoundError("alertmanager")
        self.url = f"http://127.0.0.1:{port}"
        cfg_path = workdir / "alertmanager.yml"
        cfg_path.write_text(yaml.safe_dump({"route": {"receiver": "null"},
                                            "receivers": [{"name": "null"}]}))
        self.log = (workdir / "alertmanager.log").open("wb")
        self.proc = subprocess.Popen(
            [binary, f"--config.file={cfg_path}", f"--storage.path={workdir / 'am'}",
             f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="],
            stdout=self.log, stderr=subprocess.STDOUT)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.log.close()
