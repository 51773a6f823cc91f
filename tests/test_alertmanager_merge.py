"""pgGit's Alertmanager piece merged into another organisation's config leaves it intact.

The organisation below has its own root receiver, team routes and an inhibit rule of its own;
after `render.merge_into` (the README's documented merge) the real amtool must still route
every one of its alerts, with and without `database` / `operation_type` labels, to the same
receiver as before, and a real Alertmanager must never inhibit one of them because of a pgGit
alert, nor a pgGit alert because of one of them.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from exporter import render
from tests.exporter_fixtures import wait_for
from tests.prom_processes import AlertmanagerServer, write_yaml
from tests.rules_fixtures import http_json, run_tool, running

ORG: dict[str, Any] = {
    "route": {
        "receiver": "org-default",
        "group_by": ["alertname"],
        "routes": [
            {"matchers": ['team="web"'], "receiver": "web-oncall"},
            {"matchers": ['severity="critical"'], "receiver": "org-pager"},
        ],
    },
    "inhibit_rules": [{"source_matchers": ['alertname="DatacenterDown"'],
                       "target_matchers": ['severity="warning"'], "equal": ["dc"]}],
    "receivers": [{"name": "org-default"}, {"name": "web-oncall"}, {"name": "org-pager"}],
}
PGGIT_LABELS = ("job=pggit-exporter", "database=db1", "operation_type=commit",
                "alert_type=THRESHOLD_EXCEEDED")
OTHER_TEAMS = [
    (("alertname=NodeDown", "severity=critical", "instance=db1"), "org-pager"),
    (("alertname=NodeDiskFilling", "severity=warning", "instance=web7", "team=web"),
     "web-oncall"),
    (("alertname=PostgresReplicationLag", "severity=warning", "database=db1"), "org-default"),
    (("alertname=PostgresSlowQueries", "severity=critical", *PGGIT_LABELS), "org-pager"),
    (("alertname=AppLatency", "severity=warning", "operation_type=commit", "team=web"),
     "web-oncall"),
    (("alertname=AppErrors", "severity=info", "database=db1", "operation_type=commit"),
     "org-default"),
]


def _merged() -> dict[str, Any]:
    return render.merge_into(ORG, render.alertmanager_piece(render.DEFAULTS))


def _routes(config: Path, labels: tuple[str, ...]) -> list[str]:
    result = run_tool("amtool", "config", "routes", "test", f"--config.file={config}", *labels)
    assert result.returncode == 0, result.stderr
    return sorted(result.stdout.split())


@pytest.fixture(scope="module")
def configs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    workdir = tmp_path_factory.mktemp("merge")
    merged = _merged()
    merged["templates"] = []
    return write_yaml(workdir / "org.yml", ORG), write_yaml(workdir / "merged.yml", merged)


def test_the_merged_config_is_valid(configs: tuple[Path, Path]) -> None:
    result = run_tool("amtool", "check-config", str(configs[1]))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(("labels", "receiver"), OTHER_TEAMS,
                         ids=[labels[0] for labels, _ in OTHER_TEAMS])
def test_other_teams_alerts_keep_their_receiver(configs: tuple[Path, Path],
                                                labels: tuple[str, ...], receiver: str) -> None:
    org, merged = configs
    assert _routes(org, labels) == [receiver]
    assert _routes(merged, labels) == [receiver]


@pytest.mark.parametrize(("severity", "receiver"), [
    ("critical", "pggit-critical"), ("warning", "pggit-chat"), ("info", "pggit-info")])
def test_pggit_alerts_take_the_pggit_route(configs: tuple[Path, Path], severity: str,
                                           receiver: str) -> None:
    labels = ("alertname=PggitThresholdExceeded", f"severity={severity}", *PGGIT_LABELS)
    assert _routes(configs[1], labels) == [receiver]


def test_every_pggit_inhibit_rule_names_pggit_alerts_on_both_sides() -> None:
    for rule in render.alertmanager_piece(render.DEFAULTS)["inhibit_rules"]:
        for side in ("source_matchers", "target_matchers"):
            assert any(m.startswith('alertname=~"Pggit') or m.startswith('alertname="Pggit')
                       for m in rule[side]), rule


def test_a_receiver_name_clash_is_refused() -> None:
    org = {**ORG, "receivers": [*ORG["receivers"], {"name": "pggit-chat"}]}
    with pytest.raises(render.ParamsError, match="pggit-chat"):
        render.merge_into(org, render.alertmanager_piece(render.DEFAULTS))


@pytest.fixture(scope="module")
def merged_am(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    workdir = tmp_path_factory.mktemp("merged-am")
    cfg = _merged()
    cfg["templates"] = []
    for receiver in cfg["receivers"]:
        for key in [k for k in receiver if k.endswith("_configs")]:
            del receiver[key]
    with running(AlertmanagerServer, write_yaml(workdir / "alertmanager.yml", cfg),
                 workdir) as url:
        yield url


def _labels(pairs: tuple[str, ...]) -> dict[str, str]:
    return dict(p.split("=", 1) for p in pairs)


def _inhibited_by(am_url: str) -> dict[str, list[str]]:
    return {a["labels"]["alertname"]: a["status"]["inhibitedBy"]
            for a in http_json("GET", f"{am_url}/api/v2/alerts")}


def test_no_other_teams_alert_is_inhibited_and_none_inhibits_pggit(merged_am: str) -> None:
    pggit = [
        {"alertname": "PggitThresholdEscalation", "severity": "critical",
         **_labels(PGGIT_LABELS)},
        {"alertname": "PggitThresholdExceeded", "severity": "warning", **_labels(PGGIT_LABELS)},
        {"alertname": "PggitExporterTargetDown", "severity": "critical",
         "job": "pggit-exporter", "alert_type": "EXPORTER", "instance": "db1"},
    ]
    others = [_labels(labels) for labels, _ in OTHER_TEAMS]
    # Another team's critical with exactly the labels a pgGit warning compares on.
    others.append({"alertname": "PgBouncerDown", "severity": "critical",
                   "database": "db1", "alert_type": "EXPORTER", "job": "pggit-exporter"})
    http_json("POST", f"{merged_am}/api/v2/alerts",
              [{"labels": labels} for labels in pggit + others])
    # The pgGit pair proves the inhibitions are live, so an empty list below means something.
    wait_for(lambda: _inhibited_by(merged_am).get("PggitThresholdExceeded"), 30,
             what="the pgGit WARNING to be inhibited by its CRITICAL")
    status = _inhibited_by(merged_am)
    assert {o["alertname"]: status[o["alertname"]] for o in others} == {
        o["alertname"]: [] for o in others}
    assert status["PggitThresholdEscalation"] == []
    assert status["PggitExporterTargetDown"] == []
