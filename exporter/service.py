"""The long-running exporter: one poller per database, the HTTP server, optional senders.

Databases are independent: one being down, slow or missing tables never holds up another,
and each keeps its own state file in the state directory.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from exporter import __version__
from exporter.config import Config
from exporter.db import Database
from exporter.expose import web_config
from exporter.expose.http import HttpServer, Limits
from exporter.expose.registry import Exposition
from exporter.expose.self_metrics import SelfMetrics
from exporter.poller import DatabasePoller
from exporter.reload import Reloader
from exporter.send.metrics import MetricsPusher, build_exporter, metrics_enabled
from exporter.spans import SpanSource, tracing_enabled

log = logging.getLogger("exporter.service")


@dataclass
class Unit:
    """Everything that serves one database, so a reload can start or stop it as one."""

    database: Database
    poller: DatabasePoller
    components: list[Any] = field(default_factory=list)
    sources: list[Any] = field(default_factory=list)

    def start(self) -> None:
        self.poller.start()
        for component in self.components:
            component.start()

    def stop(self) -> None:
        for component in self.components:
            component.stop()
        self.poller.stop()
        self.database.close()


def limits(cfg: Config) -> Limits:
    return Limits(cfg.web_max_connections, cfg.web_tls_handshake_timeout,
                  cfg.web_read_timeout, cfg.web_idle_timeout)


def common_labels(cfg: Config) -> dict[str, str]:
    """Labels on every series of the process: `replica`, for HA pairs."""
    return {"replica": cfg.replica} if cfg.replica else {}


class Service:
    def __init__(self, cfg: Config, config_path: Path | None = None,
                 reloadable: bool = False):
        """`config_path` and the environment are read again on reload, if `reloadable`."""
        self.cfg = cfg
        self.reloader = Reloader(self, config_path, reloadable)
        self.web = web_config.Watcher(cfg.web_config_file, self.reloader.web_result)
        self.exposition = Exposition({db.name: db.labels for db in cfg.owned_databases},
                                     common_labels(cfg))
        self.self_metrics = SelfMetrics(self.exposition.registry)
        self.exposition.add_source(self.reloader.collect)
        self.units: dict[str, Unit] = {}
        for db_cfg in cfg.owned_databases:
            self.units[db_cfg.name] = self.build(db_cfg)
        self.http = HttpServer(cfg.listen_address, self.exposition, self.status, self.web,
                               limits(cfg), self.reloader.reload)
        self.pusher = (MetricsPusher(self.exposition.parts, build_exporter(cfg.metrics),
                                     cfg.metrics.interval,
                                     lambda: (self.exposition.static_labels,
                                              self.exposition.common_labels))
                       if metrics_enabled(cfg.metrics, os.environ) else None)

    @property
    def pollers(self) -> list[DatabasePoller]:
        """A copy: a reload may change the units while a request reads them."""
        return [unit.poller for unit in list(self.units.values())]

    @property
    def span_sources(self) -> dict[str, SpanSource]:
        """The span sources by database (none for a database with operation_traces off)."""
        return {name: unit.poller.spans for name, unit in list(self.units.items())
                if unit.poller.spans is not None}

    def build(self, db_cfg: Any) -> Unit:
        """A database's poller (with its span sources) and senders, wired but neither loaded
        nor started."""
        database = Database(db_cfg)
        poller = DatabasePoller(self.cfg, db_cfg, database, self.self_metrics, self.exposition,
                                self._span_source(db_cfg, database))
        unit = Unit(database, poller, sources=[poller.collect])
        if self.cfg.silences.enabled:
            from exporter.silences import SnoozeSilencer

            unit.components.append(SnoozeSilencer(
                db_cfg.name, database.connect, database.table("alert_snooze"),
                self.cfg.silences, self.self_metrics))
        return unit

    def _span_source(self, db_cfg: Any, database: Database) -> SpanSource | None:
        """Span metrics always, OTLP when configured; `disabled_collectors:
        [operation_traces]` reads no spans at all."""
        if "operation_traces" in db_cfg.disabled_collectors:
            return None
        return SpanSource(
            db_cfg.name, db_cfg.schema, db_cfg.table, self.cfg.traces, self.self_metrics,
            self.cfg.span_buckets, db_cfg.name,
            send=tracing_enabled(self.cfg.traces, os.environ),
            full_pass_interval=self.cfg.traces.full_pass_interval,
            gap_grace=self.cfg.gap_grace, resource_attributes=db_cfg.labels,
            native=self.cfg.native, lease_session=database.session)

    def swap(self, name: str, unit: Unit | None) -> None:
        """Put `unit` in place of the running one called `name` (either may be absent).

        The old one stops first, so its last checkpoint is on disk before the new one loads
        it: counts carry over exactly. Its published state stays on the page until the new
        one's replaces it in one step.
        """
        old = self.units.pop(name, None)
        if old is not None:
            old.stop()
        if unit is None:
            self.self_metrics.remove(name)
        self.exposition.relabel(
            {u.poller.db_cfg.name: u.poller.db_cfg.labels for u in self.units.values()}
            | ({name: unit.poller.db_cfg.labels} if unit is not None else {}),
            common_labels(self.cfg))
        if unit is not None:
            unit.poller.load()
            self.units[name] = unit
        self.exposition.replace_sources(old.sources if old else [],
                                        unit.sources if unit else [])
        if unit is not None:
            unit.start()

    def start(self) -> None:
        self.cfg.state_dir.mkdir(parents=True, exist_ok=True)
        for unit in self.units.values():
            unit.poller.load()
            self.exposition.replace_sources([], unit.sources)
        self.http.start()
        for unit in self.units.values():
            unit.start()
        if self.pusher is not None:
            self.pusher.start()
        host, _ = self.cfg.listen_address
        log.info("listening", extra={"address": f"{host}:{self.http.port}",
                                     "version": __version__,
                                     "databases": ",".join(p.name for p in self.pollers),
                                     "tls": self.web.current().tls is not None,
                                     "basic_auth": bool(self.web.current().users)})

    def stop(self) -> None:
        if self.pusher is not None:
            self.pusher.stop()
        for unit in self.units.values():
            unit.stop()
        self.http.stop()
        log.info("stopped")

    def status(self) -> dict[str, Any]:
        databases = [{
            "name": p.name, "up": p.up, "caught_up": p.caught_up,
            "collectors": dict(p.enabled), "lag_seconds": dict(p.lag),
            "collectors_failing": {c: f.message for c, f in p.failing.items()},
            "pggit_layout": None if p.layout is None else p.layout.describe(),
            "last_error": p.last_error, "last_error_reason": p.last_reason,
        } for p in self.pollers]
        return {"version": __version__,
                "ready": all(d["up"] and d["caught_up"] and not d["collectors_failing"]
                             for d in databases),
                "databases": databases,
                "components": {f"{name}: spans read by": source.mode_text()
                               for name, source in self.span_sources.items()}}
