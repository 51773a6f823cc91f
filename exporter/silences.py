"""pgGit snoozes as Alertmanager silences, kept in step through Alertmanager's v2 API.

pgGit mutes an alert type for an operation with a row in `alert_snooze`; SREs mute with
Alertmanager silences. When enabled, every active, unexpired snooze becomes one silence with
matchers on `database`, `operation_type` and `alert_type` (every pgGit alert rule carries an
`alert_type` label in pgGit's vocabulary), ending at `snooze_until`, with the snooze's author
and reason. A changed snooze moves its silence, an ended or deactivated one expires it.

No local state: the silences this exporter owns are found in Alertmanager itself by a marker
in their comment that names the database and the snooze_id. A restart, a second replica or a
lost state directory therefore never duplicates a silence; the next sync converges instead.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import urllib.request
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg import sql

from exporter.config import SilencesConfig

log = logging.getLogger(__name__)

# An end time that moved by less than this is the same end time (Alertmanager stores ms).
END_TOLERANCE_SECONDS = 1.0


@dataclass(frozen=True)
class Snooze:
    snooze_id: int
    operation_type: str
    alert_type: str
    until: float
    reason: str | None
    created_by: str


class SnoozeSilencer:
    """Mirrors one database's active snoozes into Alertmanager silences."""

    def __init__(self, database_name: str,
                 connect: Callable[[], AbstractContextManager[psycopg.Connection]],
                 table: sql.Composable, cfg: SilencesConfig, self_metrics: Any):
        self.database = database_name
        self.connect = connect
        self.table = table
        self.cfg = cfg
        self.base_url = cfg.alertmanager_url.rstrip("/")
        self.silences_gauge = self_metrics["pggit_exporter_silences"].labels(database_name)
        self.errors = self_metrics["pggit_exporter_silence_sync_errors_total"].labels(
            database_name)
        self._marker = re.compile(
            rf"\[{re.escape(cfg.created_by_prefix)} database=(\S+) snooze_id=(\d+)\]$")
        self._table_missing_logged = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name=f"silences-{self.database}",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop syncing; the silences stay and end on their own at `snooze_until`."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.cfg.timeout + 5)
            self._thread = None

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.sync_once()
            except Exception as exc:  # logged and counted; the next round retries
                log.warning("silence sync failed",
                            extra={"database": self.database, "error": str(exc)})
            self._stop.wait(self.cfg.sync_interval)

    # ------------------------------------------------------------------ one round

    def sync_once(self) -> int:
        """Create, update and expire silences until they match the snoozes; returns their count.

        Any failure counts one sync error and is re-raised, and nothing is expired on a failed
        read: a database outage must not lift every mute at once.
        """
        try:
            snoozes = self._read_snoozes()
            owned = self._owned_silences()
            for snooze_id, snooze in snoozes.items():
                mine = owned.pop(snooze_id, [])
                keep = next((s for s in mine if self._matches(s, snooze)), None)
                if keep is None:
                    keep = mine[0] if mine else None
                    self._post(snooze, keep["id"] if keep else None)
                for duplicate in (s for s in mine if s is not keep):
                    self._expire(duplicate["id"])
            for leftovers in owned.values():
                for silence in leftovers:
                    self._expire(silence["id"])
        except Exception:
            self.errors.inc()
            raise
        self.silences_gauge.set(len(snoozes))
        return len(snoozes)

    def _read_snoozes(self) -> dict[int, Snooze]:
        query = sql.SQL(
            """SELECT snooze_id, operation_type, alert_type,
                      extract(epoch FROM snooze_until::timestamptz)::float8,
                      snooze_reason, created_by
                 FROM {}
                WHERE is_active AND snooze_until::timestamptz > now()
                ORDER BY snooze_id""").format(self.table)
        try:
            with self.connect() as conn:
                rows = conn.execute(query).fetchall()
        except psycopg.errors.UndefinedTable:
            if not self._table_missing_logged:
                log.info("no alert_snooze table; no snoozes to mirror",
                         extra={"database": self.database})
                self._table_missing_logged = True
            return {}
        return {r[0]: Snooze(r[0], r[1], r[2], r[3], r[4], r[5]) for r in rows}

    def _owned_silences(self) -> dict[int, list[dict[str, Any]]]:
        """This database's silences still in force, by snooze_id, oldest first."""
        owned: dict[int, list[dict[str, Any]]] = {}
        for silence in self._request("GET", "/api/v2/silences") or []:
            if silence["status"]["state"] == "expired":
                continue
            match = self._marker.search(silence.get("comment", ""))
            if match and match.group(1) == self.database:
                owned.setdefault(int(match.group(2)), []).append(silence)
        for silences in owned.values():
            silences.sort(key=lambda s: (s.get("updatedAt", ""), s["id"]))
        return owned

    # ------------------------------------------------------------------ silences

    def _matchers(self, snooze: Snooze) -> list[dict[str, Any]]:
        return [
            {"name": name, "value": value, "isRegex": False, "isEqual": True}
            for name, value in (("alert_type", snooze.alert_type),
                                ("database", self.database),
                                ("operation_type", snooze.operation_type))
        ]

    def _comment(self, snooze: Snooze) -> str:
        reason = snooze.reason or f"pgGit snooze of {snooze.alert_type} for {snooze.operation_type}"
        return (f"{reason} [{self.cfg.created_by_prefix} database={self.database} "
                f"snooze_id={snooze.snooze_id}]")

    def _matches(self, silence: dict[str, Any], snooze: Snooze) -> bool:
        matchers = sorted(
            ({"name": m["name"], "value": m["value"], "isRegex": m.get("isRegex", False),
              "isEqual": m.get("isEqual", True)} for m in silence["matchers"]),
            key=lambda m: m["name"])
        ends = _parse_time(silence["endsAt"])
        return (matchers == self._matchers(snooze)
                and abs(ends - snooze.until) < END_TOLERANCE_SECONDS
                and silence.get("createdBy") == snooze.created_by
                and silence.get("comment") == self._comment(snooze))

    def _post(self, snooze: Snooze, silence_id: str | None) -> None:
        """Create a silence, or replace `silence_id` (Alertmanager expires and recreates it
        when the change cannot be made in place)."""
        body: dict[str, Any] = {
            "matchers": self._matchers(snooze),
            "startsAt": _format_time(datetime.now(UTC).timestamp()),
            "endsAt": _format_time(snooze.until),
            "createdBy": snooze.created_by,
            "comment": self._comment(snooze),
        }
        if silence_id is not None:
            body["id"] = silence_id
        result = self._request("POST", "/api/v2/silences", body)
        log.info("silence set for snooze", extra={
            "database": self.database, "snooze_id": snooze.snooze_id,
            "silence_id": (result or {}).get("silenceID"), "until": body["endsAt"]})

    def _expire(self, silence_id: str) -> None:
        self._request("DELETE", f"/api/v2/silence/{silence_id}")
        log.info("silence expired", extra={"database": self.database, "silence_id": silence_id})

    def _request(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base_url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=self.cfg.timeout) as resp:
            raw = resp.read()
        return json.loads(raw) if raw.strip() else None


def _format_time(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")


def _parse_time(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()

