"""Configuration: one YAML file, overridable by environment variables, validated up front.

Validation collects every problem before failing, each naming its key, so `check-config`
can print one line per problem and an operator fixes the file in one pass instead of one
error per restart.
"""

from __future__ import annotations

import difflib
import math
import os
import re
import zoneinfo
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from psycopg.conninfo import conninfo_to_dict

DEFAULT_LISTEN = "0.0.0.0:9863"

# 100 µs to 60 s: pgGit operations range from index lookups to whole-schema merges.
DEFAULT_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                   0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
DEFAULT_MERGE_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                         60.0, 300.0)

TABLES = (
    "branches", "performance_operation_types", "performance_metrics", "operation_traces",
    "performance_baselines", "performance_alerts", "merge_performance_metrics",
    "performance_anomalies", "alert_snooze", "alert_notification_queue",
    "alert_notification_log", "alert_notification_webhooks", "baseline_recalc_execution",
    "performance_baseline_history", "scheduled_job_execution", "performance_correlations",
)


class ConfigError(Exception):
    """Raised with every problem found, one per line, each starting with its key."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class DatabaseConfig:
    name: str
    dsn: str
    password_file: Path | None = None
    password_env: str | None = None
    schema: str = "pggit"
    tables: Mapping[str, str] = field(default_factory=dict)
    disabled_collectors: tuple[str, ...] = ()
    timezone: str | None = None
    statement_timeout: float = 5.0
    backfill_statement_timeout: float = 600.0
    connect_timeout: float = 5.0
    application_name: str = "pggit-exporter"

    def table(self, name: str) -> str:
        return self.tables.get(name, name)


@dataclass(frozen=True)
class TracesConfig:
    endpoint: str | None = None
    protocol: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    header_files: Mapping[str, Path] = field(default_factory=dict)
    insecure: bool | None = None
    certificate_file: Path | None = None
    client_key_file: Path | None = None
    client_certificate_file: Path | None = None
    timeout: float | None = None
    compression: str | None = None
    service_name: str = "pggit"
    user_name: str = "off"
    running_timeout: float = 3600.0
    retry_for: float = 300.0
    queue_size: int = 100_000
    batch_size: int = 512
    max_attribute_length: int = 4096
    max_attributes: int = 128
    merges_as_traces: bool = True
    full_pass_interval: float = 60.0


@dataclass(frozen=True)
class SilencesConfig:
    enabled: bool = False
    alertmanager_url: str = "http://localhost:9093"
    sync_interval: float = 30.0
    created_by_prefix: str = "pggit-snooze"
    timeout: float = 10.0


@dataclass(frozen=True)
class Config:
    databases: tuple[DatabaseConfig, ...]
    listen: str = DEFAULT_LISTEN
    web_config_file: Path | None = None
    state_dir: Path = Path("/var/lib/pggit-exporter")
    poll_interval: float = 1.0
    gauge_interval: float = 15.0
    batch_size: int = 50_000
    start_position: str = "backfill"
    gap_grace: float = 2.0
    max_pending_gaps: int = 1_000_000
    log_format: str = "logfmt"
    log_level: str = "info"
    buckets: tuple[float, ...] = DEFAULT_BUCKETS
    merge_buckets: tuple[float, ...] = DEFAULT_MERGE_BUCKETS
    span_buckets: tuple[float, ...] = DEFAULT_BUCKETS
    max_label_values: int = 500
    max_label_length: int = 200
    retry_backoff_max: float = 30.0
    traces: TracesConfig = field(default_factory=TracesConfig)
    silences: SilencesConfig = field(default_factory=SilencesConfig)

    @property
    def listen_address(self) -> tuple[str, int]:
        host, _, port = self.listen.rpartition(":")
        return host.strip("[]") or "0.0.0.0", int(port)


_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h)?$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


class _Reader:
    """Walks a mapping, converting values and remembering problems with their key paths."""

    def __init__(self, data: Any, path: str, problems: list[str]):
        self.path = path
        self.problems = problems
        if data is None:
            data = {}
        if not isinstance(data, dict):
            self.problem(path or "config", f"must be a mapping, got {type(data).__name__}")
            data = {}
        self.data: dict[str, Any] = data
        self.used: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def problem(self, key: str, message: str) -> None:
        self.problems.append(f"{key}: {message}")

    def has(self, name: str) -> bool:
        return name in self.data

    def raw(self, name: str, default: Any = None) -> Any:
        self.used.add(name)
        return self.data.get(name, default)

    def typed(self, name: str, default: Any, convert: Callable[[Any], Any], what: str) -> Any:
        if name not in self.data:
            self.used.add(name)
            return default
        value = self.raw(name)
        try:
            return convert(value)
        except (TypeError, ValueError) as exc:
            detail = f" ({exc})" if str(exc) else ""
            self.problem(self.key(name), f"must be {what}, got {value!r}{detail}")
            return default

    def string(self, name: str, default: str | None = None) -> Any:
        return self.typed(name, default, _string, "a string")

    def choice(self, name: str, default: str, choices: tuple[str, ...]) -> str:
        def convert(v: Any) -> str:
            if v not in choices:
                raise ValueError
            return str(v)
        return self.typed(name, default, convert, "one of " + ", ".join(choices))

    def duration(self, name: str, default: float) -> float:
        return self.typed(name, default, parse_duration,
                          "a positive duration such as 500ms, 1s, 5m or a number of seconds")

    def integer(self, name: str, default: int, minimum: int = 1) -> int:
        def convert(v: Any) -> int:
            if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
                raise ValueError
            return v
        return self.typed(name, default, convert, f"an integer of at least {minimum}")

    def boolean(self, name: str, default: Any) -> Any:
        def convert(v: Any) -> bool:
            if not isinstance(v, bool):
                raise ValueError
            return v
        return self.typed(name, default, convert, "true or false")

    def path_(self, name: str) -> Path | None:
        return self.typed(name, None, lambda v: Path(_string(v)), "a file path")

    def string_map(self, name: str) -> dict[str, str]:
        def convert(v: Any) -> dict[str, str]:
            if not isinstance(v, dict) or not all(
                    isinstance(k, str) and isinstance(x, str) for k, x in v.items()):
                raise ValueError
            return dict(v)
        return self.typed(name, {}, convert, "a mapping of strings to strings")

    def finish(self) -> None:
        for name in sorted(set(self.data) - self.used):
            self.problem(self.key(name), "unknown key")


def _string(v: Any) -> str:
    if not isinstance(v, str) or not v:
        raise ValueError
    return v


def parse_duration(value: Any) -> float:
    """Seconds from `1.5`, `"500ms"`, `"30s"`, `"5m"` or `"1h"`; rejects zero and negatives."""
    if isinstance(value, bool):
        raise ValueError
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value).strip())
        if not match:
            raise ValueError
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError
    return seconds


def _buckets(value: Any) -> tuple[float, ...]:
    if not isinstance(value, list) or not value:
        raise ValueError("a non-empty list")
    bounds = tuple(float(v) for v in value if not isinstance(v, bool))
    if len(bounds) != len(value) or any(not math.isfinite(b) or b <= 0 for b in bounds):
        raise ValueError("positive finite numbers")
    if list(bounds) != sorted(set(bounds)):
        raise ValueError("strictly increasing")
    return bounds


def _listen(value: Any) -> str:
    text = _string(value)
    _host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError("host:port")
    return text


def _database(data: Any, path: str, problems: list[str], from_env: bool) -> DatabaseConfig | None:
    r = _Reader(data, path, problems)
    dsn = r.string("dsn")
    params: dict[str, Any] = {}
    if dsn is None:
        r.problem(r.key("dsn"), "is required (a libpq connection string or URI)")
    else:
        try:
            params = conninfo_to_dict(dsn)
        except Exception as exc:  # psycopg raises ProgrammingError with libpq's own words
            r.problem(r.key("dsn"), f"is not a valid connection string: {_first_line(exc)}")
    if "password" in params and not from_env:
        r.problem(r.key("dsn"), "must not contain a password; use password_file or password_env")
    name = r.string("name", str(params.get("dbname") or "default"))
    tables = r.string_map("tables")
    for table in sorted(set(tables) - set(TABLES)):
        r.problem(f"{r.key('tables')}.{table}", "unknown pgGit table")
    disabled = r.typed("disabled_collectors", (), _string_tuple, "a list of collector names")
    for collector in sorted(set(disabled) - set(TABLES)):
        r.problem(r.key("disabled_collectors"), f"unknown collector {collector!r}")
    db = DatabaseConfig(
        name=name,
        dsn=dsn or "",
        password_file=r.path_("password_file"),
        password_env=r.string("password_env"),
        schema=r.string("schema", "pggit"),
        tables=tables,
        disabled_collectors=disabled,
        timezone=r.string("timezone"),
        statement_timeout=r.duration("statement_timeout", 5.0),
        backfill_statement_timeout=r.duration("backfill_statement_timeout", 600.0),
        connect_timeout=r.duration("connect_timeout", 5.0),
        application_name=r.string("application_name", "pggit-exporter"),
    )
    if db.timezone is not None:
        problem = _timezone_problem(db.timezone)
        if problem is not None:
            r.problem(r.key("timezone"), problem)
    if db.password_file is not None and not db.password_file.is_file():
        r.problem(r.key("password_file"), f"file {str(db.password_file)!r} does not exist")
    r.finish()
    return db if dsn is not None else None


_POSIX_OR_OFFSET = re.compile(
    r"[A-Za-z]{3,}([+-]?\d{1,2}(:\d{2}){0,2}([A-Za-z]{3,}.*)?)?|[+-]?\d{1,2}(:\d{2}){0,2}")


def _timezone_problem(name: str) -> str | None:
    """Catch a misspelt zone name now rather than as connect errors at every poll.

    PostgreSQL matches IANA names case-insensitively and also takes abbreviations, POSIX
    specifications and offsets, which are let through. Without a local tz database (a slim
    container) nothing can be checked here and the server decides.
    """
    known = zoneinfo.available_timezones()
    if not known or name.lower() in {k.lower() for k in known}:
        return None
    if "/" not in name and _POSIX_OR_OFFSET.fullmatch(name):
        return None
    close = difflib.get_close_matches(name, sorted(known), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return (f"unknown time zone {name!r}{hint}; use a name from PostgreSQL's "
            "pg_timezone_names, e.g. 'Europe/Berlin'")


def _string_tuple(v: Any) -> tuple[str, ...]:
    if not isinstance(v, list) or not all(isinstance(x, str) and x for x in v):
        raise ValueError
    return tuple(v)


def _traces(data: Any, problems: list[str]) -> TracesConfig:
    r = _Reader(data, "traces", problems)
    cfg = TracesConfig(
        endpoint=r.string("endpoint"),
        protocol=r.typed("protocol", None, _protocol, "grpc or http/protobuf"),
        headers=r.string_map("headers"),
        header_files={k: Path(v) for k, v in r.string_map("header_files").items()},
        insecure=r.boolean("insecure", None),
        certificate_file=r.path_("certificate_file"),
        client_key_file=r.path_("client_key_file"),
        client_certificate_file=r.path_("client_certificate_file"),
        timeout=r.duration("timeout", None),
        compression=r.typed("compression", None, _compression, "gzip or none"),
        service_name=r.string("service_name", "pggit"),
        user_name=r.choice("user_name", "off", ("off", "hashed", "plain")),
        running_timeout=r.duration("running_timeout", 3600.0),
        retry_for=r.duration("retry_for", 300.0),
        queue_size=r.integer("queue_size", 100_000),
        batch_size=r.integer("batch_size", 512),
        max_attribute_length=r.integer("max_attribute_length", 4096),
        max_attributes=r.integer("max_attributes", 128),
        merges_as_traces=r.boolean("merges_as_traces", True),
        full_pass_interval=r.duration("full_pass_interval", 60.0),
    )
    for header, path in cfg.header_files.items():
        if not path.is_file():
            r.problem(f"traces.header_files.{header}", f"file {str(path)!r} does not exist")
    r.finish()
    return cfg


def _protocol(v: Any) -> str:
    if v not in ("grpc", "http/protobuf"):
        raise ValueError
    return str(v)


def _compression(v: Any) -> str:
    if v not in ("gzip", "none"):
        raise ValueError
    return str(v)


def _silences(data: Any, problems: list[str]) -> SilencesConfig:
    r = _Reader(data, "silences", problems)
    cfg = SilencesConfig(
        enabled=r.boolean("enabled", False),
        alertmanager_url=r.string("alertmanager_url", "http://localhost:9093"),
        sync_interval=r.duration("sync_interval", 30.0),
        created_by_prefix=r.string("created_by_prefix", "pggit-snooze"),
        timeout=r.duration("timeout", 10.0),
    )
    r.finish()
    return cfg


ENV_PREFIX = "PGGIT_EXPORTER_"
ENV_KEYS = {
    "LISTEN": "listen",
    "STATE_DIR": "state_dir",
    "POLL_INTERVAL": "poll_interval",
    "WEB_CONFIG_FILE": "web_config_file",
    "LOG_FORMAT": "log_format",
    "LOG_LEVEL": "log_level",
    "START_POSITION": "start_position",
}


def _apply_env(data: dict[str, Any], env: Mapping[str, str], problems: list[str]) -> bool:
    """Overlay PGGIT_EXPORTER_* variables; returns whether the DSN came from the environment."""
    for suffix, key in ENV_KEYS.items():
        if ENV_PREFIX + suffix in env:
            data[key] = env[ENV_PREFIX + suffix]
    dsn = env.get(ENV_PREFIX + "DSN")
    password_file = env.get(ENV_PREFIX + "PASSWORD_FILE")
    if dsn is None and password_file is None:
        return False
    databases = data.get("databases") or [{}]
    if not isinstance(databases, list) or len(databases) != 1:
        problems.append(f"{ENV_PREFIX}DSN: can only override a configuration with one database")
        return False
    first = dict(databases[0]) if isinstance(databases[0], dict) else {}
    if dsn is not None:
        first["dsn"] = dsn
    if password_file is not None:
        first["password_file"] = password_file
    data["databases"] = [first]
    return dsn is not None


def load(path: Path | None, env: Mapping[str, str] | None = None) -> Config:
    """Read, overlay and validate; raises ConfigError listing every problem found."""
    env = os.environ if env is None else env
    problems: list[str] = []
    data: Any = {}
    if path is not None:
        try:
            data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        except OSError as exc:
            raise ConfigError([f"config: cannot read {str(path)!r}: {exc.strerror}"]) from None
        except yaml.YAMLError as exc:
            raise ConfigError(
                [f"config: {str(path)!r} is not valid YAML: {yaml_error(exc)}"]) from None
    if not isinstance(data, dict):
        raise ConfigError([f"config: must be a mapping, got {type(data).__name__}"])
    data = dict(data)
    dsn_from_env = _apply_env(data, env, problems)
    cfg = parse(data, problems, dsn_from_env=dsn_from_env)
    if problems:
        raise ConfigError([_name_env_source(p, env) for p in problems])
    return cfg


def _name_env_source(problem: str, env: Mapping[str, str]) -> str:
    """Say which variable set a bad value: the YAML may be fine while the container's env is not."""
    key = problem.partition(":")[0]
    sources = {key: suffix for suffix, key in ENV_KEYS.items()}
    sources.update({"databases[0].dsn": "DSN", "databases[0].password_file": "PASSWORD_FILE"})
    suffix = sources.get(key)
    if suffix is not None and ENV_PREFIX + suffix in env:
        return f"{problem} (set by {ENV_PREFIX}{suffix})"
    return problem


