"""pgGit's own path through the real stack: database -> exporter -> Prometheus -> Alertmanager.

Metrics and a baseline go in through pgGit's writer functions; slow operations then produce
the WARNING and, at the third violation within the hour, the CRITICAL at a webhook receiver in
this test, each exactly once per group, with the committed rules' labels and annotations. A
snooze written in pgGit mutes its operation's alerts through the exporter's silence sync.
Prometheus runs the committed rules unchanged (scrape and evaluation every second) and
scrapes with the README's own snippet (only its target and interval replaced), so a job name
that disagreed with the rules would fail here; only the Alertmanager timing is shortened
through render parameters. A second test starts on a database with violations in its history
and restarts everything that can restart: history never notifies, news does.
"""

from __future__ import annotations

import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
import yaml

from exporter import render
from tests.exporter_fixtures import ExporterProcess, parse, scrape, total, wait_for, write_config
from tests.prom_processes import AlertmanagerServer, PrometheusServer, write_yaml
from tests.rules_fixtures import (
    ROOT,
    Notification,
    WebhookReceiver,
    http_json,
    require_tool,
    running,
    webhook_alertmanager_config,
    webhook_receiver,
)

AM_PARAMS = {"alertmanager": {"group_wait": "1s", "group_interval": "2s",
                              "repeat_interval": "1h", "critical_repeat_interval": "1h"}}
# 10..29 ms: pgGit's interpolated p99 is 28.81 ms, so the threshold (x2.0) is 57.62 ms.
BASELINE_US = [10_000 + 1_000 * i for i in range(20)]
SLOW_US = 500_000
RUNBOOKS = render.DEFAULTS["runbook_base_url"]


@dataclass
class Stack:
    dsn: str
    exporter: ExporterProcess
    am_url: str
    prom_url: str
    receiver: WebhookReceiver

    def record(self, op: str, duration_us: int) -> float:
        """Write one operation the way pgGit does; returns when it was committed."""
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute("SELECT pggit.record_performance_metric(%s, %s)", (op, duration_us))
        return time.time()

    def firing(self, alertname: str, op: str) -> list[Notification]:
        return [n for n in self.receiver.received()
                if n.alertname == alertname and n.payload["status"] == "firing"
                and n.payload["groupLabels"].get("operation_type") == op]

    def notified_ops(self, alert_type: str) -> set[str]:
        return {a["labels"].get("operation_type", "") for n in self.receiver.received()
                for a in n.payload["alerts"] if a["labels"].get("alert_type") == alert_type}


