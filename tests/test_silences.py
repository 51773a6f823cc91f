"""pgGit snoozes become Alertmanager silences (real PostgreSQL, real Alertmanager)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import psycopg
import pytest
from prometheus_client import CollectorRegistry

from exporter.config import DatabaseConfig, SilencesConfig
from exporter.db import Database
from exporter.expose.self_metrics import SelfMetrics
from exporter.silences import SnoozeSilencer, _parse_time
from tests.exporter_fixtures import free_port, wait_for
from tests.rules_fixtures import http_json


@pytest.fixture(autouse=True)
def no_silences_left(am_url: str) -> Iterator[None]:
    """Each test starts from an Alertmanager without silences in force."""
    yield
    for silence in http_json("GET", f"{am_url}/api/v2/silences"):
        if silence["status"]["state"] != "expired":
            http_json("DELETE", f"{am_url}/api/v2/silence/{silence['id']}")


@dataclass
class Setup:
    dsn: str
    am_url: str
    database: Database
    registry: CollectorRegistry
    metrics: SelfMetrics

    def silencer(self, name: str = "main", url: str | None = None) -> SnoozeSilencer:
        cfg = SilencesConfig(enabled=True, alertmanager_url=url or self.am_url,
                             sync_interval=0.2, timeout=2.0)
        return SnoozeSilencer(name, self.database.connect, self.database.table("alert_snooze"),
                              cfg, self.metrics)

    def sql(self, query: str, *params: object) -> object:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            row = conn.execute(query, params).fetchone()
        return row[0] if row else None

    def snooze(self, op: str = "commit", alert_type: str = "THRESHOLD_EXCEEDED",
               duration: str = "2 hours", reason: str | None = "deploy of v2",
               by: str = "alice") -> int:
        return self.sql("SELECT pggit.snooze_alerts(%s, %s, %s::interval, %s, %s)",
                        op, alert_type, duration, reason, by)

    def silences(self) -> list[dict]:
        return [s for s in http_json("GET", f"{self.am_url}/api/v2/silences")
                if s["status"]["state"] != "expired"]

    def metric(self, name: str) -> float | None:
        return self.registry.get_sample_value(name, {"database": "main"})


def _make(dsn: str, am_url: str, tables: dict[str, str] | None = None) -> Iterator[Setup]:
    database = Database(DatabaseConfig(name="main", dsn=dsn, tables=tables or {}))
    registry = CollectorRegistry()
    try:
        yield Setup(dsn, am_url, database, registry, SelfMetrics(registry))
    finally:
        database.close()


@pytest.fixture
def setup(pggit_dsn: str, am_url: str) -> Iterator[Setup]:
    yield from _make(pggit_dsn, am_url)


def _matchers(silence: dict) -> dict[str, str]:
    return {m["name"]: m["value"] for m in silence["matchers"] if m["isEqual"]}


def test_active_snooze_becomes_a_silence_on_operation_and_alert_type(setup: Setup) -> None:
    snooze_id = setup.snooze()
    assert setup.silencer().sync_once() == 1
    [silence] = setup.silences()
    assert _matchers(silence) == {"operation_type": "commit", "alert_type": "THRESHOLD_EXCEEDED",
                                  "database": "main"}
    assert silence["createdBy"] == "alice"
    assert silence["comment"].startswith("deploy of v2 ")
    assert f"snooze_id={snooze_id}]" in silence["comment"]


def test_renamed_snooze_table_is_read_under_its_configured_name(
        pggit_dsn: str, am_url: str) -> None:
    with psycopg.connect(pggit_dsn, autocommit=True) as conn:
        conn.execute("ALTER TABLE pggit.alert_snooze RENAME TO snoozes_elsewhere")
        conn.execute("CREATE TABLE pggit.alert_snooze (LIKE pggit.snoozes_elsewhere)")
        conn.execute("INSERT INTO pggit.snoozes_elsewhere (operation_type, alert_type, "
                     "snooze_until, created_by) VALUES ('commit', 'THRESHOLD_EXCEEDED', "
                     "now() + interval '1 hour', 'carol')")
    for setup in _make(pggit_dsn, am_url, {"alert_snooze": "snoozes_elsewhere"}):
        assert setup.silencer().sync_once() == 1
        [silence] = setup.silences()
        assert silence["createdBy"] == "carol"


def test_silence_ends_when_the_snooze_does(setup: Setup) -> None:
    snooze_id = setup.snooze()
    setup.silencer().sync_once()
    until = setup.sql("SELECT extract(epoch FROM snooze_until::timestamptz)::float8 "
                      "FROM pggit.alert_snooze WHERE snooze_id = %s", snooze_id)
    [silence] = setup.silences()
    ends = http_json("GET", f"{setup.am_url}/api/v2/silence/{silence['id']}")["endsAt"]
    assert abs(_parse_time(ends) - until) < 0.01


def test_syncing_again_and_after_a_restart_creates_no_duplicate(setup: Setup) -> None:
    setup.snooze()
    setup.silencer().sync_once()
    setup.silencer().sync_once()
    setup.silencer().sync_once()
    assert len(setup.silences()) == 1


def test_duplicate_silences_of_one_snooze_are_reduced_to_one(setup: Setup) -> None:
    setup.snooze()
    silencer = setup.silencer()
    silencer.sync_once()
    [silence] = setup.silences()
    copy = {k: silence[k] for k in ("matchers", "startsAt", "endsAt", "createdBy", "comment")}
    http_json("POST", f"{setup.am_url}/api/v2/silences", copy)
    assert len(setup.silences()) == 2
    silencer.sync_once()
    assert len(setup.silences()) == 1


def test_extended_snooze_moves_the_silence_end(setup: Setup) -> None:
    snooze_id = setup.snooze(duration="1 hour")
    silencer = setup.silencer()
    silencer.sync_once()
    [before] = setup.silences()
    setup.sql("UPDATE pggit.alert_snooze SET snooze_until = snooze_until + interval '3 hours' "
              "WHERE snooze_id = %s RETURNING 1", snooze_id)
    silencer.sync_once()
    [after] = setup.silences()
    assert _parse_time(after["endsAt"]) - _parse_time(before["endsAt"]) == pytest.approx(
        3 * 3600, abs=1)


def test_deactivated_snooze_expires_its_silence(setup: Setup) -> None:
    snooze_id = setup.snooze()
    silencer = setup.silencer()
    silencer.sync_once()
    setup.sql("UPDATE pggit.alert_snooze SET is_active = false WHERE snooze_id = %s "
              "RETURNING 1", snooze_id)
    assert silencer.sync_once() == 0
    assert setup.silences() == []
    assert setup.metric("pggit_exporter_silences") == 0


def test_snooze_that_ended_expires_its_silence(setup: Setup) -> None:
    snooze_id = setup.snooze()
    silencer = setup.silencer()
    silencer.sync_once()
    setup.sql("UPDATE pggit.alert_snooze SET snooze_until = CURRENT_TIMESTAMP - interval '1 s' "
              "WHERE snooze_id = %s RETURNING 1", snooze_id)
    silencer.sync_once()
    assert setup.silences() == []


def test_replacing_a_snooze_leaves_one_silence_for_the_new_row(setup: Setup) -> None:
    setup.snooze(duration="1 hour")
    silencer = setup.silencer()
    silencer.sync_once()
    new_id = setup.snooze(duration="5 hours", reason="longer window")
    silencer.sync_once()
    [silence] = setup.silences()
    assert f"snooze_id={new_id}]" in silence["comment"]
    assert silence["comment"].startswith("longer window ")


def test_silence_mutes_the_matching_alert_only(setup: Setup) -> None:
    setup.snooze(op="commit", alert_type="ANOMALY")
    setup.silencer().sync_once()
    labels = {"job": "pggit-exporter", "database": "main", "severity": "warning",
              "alertname": "PggitLatencyAnomaly", "alert_type": "ANOMALY"}
    http_json("POST", f"{setup.am_url}/api/v2/alerts", [
        {"labels": {**labels, "operation_type": "commit"}},
        {"labels": {**labels, "operation_type": "merge"}},
        {"labels": {**labels, "operation_type": "commit", "alert_type": "THRESHOLD_EXCEEDED",
                    "alertname": "PggitThresholdExceeded"}},
    ])

    def states() -> dict[tuple[str, str], bool]:
        return {(a["labels"]["alertname"], a["labels"]["operation_type"]):
                bool(a["status"]["silencedBy"])
                for a in http_json("GET", f"{setup.am_url}/api/v2/alerts")
                if a["labels"].get("database") == "main"}

    got = wait_for(lambda: (s := states()) and len(s) >= 3 and s, what="alerts in Alertmanager")
    assert got[("PggitLatencyAnomaly", "commit")] is True
    assert got[("PggitLatencyAnomaly", "merge")] is False
    assert got[("PggitThresholdExceeded", "commit")] is False


def test_silences_of_other_databases_and_people_are_left_alone(setup: Setup) -> None:
    setup.snooze()
    manual = http_json("POST", f"{setup.am_url}/api/v2/silences", {
        "matchers": [{"name": "alertname", "value": "PggitExporterLagHigh", "isRegex": False}],
        "startsAt": "2020-01-01T00:00:00Z", "endsAt": "2099-01-01T00:00:00Z",
        "createdBy": "bob", "comment": "manual"})["silenceID"]
    setup.silencer(name="other").sync_once()   # database "other" has the same snooze table
    setup.silencer().sync_once()
    ids = {s["id"] for s in setup.silences()}
    assert manual in ids and len(ids) == 3


def test_unreachable_alertmanager_counts_a_sync_error(setup: Setup) -> None:
    setup.snooze()
    silencer = setup.silencer(url=f"http://127.0.0.1:{free_port()}")
    with pytest.raises(OSError):
        silencer.sync_once()
    assert setup.metric("pggit_exporter_silence_sync_errors_total") == 1


def test_background_thread_keeps_silences_in_step(setup: Setup) -> None:
    silencer = setup.silencer()
    silencer.start()
    try:
        snooze_id = setup.snooze()
        wait_for(lambda: len(setup.silences()) == 1, what="the silence to appear")
        setup.sql("UPDATE pggit.alert_snooze SET is_active = false WHERE snooze_id = %s "
                  "RETURNING 1", snooze_id)
        wait_for(lambda: setup.silences() == [], what="the silence to expire")
    finally:
        silencer.stop()


@pytest.fixture
def core_setup(pggit_core_dsn: str, am_url: str) -> Iterator[Setup]:
    yield from _make(pggit_core_dsn, am_url)


def test_database_without_snooze_table_has_no_silences_and_no_errors(core_setup: Setup) -> None:
    assert core_setup.silencer().sync_once() == 0
    assert core_setup.metric("pggit_exporter_silence_sync_errors_total") == 0