def parse(data: dict[str, Any], problems: list[str], dsn_from_env: bool = False) -> Config:
    r = _Reader(data, "", problems)
    raw_dbs = r.raw("databases")
    databases: list[DatabaseConfig] = []
    if not isinstance(raw_dbs, list) or not raw_dbs:
        r.problem("databases", "at least one database is required (or set PGGIT_EXPORTER_DSN)")
    else:
        for i, item in enumerate(raw_dbs):
            db = _database(item, f"databases[{i}]", problems, dsn_from_env)
            if db is not None:
                databases.append(db)
    names = [db.name for db in databases]
    for name in sorted({n for n in names if names.count(n) > 1}):
        r.problem("databases", f"name {name!r} is used twice; give each database its own name")
    cfg = Config(
        databases=tuple(databases),
        listen=r.typed("listen", DEFAULT_LISTEN, _listen, "host:port"),
        web_config_file=r.path_("web_config_file"),
        state_dir=r.typed("state_dir", Path("/var/lib/pggit-exporter"),
                          lambda v: Path(_string(v)), "a directory path"),
        poll_interval=r.duration("poll_interval", 1.0),
        gauge_interval=r.duration("gauge_interval", 15.0),
        batch_size=r.integer("batch_size", 50_000),
        start_position=r.choice("start_position", "backfill", ("backfill", "now")),
        gap_grace=r.duration("gap_grace", 2.0),
        max_pending_gaps=r.integer("max_pending_gaps", 1_000_000),
        log_format=r.choice("log_format", "logfmt", ("logfmt", "json")),
        log_level=r.choice("log_level", "info", ("debug", "info", "warning", "error")),
        buckets=r.typed("buckets", DEFAULT_BUCKETS, _buckets, "a list of bucket bounds"),
        merge_buckets=r.typed("merge_buckets", DEFAULT_MERGE_BUCKETS, _buckets,
                              "a list of bucket bounds"),
        span_buckets=r.typed("span_buckets", DEFAULT_BUCKETS, _buckets,
                             "a list of bucket bounds"),
        max_label_values=r.integer("max_label_values", 500),
        max_label_length=r.integer("max_label_length", 200, minimum=16),
        retry_backoff_max=r.duration("retry_backoff_max", 30.0),
        traces=_traces(r.raw("traces"), problems),
        silences=_silences(r.raw("silences"), problems),
    )
    if cfg.web_config_file is not None and not cfg.web_config_file.is_file():
        r.problem("web_config_file", f"file {str(cfg.web_config_file)!r} does not exist")
    r.finish()
    return cfg


def yaml_error(exc: yaml.YAMLError) -> str:
    """PyYAML's message on one line: its default spans several, breaking one-line-per-problem."""
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        what = " ".join(part for part in (exc.context, exc.problem) if part)
        return f"line {mark.line + 1}, column {mark.column + 1}: {what}"
    return " ".join(str(exc).split())


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