def _seed(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        for op in ("commit", "rollback"):
            for us in BASELINE_US:
                conn.execute("SELECT pggit.record_performance_metric(%s, %s)", (op, us))
            conn.execute("SELECT pggit.calculate_performance_baseline(%s, NULL, 7, 2.0)", (op,))
        conn.execute("SELECT pggit.snooze_alerts('rollback', 'THRESHOLD_EXCEEDED', "
                     "interval '1 hour', 'e2e maintenance', 'carol')")


@pytest.fixture
def stack(pggit_dsn: str, tmp_path: Path) -> Iterator[Stack]:
    require_tool("prometheus")
    require_tool("prometheus-alertmanager")
    _seed(pggit_dsn)
    params = render.merge_params(AM_PARAMS)
    with webhook_receiver() as receiver, running(
            AlertmanagerServer, write_yaml(tmp_path / "alertmanager.yml",
                                           webhook_alertmanager_config(params, receiver.url)),
            tmp_path) as am_url:
        cfg = write_config(tmp_path / "exporter.yml", pggit_dsn, tmp_path / "state",
                           silences={"enabled": True, "alertmanager_url": am_url,
                                     "sync_interval": "500ms"})
        exporter = ExporterProcess(cfg)
        try:
            prom_cfg = _prometheus_config(tmp_path, am_url, exporter.port)
            with running(PrometheusServer, prom_cfg, tmp_path) as prom_url:
                yield Stack(pggit_dsn, exporter, am_url, prom_url, receiver)
        finally:
            exporter.close()


def readme_scrape_config(target: str) -> dict:
    """The README's Prometheus snippet as written, pointed at `target`, scraping every second."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = readme.split("<!-- scrape-snippet:start -->\n```yaml\n", 1)[1].split("```", 1)[0]
    [job] = yaml.safe_load(block)["scrape_configs"]
    return job | {"scrape_interval": "1s", "static_configs": [{"targets": [target]}]}


def _prometheus_config(tmp_path: Path, am_url: str, port: int) -> Path:
    return write_yaml(tmp_path / "prometheus.yml", {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(ROOT / render.RECORDING_FILE), str(ROOT / render.ALERTS_FILE)],
        "alerting": {"alertmanagers": [
            {"static_configs": [{"targets": [am_url.removeprefix("http://")]}]}]},
        "scrape_configs": [readme_scrape_config(f"127.0.0.1:{port}")],
    })


def _ready(stack: Stack) -> None:
    """Exporter sees both baselines, Prometheus scrapes it, the snooze is a silence."""
    def exporter_ready() -> bool:
        samples = parse(scrape(stack.exporter.port))
        return all(total(samples, "pggit_baseline_threshold_seconds", operation_type=op) > 0
                   for op in ("commit", "rollback"))

    wait_for(exporter_ready, 30, what="the exporter to expose both baselines")
    wait_for(lambda: http_json("GET", f"{stack.prom_url}/api/v1/query?query="
                                      "pggit_baseline_threshold_seconds")["data"]["result"],
             30, what="Prometheus to scrape the exporter")
    wait_for(lambda: [s for s in http_json("GET", f"{stack.am_url}/api/v2/silences")
                      if s["status"]["state"] == "active"], 30,
             what="the rollback snooze to become a silence")


def test_slow_operations_page_warning_then_critical_once_and_snooze_mutes(
        stack: Stack, record_property: pytest.RecordProperty) -> None:
    _ready(stack)
    for _ in range(3):
        stack.record("rollback", SLOW_US)

    first = stack.record("commit", SLOW_US)
    [warning] = wait_for(lambda: stack.firing("PggitThresholdExceeded", "commit"), 60,
                         what="the WARNING at the webhook")
    stack.record("commit", SLOW_US)
    third = stack.record("commit", SLOW_US)
    [critical] = wait_for(lambda: stack.firing("PggitThresholdEscalation", "commit"), 60,
                          what="the CRITICAL at the webhook")
    record_property("warning_delay_seconds", round(warning.received_at - first, 2))
    record_property("critical_delay_seconds", round(critical.received_at - third, 2))
    print(f"delay insert->webhook: WARNING {warning.received_at - first:.2f}s, "
          f"CRITICAL {critical.received_at - third:.2f}s")

    assert warning.payload["receiver"] == "pggit-chat"
    [alert] = warning.payload["alerts"]
    assert alert["labels"] | {"instance": ""} == {
        "alertname": "PggitThresholdExceeded", "severity": "warning",
        "alert_type": "THRESHOLD_EXCEEDED", "operation_type": "commit", "database": "main",
        "job": "pggit-exporter", "instance": ""}
    summary = alert["annotations"]["summary"]
    assert summary.startswith("pgGit operation commit took up to "), summary
    assert summary.endswith(", above its baseline threshold of 57.62ms"), summary
    assert "unknown" not in summary
    assert alert["annotations"]["description"].startswith("1 commit operation(s) in database main")
    assert "(p99 times the multiplier: 57.62ms)" in alert["annotations"]["description"]
    assert alert["annotations"]["runbook_url"] == f"{RUNBOOKS}/PggitThresholdExceeded.md"

    assert critical.payload["receiver"] == "pggit-critical"
    [alert] = critical.payload["alerts"]
    assert alert["labels"]["severity"] == "critical"
    assert alert["annotations"]["description"].startswith("3 commit operations in database main")
    assert alert["annotations"]["runbook_url"] == f"{RUNBOOKS}/PggitThresholdEscalation.md"

    # Several group intervals later: no repeat of either group (the CRITICAL inhibits the
    # WARNING), and nothing at all for the snoozed operation, although its alerts fire.
    wait_for(lambda: _silenced(stack, "rollback"), 30,
             what="the snoozed rollback alerts to be silenced")
    time.sleep(5)
    assert len(stack.firing("PggitThresholdExceeded", "commit")) == 1
    assert len(stack.firing("PggitThresholdEscalation", "commit")) == 1
    assert "rollback" not in stack.notified_ops("THRESHOLD_EXCEEDED")

    # A snooze written while the commit alerts fire mutes them too.
    with psycopg.connect(stack.dsn, autocommit=True) as conn:
        conn.execute("SELECT pggit.snooze_alerts('commit', 'THRESHOLD_EXCEEDED', "
                     "interval '30 minutes', 'investigating', 'dave')")
    wait_for(lambda: _silenced(stack, "commit"), 30, what="the firing commit alerts to be muted")


def _silenced(stack: Stack, op: str) -> bool:
    """Both threshold alerts of `op` reached Alertmanager and are silenced there."""
    alerts = [a for a in http_json("GET", f"{stack.am_url}/api/v2/alerts")
              if a["labels"].get("operation_type") == op]
    names = {a["labels"]["alertname"] for a in alerts if a["status"]["silencedBy"]}
    return {"PggitThresholdExceeded", "PggitThresholdEscalation"} <= names



def _query(prom_url: str, expr: str) -> list[dict]:
    return http_json("GET", f"{prom_url}/api/v1/query?"
                     + urllib.parse.urlencode({"query": expr}))["data"]["result"]


def _violations_seen(prom_url: str, value: float) -> bool:
    result = _query(prom_url, 'sum(pggit_operation_baseline_violations_total'
                              '{operation_type="commit"})')
    return bool(result) and float(result[0]["value"][1]) == value


@contextmanager
def _prometheus(workdir: Path, am_url: str, port: int) -> Iterator[str]:
    workdir.mkdir(parents=True, exist_ok=True)
    with running(PrometheusServer, _prometheus_config(workdir, am_url, port), workdir) as url:
        yield url


def _quiet_for(prom_url: str, receiver: WebhookReceiver, seconds: float, what: str) -> None:
    """Several rule evaluations pass with the history in view and nothing fires."""
    wait_for(lambda: _violations_seen(prom_url, 3), 30, what=f"Prometheus to see 3 ({what})")
    time.sleep(seconds)
    assert _query(prom_url, 'ALERTS{alert_type="THRESHOLD_EXCEEDED"}') == [], what
    assert [n.payload for n in receiver.received()
            if n.payload["commonLabels"].get("alert_type") == "THRESHOLD_EXCEEDED"] == [], what


def test_history_never_notifies_and_a_new_violation_does(pggit_dsn: str, tmp_path: Path) -> None:
    require_tool("prometheus")
    require_tool("prometheus-alertmanager")
    _seed(pggit_dsn)
    with psycopg.connect(pggit_dsn, autocommit=True) as conn:
        for _ in range(3):  # weeks-old violations, as far as the rules can tell
            conn.execute("SELECT pggit.record_performance_metric('commit', %s)", (SLOW_US,))
    params = render.merge_params(AM_PARAMS)
    with webhook_receiver() as receiver, running(
            AlertmanagerServer, write_yaml(tmp_path / "alertmanager.yml",
                                           webhook_alertmanager_config(params, receiver.url)),
            tmp_path) as am_url:
        cfg = write_config(tmp_path / "exporter.yml", pggit_dsn, tmp_path / "state")
        exporter = ExporterProcess(cfg)
        try:
            with _prometheus(tmp_path / "prom", am_url, exporter.port) as prom_url:
                _quiet_for(prom_url, receiver, 5, "backfill on first start")
                exporter.terminate()
                exporter.close()
                exporter = ExporterProcess(cfg)
                # A restart quicker than a scrape interval never shows as up == 0; the new
                # process's start time is what Prometheus must have scraped.
                wait_for(lambda: _query(prom_url, "changes(process_start_time_seconds[5m]) > 0"),
                         30, what="Prometheus to scrape the restarted exporter")
                _quiet_for(prom_url, receiver, 5, "exporter restart")
            with _prometheus(tmp_path / "prom", am_url, exporter.port) as prom_url:
                _quiet_for(prom_url, receiver, 5, "Prometheus restart keeping its data")
            with _prometheus(tmp_path / "prom-new", am_url, exporter.port) as prom_url:
                _quiet_for(prom_url, receiver, 5, "Prometheus without the data, or a job rename")
                with psycopg.connect(pggit_dsn, autocommit=True) as conn:
                    [branch] = conn.execute(
                        "INSERT INTO pggit.branches (branch_name, created_by) "
                        "VALUES ('feature-x', 'e2e') RETURNING branch_id").fetchone()
                    conn.execute("SELECT pggit.record_performance_metric('commit', %s, NULL, %s)",
                                 (BASELINE_US[0], branch))
                    wait_for(lambda: len(_query(
                        prom_url, 'pggit_operation_baseline_violations_total'
                                  '{operation_type="commit"} == 0')) == 1, 30,
                        what="the new branch's violation counter, born at 0")
                    conn.execute("SELECT pggit.record_performance_metric('commit', %s, NULL, %s)",
                                 (SLOW_US, branch))
                [warning] = wait_for(lambda: [
                    n for n in receiver.received() if n.payload["status"] == "firing"
                    and n.alertname == "PggitThresholdExceeded"], 60,
                    what="the new branch's first violation at the webhook")
                [alert] = warning.payload["alerts"]
                assert alert["annotations"]["description"].startswith(
                    "1 commit operation(s) in database main")
                time.sleep(3)
                assert [n.alertname for n in receiver.received()] == ["PggitThresholdExceeded"]
        finally:
            exporter.close()
