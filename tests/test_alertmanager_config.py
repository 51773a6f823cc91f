"""The Alertmanager config: valid for the real amtool, routes as pgGit designed, no secrets."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from exporter import render
from tests.rules_fixtures import ROOT, render_files, run_tool

CONFIG = ROOT / render.ALERTMANAGER_FILE
SECRET_KEYS = {"api_url", "routing_key", "service_key", "auth_password", "auth_secret",
               "url", "api_key", "token", "bot_token"}


def _routes_test(*labels: str) -> list[str]:
    result = run_tool("amtool", "config", "routes", "test", f"--config.file={CONFIG}", *labels)
    assert result.returncode == 0, result.stderr
    return sorted(result.stdout.split())


def test_amtool_check_config_accepts_the_committed_config() -> None:
    result = run_tool("amtool", "check-config", str(CONFIG))
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_shipped_templates_load_with_the_config(tmp_path: Path) -> None:
    paths = render_files(tmp_path, {"alertmanager": {
        "templates_dir": str(ROOT / "alertmanager" / "templates")}})
    result = run_tool("amtool", "check-config", str(paths[render.ALERTMANAGER_FILE]))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 templates" in result.stdout


def test_the_shipped_templates_render() -> None:
    result = run_tool("amtool", "template", "render",
                      f"--template.glob={ROOT / 'alertmanager' / 'templates' / '*.tmpl'}",
                      '--template.text={{ template "pggit.title" . }}|'
                      '{{ template "pggit.text" . }}')
    assert result.returncode == 0, result.stderr
    assert "runbook:" in result.stdout


def test_no_secret_is_written_into_the_config() -> None:
    cfg = yaml.safe_load(CONFIG.read_text())
    found = []

    def walk(node: object, path: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in SECRET_KEYS:
                    found.append(f"{path}.{key}")
                walk(value, f"{path}.{key}")
        elif isinstance(node, list):
            for i, item in enumerate(node):
                walk(item, f"{path}[{i}]")

    walk(cfg, "")
    assert found == []
    for receiver in cfg["receivers"]:
        for integration in (v for k, v in receiver.items() if k.endswith("_configs")):
            for item in integration:
                assert any(k.endswith("_file") for k in item), receiver["name"]


@pytest.mark.parametrize(("labels", "receiver"), [
    (("alertname=PggitThresholdEscalation", "severity=critical", "operation_type=commit",
      "alert_type=THRESHOLD_EXCEEDED"), "pggit-critical"),
    (("alertname=PggitThresholdExceeded", "severity=warning", "operation_type=commit",
      "alert_type=THRESHOLD_EXCEEDED"), "pggit-chat"),
    (("alertname=PggitLatencyDegradation", "severity=info", "operation_type=merge",
      "alert_type=DEGRADATION"), "pggit-info"),
    (("alertname=PggitExporterTargetDown", "severity=critical", "instance=db1:9863"),
     "pggit-critical"),
    (("alertname=PggitExporterLagHigh", "severity=warning", "database=main",
      "table=performance_metrics"), "pggit-chat"),
    (("alertname=PggitThresholdExceededEscalated", "severity=critical",
      "escalated_from=warning", "operation_type=commit"), "pggit-critical"),
    (("alertname=PggitLatencyDegradationEscalated", "severity=warning",
      "escalated_from=info", "operation_type=commit"), "pggit-chat"),
    (("alertname=PggitSomethingNew",), "pggit-chat"),
    (("alertname=NodeDown", "severity=critical", "database=main"), render.NEUTRAL_RECEIVER),
    (("alertname=NodeDiskFilling", "severity=warning", "operation_type=commit",
      "alert_type=THRESHOLD_EXCEEDED"), render.NEUTRAL_RECEIVER),
])
def test_route_by_severity(labels: tuple[str, ...], receiver: str) -> None:
    assert _routes_test(*labels) == [receiver]


def test_critical_receiver_pages_emails_and_chats_at_once() -> None:
    cfg = yaml.safe_load(CONFIG.read_text())
    critical = next(r for r in cfg["receivers"] if r["name"] == "pggit-critical")
    assert {"pagerduty_configs", "email_configs", "slack_configs"} <= set(critical)
    assert len(critical["slack_configs"]) == 2  # Slack and Mattermost's Slack-compatible hook


def test_info_goes_to_slack_only_and_warning_to_slack_and_mattermost() -> None:
    cfg = yaml.safe_load(CONFIG.read_text())
    receivers = {r["name"]: r for r in cfg["receivers"]}
    chat_urls = [c["api_url_file"] for c in receivers["pggit-chat"]["slack_configs"]]
    info_urls = [c["api_url_file"] for c in receivers["pggit-info"]["slack_configs"]]
    assert len(chat_urls) == 2 and any("mattermost" in u for u in chat_urls)
    assert info_urls == [u for u in chat_urls if "slack" in u]


def test_alerts_group_by_alert_name_and_operation_type() -> None:
    [route] = yaml.safe_load(CONFIG.read_text())["route"]["routes"]
    assert {"alertname", "operation_type"} <= set(route["group_by"])


def test_the_demo_root_receiver_sends_nothing() -> None:
    cfg = yaml.safe_load(CONFIG.read_text())
    root = cfg["route"]["receiver"]
    [receiver] = [r for r in cfg["receivers"] if r["name"] == root]
    assert receiver == {"name": root}


def test_config_documents_a_maintenance_window_mute() -> None:
    text = CONFIG.read_text()
    assert "# time_intervals:" in text and "mute_time_intervals" in text
