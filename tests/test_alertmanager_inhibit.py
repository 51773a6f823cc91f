"""Inhibition in a real Alertmanager: a CRITICAL mutes the matching WARNING, and only that."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

from exporter import render
from tests.exporter_fixtures import wait_for
from tests.prom_processes import AlertmanagerServer, write_yaml
from tests.rules_fixtures import (
    Notification,
    http_json,
    running,
    webhook_alertmanager_config,
    webhook_receiver,
)

BASE = {"job": "pggit-exporter", "database": "main", "alert_type": "THRESHOLD_EXCEEDED"}


def _post(am_url: str, *alerts: dict[str, str]) -> None:
    http_json("POST", f"{am_url}/api/v2/alerts", [{"labels": a} for a in alerts])


def _inhibited(am_url: str, alertname: str, operation_type: str) -> list[str] | None:
    for alert in http_json("GET", f"{am_url}/api/v2/alerts"):
        labels = alert["labels"]
        if labels["alertname"] == alertname and labels.get("operation_type") == operation_type:
            return alert["status"]["inhibitedBy"]
    return None


def test_critical_mutes_the_warning_of_the_same_operation_and_alert_type(am_url: str) -> None:
    _post(am_url,
          {**BASE, "alertname": "PggitThresholdExceeded", "severity": "warning",
           "operation_type": "commit"},
          {**BASE, "alertname": "PggitThresholdEscalation", "severity": "critical",
           "operation_type": "commit"})
    assert wait_for(lambda: _inhibited(am_url, "PggitThresholdExceeded", "commit"),
                    what="the commit WARNING to be inhibited")


def test_critical_leaves_the_warning_of_another_operation_alone(am_url: str) -> None:
    _post(am_url,
          {**BASE, "alertname": "PggitThresholdExceeded", "severity": "warning",
           "operation_type": "merge"},
          {**BASE, "alertname": "PggitThresholdEscalation", "severity": "critical",
           "operation_type": "rollback"})
    wait_for(lambda: _inhibited(am_url, "PggitThresholdEscalation", "rollback") is not None,
             what="both alerts to arrive")
    assert _inhibited(am_url, "PggitThresholdExceeded", "merge") == []


def test_critical_leaves_a_warning_of_another_alert_type_alone(am_url: str) -> None:
    _post(am_url,
          {**BASE, "alertname": "PggitLatencyAnomaly", "severity": "warning",
           "operation_type": "branch_create", "alert_type": "ANOMALY"},
          {**BASE, "alertname": "PggitThresholdEscalation", "severity": "critical",
           "operation_type": "branch_create"})
    wait_for(lambda: _inhibited(am_url, "PggitThresholdEscalation", "branch_create") is not None,
             what="both alerts to arrive")
    assert _inhibited(am_url, "PggitLatencyAnomaly", "branch_create") == []


def test_warning_mutes_the_info_it_escalated_from(am_url: str) -> None:
    labels = {**BASE, "operation_type": "get_history", "alert_type": "DEGRADATION"}
    _post(am_url,
          {**labels, "alertname": "PggitLatencyDegradation", "severity": "info"},
          {**labels, "alertname": "PggitLatencyDegradationEscalated", "severity": "warning",
           "escalated_from": "info"})
    assert wait_for(lambda: _inhibited(am_url, "PggitLatencyDegradation", "get_history"),
                    what="the INFO to be inhibited")


def test_rendered_config_is_what_the_test_alertmanager_runs() -> None:
    cfg = webhook_alertmanager_config(render.DEFAULTS, "http://127.0.0.1:9/unused")
    rendered = render.alertmanager_config(render.DEFAULTS)
    assert cfg["route"] == rendered["route"]
    assert cfg["inhibit_rules"] == rendered["inhibit_rules"]
    assert [r["name"] for r in cfg["receivers"]] == [r["name"] for r in rendered["receivers"]]


def test_an_inhibited_warning_gets_no_resolved_notification(tmp_path: Path) -> None:
    """Pins what runbooks/README.md says: the warning's resolved notification never comes
    while it is muted, nor after its critical resolves; the critical's own resolved does."""
    params = render.merge_params({"alertmanager": {"group_wait": "1s", "group_interval": "1s"}})
    labels = {**BASE, "operation_type": "diff"}
    warning = {**labels, "alertname": "PggitThresholdExceeded", "severity": "warning"}
    critical = {**labels, "alertname": "PggitThresholdEscalation", "severity": "critical"}
    with webhook_receiver() as receiver, running(
            AlertmanagerServer, write_yaml(tmp_path / "alertmanager.yml",
                                           webhook_alertmanager_config(params, receiver.url)),
            tmp_path) as url:
        def sent(alertname: str, status: str) -> list[Notification]:
            return [n for n in receiver.received()
                    if n.alertname == alertname and n.payload["status"] == status]

        def post(alert: dict[str, str], resolved: bool = False) -> None:
            body: dict = {"labels": alert}
            if resolved:
                body["endsAt"] = datetime.now(UTC).isoformat()
            http_json("POST", f"{url}/api/v2/alerts", [body])

        post(warning)
        wait_for(lambda: sent("PggitThresholdExceeded", "firing"), 30, what="the WARNING")
        post(critical)
        wait_for(lambda: _inhibited(url, "PggitThresholdExceeded", "diff"), 30,
                 what="the WARNING to be inhibited")
        post(warning, resolved=True)
        time.sleep(4)
        post(critical, resolved=True)
        wait_for(lambda: sent("PggitThresholdEscalation", "resolved"), 30,
                 what="the CRITICAL's resolved notification")
        time.sleep(4)
        assert sent("PggitThresholdExceeded", "resolved") == []
