"""Configuration: one YAML file, overridable by environment variables, validated up front.

Each setting is declared once below, as a field of a pydantic model: its type (a `Kind`, which
converts a value and says in words what it must be), its default, its help text and its
environment variable. `check-config`, the example `config/pggit-exporter.yml` and the README's
table of variables are all derived from these declarations (`exporter/config_doc.py`), so a
default cannot be written twice and disagree. Validation collects every problem before failing,
each naming its key, so an operator fixes the file in one pass instead of one error per restart.
"""

from __future__ import annotations

import difflib
import math
import os
import re
import socket
import zoneinfo
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, get_args, get_origin

import yaml
from psycopg.conninfo import conninfo_to_dict
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from exporter import shard
from exporter.catalog import METRICS
from exporter.native import DEFAULT_MAX_BUCKETS, DEFAULT_SCHEMA, MAX_SCHEMA, MIN_SCHEMA, NativeSpec

DEFAULT_LISTEN = "0.0.0.0:9863"

# 100 µs to 60 s: pgGit operations range from index lookups to whole-schema merges.
DEFAULT_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                   0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
DEFAULT_MERGE_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                         60.0, 300.0)

OTLP_PROTOCOLS = ("grpc", "http/protobuf")
OTLP_DEFAULT_PROTOCOL = "http/protobuf"
"""The OpenTelemetry specification's default when neither YAML nor environment says."""

TABLES = (
    "branches", "performance_operation_types", "performance_metrics", "operation_traces",
    "performance_baselines", "performance_alerts", "merge_performance_metrics",
    "performance_anomalies", "alert_snooze", "alert_notification_queue",
    "alert_notification_log", "alert_notification_webhooks", "baseline_recalc_execution",
    "performance_baseline_history", "scheduled_job_execution", "performance_correlations",
)

ENV_PREFIX = "PGGIT_EXPORTER_"


class ConfigError(Exception):
    """Raised with every problem found, one per line, each starting with its key."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems


# --- kinds of values -----------------------------------------------------------------------


@dataclass(frozen=True)
class Kind:
    """A kind of setting value: how it is converted and how a wrong one is described.

    `what` ends every "must be ..." message and the type column of the generated docs; `show`
    writes a value back as it would be typed in the YAML (durations with their unit).
    """

    what: str
    convert: Callable[[Any], Any]
    show: Callable[[Any], str] | None = None

    def validate(self, value: Any) -> Any:
        try:
            return self.convert(value)
        except (TypeError, ValueError) as exc:
            detail = f" ({exc})" if str(exc) else ""
            raise PydanticCustomError(
                "config", "must be {what}, got {got}{detail}",
                {"what": self.what, "got": repr(value), "detail": detail}) from None


def _kind(python_type: Any, kind: Kind) -> Any:
    return Annotated[python_type, PlainValidator(kind.validate), kind]


_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h)?$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


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


def show_duration(seconds: float) -> str:
    """The shortest way to write a duration back: 600.0 -> "10m", 0.25 -> "250ms"."""
    for unit, size in (("h", 3600.0), ("m", 60.0), ("s", 1.0)):
        if seconds >= size and (seconds / size).is_integer():
            return f"{int(seconds / size)}{unit}"
    return f"{round(seconds * 1000, 3):g}ms"


def _string(v: Any) -> str:
    if not isinstance(v, str) or not v:
        raise ValueError
    return v


def _integer(minimum: int) -> Callable[[Any], int]:
    def convert(v: Any) -> int:
        if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
            raise ValueError
        return v
    return convert


def _boolean(v: Any) -> bool:
    if not isinstance(v, bool):
        raise ValueError
    return v


def _one_of(choices: tuple[str, ...]) -> Callable[[Any], str]:
    def convert(v: Any) -> str:
        if v not in choices:
            raise ValueError
        return str(v)
    return convert


def _path(v: Any) -> Path:
    return v if isinstance(v, Path) else Path(_string(v))


def _path_map(v: Any) -> dict[str, Path]:
    if not isinstance(v, dict) or not all(isinstance(k, str) for k in v):
        raise ValueError
    return {k: _path(x) for k, x in v.items()}


def _string_map(v: Any) -> dict[str, str]:
    if not isinstance(v, dict) or not all(
            isinstance(k, str) and isinstance(x, str) for k, x in v.items()):
        raise ValueError
    return dict(v)


def _string_tuple(v: Any) -> tuple[str, ...]:
    if isinstance(v, tuple):
        v = list(v)
    if not isinstance(v, list) or not all(isinstance(x, str) and x for x in v):
        raise ValueError
    return tuple(v)


def _buckets(value: Any) -> tuple[float, ...]:
    if isinstance(value, tuple):
        value = list(value)
    if not isinstance(value, list) or not value:
        raise ValueError("a non-empty list")
    bounds = tuple(float(v) for v in value if not isinstance(v, bool))
    if len(bounds) != len(value) or any(not math.isfinite(b) or b <= 0 for b in bounds):
        raise ValueError("positive finite numbers")
    if list(bounds) != sorted(set(bounds)):
        raise ValueError("strictly increasing")
    return bounds


def _schema(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not (
            MIN_SCHEMA <= value <= MAX_SCHEMA):
        raise ValueError
    return value


def _listen(value: Any) -> str:
    text = _string(value)
    _host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError("host:port")
    return text


def _number(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else repr(v)


def _show_list(values: tuple[Any, ...]) -> str:
    return "[" + ", ".join(_number(v) for v in values) + "]"


def choice(*choices: str, optional: bool = False) -> Any:
    """A string that must be one of `choices` (or, if `optional`, left out)."""
    what = " or ".join(choices) if len(choices) == 2 else "one of " + ", ".join(choices)
    return _kind(str | None if optional else str, Kind(what, _one_of(choices)))


def integer(minimum: int = 1) -> Any:
    """A whole number of at least `minimum` (true/false are not numbers here)."""
    return _kind(int, Kind(f"an integer of at least {minimum}", _integer(minimum)))


DURATION = Kind("a positive duration such as 500ms, 1s, 5m or a number of seconds",
                parse_duration, show_duration)
Duration = _kind(float, DURATION)
OptionalDuration = _kind(float | None, DURATION)
Text = _kind(str, Kind("a string", _string))
OptionalText = _kind(str | None, Kind("a string", _string))
Boolean = _kind(bool, Kind("true or false", _boolean))
OptionalBoolean = _kind(bool | None, Kind("true or false", _boolean))
FilePath = _kind(Path | None, Kind("a file path", _path))
Directory = _kind(Path, Kind("a directory path", _path, str))
StringMap = _kind(dict[str, str], Kind("a mapping of strings to strings", _string_map))
PathMap = _kind(dict[str, Path], Kind("a mapping of strings to file paths", _path_map))
Names = _kind(tuple[str, ...], Kind("a list of collector names", _string_tuple))
Buckets = _kind(tuple[float, ...], Kind("a list of bucket bounds", _buckets, _show_list))
ListenAddress = _kind(str, Kind("host:port", _listen))
Dsn = _kind(str, Kind("a libpq connection string or URI", _string))
Count = integer()
NativeSchema = _kind(int, Kind(f"an integer from {MIN_SCHEMA} to {MAX_SCHEMA}",
                               _schema))
LabelLength = integer(16)
ShardIndex = integer(0)
Protocol = choice(*OTLP_PROTOCOLS, optional=True)
Compression = choice("gzip", "none", optional=True)
UserName = choice("off", "hashed", "plain")
StartPosition = choice("backfill", "now")
LogFormat = choice("logfmt", "json")
LogLevel = choice("debug", "info", "warning", "error")


def setting(default: Any = ..., help: str = "", *, env: str | None = None,
            example: str | None = None, default_doc: str | None = None) -> Any:
    """One setting's default and documentation, next to its type in the model.

    `help` is the text of the generated example file and docs, which add "Default ..." from
    `default` (or `default_doc` when the default is worked out at run time). `env` names the
    PGGIT_EXPORTER_* variable that overrides it. `example` is a value shown in the example file
    when the default is empty.
    """
    extra = {k: v for k, v in (("env", env), ("example", example),
                               ("default_doc", default_doc)) if v is not None}
    return Field(default, description=help, json_schema_extra=extra or None)


class _Model(BaseModel):
    """Unknown keys are errors at every level, so a typo never silently falls back."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=False)


def _problem(message: str, at: str | None = None) -> PydanticCustomError:
    """A problem worded in full; `at` names a key below the field (a table, a header)."""
    if at is None:
        return PydanticCustomError("config", "{message}", {"message": message})
    return PydanticCustomError("config_at", "{message}", {"message": message, "at": at})


_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
# Labels the exporter writes itself: a static label of the same name would make two values
# for one label on a series.
EXPORTER_LABELS = frozenset(
    {name for m in METRICS.values() for name in m.all_labels} | {"le", "quantile"})
# Set by Prometheus on every scraped series; an exported one is renamed `exported_<name>`.
TARGET_LABELS = frozenset({"job", "instance"})
REPLICA_LABEL = "replica"


def _label_problem(name: str, value: str) -> str | None:
    """Why `name: value` cannot be a static label, or None."""
    if not _LABEL_NAME.match(name):
        return "is not a valid Prometheus label name ([a-zA-Z_][a-zA-Z0-9_]*)"
    if name.startswith("__"):
        return "names starting with __ are reserved by Prometheus"
    if name in EXPORTER_LABELS:
        return f"clashes with the exporter's own label {name!r}"
    if name == REPLICA_LABEL:
        return "is set by the top-level `replica` setting, on every series of the process"
    if name in TARGET_LABELS:
        return f"Prometheus sets {name!r} on every scraped series; set it in the scrape " \
               "config instead"
    if not value:
        return "must not be empty (an empty label is no label)"
    return None


# --- the model -----------------------------------------------------------------------------


class DatabaseConfig(_Model):
    name: Text = setting(
        None, "Label value of `database` and name of the state file. Must be unique.",
        default_doc="the dbname from the dsn", example="main")
    dsn: Dsn = setting(
        ..., "libpq connection string or URI. It must NOT contain a password (the exporter "
        "refuses it, so the secret never sits in this file); use password_file or "
        "password_env, or libpq's own ~/.pgpass / PGPASSWORD.", env="DSN",
        example='"host=db.example.internal port=5432 dbname=pggit user=pggit_exporter '
                'sslmode=require"')
    password_file: FilePath = setting(
        None, "File holding the password (a trailing newline is ignored), e.g. a mounted "
        "secret. Read again for every new connection, so a rotated secret is used from the "
        "next reconnect on.", env="PASSWORD_FILE",
        example="/run/secrets/pggit-exporter-password")
    password_env: OptionalText = setting(
        None, "Name of an environment variable holding the password.",
        example="PGGIT_DB_PASSWORD")
    schema_: Text = Field(
        "pggit", alias="schema", description="Schema holding the pgGit tables.")
    tables: StringMap = setting(
        {}, "Renamed tables: logical pgGit name -> actual name in the schema. Only pgGit's "
        "table names may be keys.", example="performance_metrics: performance_metrics_v2")
    disabled_collectors: Names = setting(
        (), "Collectors to leave off even when their table exists (names as in "
        "pggit_exporter_collector_enabled{collector}).", example="- performance_correlations")
    timezone: OptionalText = setting(
        None, "Session TimeZone used to read pgGit's \"timestamp without time zone\" columns. "
        "Set it to the zone pgGit's writers run in when that differs from the server's "
        "TimeZone.", default_doc="the server's TimeZone", example="America/New_York")
    statement_timeout: Duration = setting(5.0, "Longest a single query may run.")
    backfill_statement_timeout: Duration = setting(
        600.0, "Longest the one-off aggregate queries of the first start (backfill) may run.")
    connect_timeout: Duration = setting(
        5.0, "Longest wait to connect (and for a free pooled connection).")
    application_name: Text = setting(
        "pggit-exporter", "application_name shown in pg_stat_activity.")
    labels: StringMap = setting(
        {}, "Constant labels added to every series of this database and to its spans' OTLP "
        "resource, e.g. cluster and env. Names follow Prometheus's rules and may not be one "
        "the exporter writes itself.", example="cluster: eu-1")
    password_credential: OptionalText = setting(
        None, "Name of a systemd credential (LoadCredential=NAME:/path) holding the password; "
        "read from $CREDENTIALS_DIRECTORY/NAME. Not together with password_file.",
        example="main-password")

    model_config = ConfigDict(populate_by_name=True)

    @property
    def schema(self) -> str:  # type: ignore[override]  # the key operators write is `schema`
        return self.schema_

    def table(self, name: str) -> str:
        return self.tables.get(name, name)

    @model_validator(mode="before")
    @classmethod
    def _name_from_dsn(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("name") is None and "name" not in data:
            dsn = data.get("dsn")
            dbname = None
            if isinstance(dsn, str):
                try:
                    dbname = conninfo_to_dict(dsn).get("dbname")
                except Exception:  # reported against dsn by its own validator
                    dbname = None
            data = {**data, "name": str(dbname or "default")}
        return data

    @field_validator("dsn")
    @classmethod
    def _dsn(cls, dsn: str, info: ValidationInfo) -> str:
        try:
            params = conninfo_to_dict(dsn)
        except Exception as exc:  # psycopg raises ProgrammingError with libpq's own words
            raise _problem(f"is not a valid connection string: {_first_line(exc)}") from None
        if "password" in params and info.context is not None \
                and not info.context.get("dsn_from_env"):
            raise _problem("must not contain a password; use password_file or password_env")
        return dsn

    @field_validator("password_file")
    @classmethod
    def _password_file(cls, path: Path | None) -> Path | None:
        if path is not None and not path.is_file():
            raise _problem(f"file {str(path)!r} does not exist")
        return path

    @field_validator("tables")
    @classmethod
    def _tables(cls, tables: dict[str, str]) -> dict[str, str]:
        for table in sorted(set(tables) - set(TABLES)):
            raise _problem("unknown pgGit table" + _did_you_mean(table, TABLES), at=table)
        return tables

    @field_validator("disabled_collectors")
    @classmethod
    def _collectors(cls, names: tuple[str, ...]) -> tuple[str, ...]:
        unknown = sorted(set(names) - set(TABLES))
        if unknown:
            raise _problem("; ".join(f"unknown collector {n!r}" + _did_you_mean(n, TABLES)
                                     for n in unknown))
        return names

    @field_validator("labels")
    @classmethod
    def _labels(cls, labels: dict[str, str]) -> dict[str, str]:
        for name in sorted(labels):
            problem = _label_problem(name, labels[name])
            if problem is not None:
                raise _problem(problem, at=name)
        return labels

    @model_validator(mode="after")
    def _credential(self) -> DatabaseConfig:
        """systemd's LoadCredential=: the file `password_credential` in
        $CREDENTIALS_DIRECTORY becomes password_file, which every connection reads."""
        name = self.password_credential
        if name is None:
            return self
        if self.password_file is not None:
            raise _problem("give password_file or password_credential, not both",
                           at="password_credential")
        if "/" in name or name in (".", ".."):
            raise _problem(f"must be a credential name, not a path: {name!r}",
                           at="password_credential")
        directory = os.environ.get("CREDENTIALS_DIRECTORY")
        if not directory:
            raise _problem("$CREDENTIALS_DIRECTORY is not set: systemd sets it for a unit with "
                           f"LoadCredential={name}:/path/to/file (see deploy/systemd)",
                           at="password_credential")
        object.__setattr__(self, "password_file", Path(directory) / name)
        return self

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, name: str | None) -> str | None:
        problem = None if name is None else _timezone_problem(name)
        if problem is not None:
            raise _problem(problem)
        return name


class TracesConfig(_Model):
    endpoint: OptionalText = setting(
        None, "OTLP endpoint, e.g. http://otel-collector:4317 (grpc) or "
        "http://otel-collector:4318 (http/protobuf).", default_doc="none (forwarding off)",
        example="http://otel-collector:4318")
    protocol: Protocol = setting(
        None, "grpc or http/protobuf.",
        default_doc="from OTEL_EXPORTER_OTLP_TRACES_PROTOCOL or OTEL_EXPORTER_OTLP_PROTOCOL, "
                    f"else {OTLP_DEFAULT_PROTOCOL}", example=OTLP_DEFAULT_PROTOCOL)
    headers: StringMap = setting({}, "Extra request headers. Prefer header_files for secrets.")
    header_files: PathMap = setting(
        {}, "Request headers whose value is read from a file (e.g. an API token).",
        example="authorization: /run/secrets/otlp-authorization")
    insecure: OptionalBoolean = setting(
        None, "Plain-text gRPC without TLS.",
        default_doc="from the endpoint scheme / OTEL variables", example="false")
    certificate_file: FilePath = setting(
        None, "CA bundle to verify the endpoint.", default_doc="none (system CAs)",
        example="/etc/pggit-exporter/otlp-ca.pem")
    client_key_file: FilePath = setting(
        None, "Client key for mutual TLS.", example="/etc/pggit-exporter/otlp-client-key.pem")
    client_certificate_file: FilePath = setting(
        None, "Client certificate for mutual TLS.",
        example="/etc/pggit-exporter/otlp-client.pem")
    timeout: OptionalDuration = setting(
        None, "Time limit of one export request, retries included.",
        default_doc="from OTEL_EXPORTER_OTLP_TRACES_TIMEOUT / OTEL_EXPORTER_OTLP_TIMEOUT, "
                    "else 10s", example="10s")
    compression: Compression = setting(
        None, "gzip or none.", default_doc="from OTEL_EXPORTER_OTLP_COMPRESSION, else none",
        example="gzip")
    service_name: Text = setting("pggit", "service.name resource attribute of the spans.")
    user_name: UserName = setting(
        "off", "pgGit's user_name on spans: off (left out, for privacy), hashed (a stable "
        "hash) or plain.")
    running_timeout: Duration = setting(
        3600.0, "A span RUNNING longer than this is given up and sent as ended with an error.")
    retry_for: Duration = setting(
        300.0, "How long a batch the endpoint keeps refusing is retried (with backoff) before "
        "it is dropped and counted in pggit_exporter_spans_total{result=\"dropped\"}. The "
        "default is the OpenTelemetry Collector's max_elapsed_time.")
    queue_size: Count = setting(
        100_000, "Most spans waiting to be sent (bounds memory while the endpoint is down).")
    batch_size: Count = setting(512, "Spans per export request.")
    max_attribute_length: Count = setting(
        4096, "Longer attribute values are cut.")
    max_attributes: Count = setting(
        128, "Most attributes per span.")
    full_pass_interval: Duration = setting(
        60.0, "Without pg_read_all_stats (or pg_monitor), operation_traces is scanned in full "
        "at most this often; recent spans are read in between.")
    merges_as_traces: Boolean = setting(
        True, "Also send each merge (merge_performance_metrics) as a trace with one span per "
        "phase.")

    @field_validator("header_files")
    @classmethod
    def _header_files(cls, files: dict[str, Path]) -> dict[str, Path]:
        for header, path in files.items():
            if not path.is_file():
                raise _problem(f"file {str(path)!r} does not exist", at=header)
        return files


class SilencesConfig(_Model):
    enabled: Boolean = setting(False, "Whether silences are kept in step at all.")
    alertmanager_url: Text = setting("http://localhost:9093", "Alertmanager base URL.")
    sync_interval: Duration = setting(
        30.0, "How often silences are reconciled with alert_snooze.")
    created_by_prefix: Text = setting(
        "pggit-snooze", "createdBy of the silences the exporter owns; it never touches other "
        "silences.")
    timeout: Duration = setting(10.0, "Time limit of one Alertmanager request.")


class ShardConfig(_Model):
    total: Count = setting(
        ..., "How many replicas share this configuration; each reads the databases whose "
        "stable hash falls to its index.", example="3")
    index: ShardIndex = setting(
        None, "This replica's shard, from 0 to total - 1.",
        default_doc="the -N ordinal at the end of the host name (a StatefulSet pod's)",
        example="0")

    @model_validator(mode="before")
    @classmethod
    def _index(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        if "total" not in data:
            raise _problem("is required (the number of replicas sharing this config)",
                           at="total")
        source = ""
        if "index" not in data:
            host = socket.gethostname()
            found = shard.ordinal(host)
            if found is None:
                raise _problem(f"not set, and the host name {host!r} ends in no -N ordinal to "
                               "take it from (as StatefulSet pods do)", at="index")
            data = {**data, "index": found}
            source = f" (from the host name {host!r})"
        index, total = data["index"], data["total"]
        if isinstance(index, int) and isinstance(total, int) and total >= 1 \
                and not 0 <= index < total:
            raise _problem(f"{index}{source} must be below shard.total ({total})", at="index")
        return data


class MetricsConfig(_Model):
    """OTLP metrics push (exporter.send.metrics)."""

    endpoint: OptionalText = setting(
        None, "OTLP endpoint for the metrics push; the push is off unless this or "
        "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT is set.", default_doc="none (push off)",
        example="http://otel-collector:4318/v1/metrics")
    protocol: Protocol = setting(
        None, "Protocol of the metrics push: grpc or http/protobuf.",
        default_doc=f"from OTEL_EXPORTER_OTLP_METRICS_PROTOCOL, else {OTLP_DEFAULT_PROTOCOL}")
    insecure: OptionalBoolean = setting(
        None, "Plain-text gRPC, no TLS.", default_doc="from the endpoint scheme")
    timeout: OptionalDuration = setting(
        None, "Time limit of one push.", default_doc="the SDK's 10s")
    interval: Duration = setting(60.0, "How often the series are pushed.")


class Config(_Model):
    listen: ListenAddress = setting(
        DEFAULT_LISTEN, "host:port for /metrics, /healthz, /readyz and the landing page at /.",
        env="LISTEN")
    web_config_file: FilePath = setting(
        None, "Optional TLS and basic auth, in the web config format every Prometheus "
        "exporter shares (see config/web-config.yml). Relative paths inside it are resolved "
        "from its own directory.", env="WEB_CONFIG_FILE",
        default_doc="none (plain HTTP, no auth)",
        example="/etc/pggit-exporter/web-config.yml")
    web_max_connections: Count = setting(
        512, "Most open HTTP connections. Connections are bounded and every step has a "
        "deadline, so idle, slow or half-open clients cannot take the endpoint away from "
        "Prometheus; at the bound, the connection waiting longest without a request in "
        "progress is closed to admit the new one.")
    web_tls_handshake_timeout: Duration = setting(
        10.0, "Time a client has to complete the TLS handshake.")
    web_read_timeout: Duration = setting(
        10.0, "Time a client has to send a whole request once it has started, and to take "
        "the response.")
    web_idle_timeout: Duration = setting(
        120.0, "Time a kept-alive connection may wait for its next request.")
    state_dir: Directory = setting(
        Path("/var/lib/pggit-exporter"), "Where read positions and counter totals are "
        "checkpointed (one JSON file per database, written atomically), so that a restart or "
        "kill -9 neither resets a counter nor counts a row twice. Must be persistent and "
        "writable.", env="STATE_DIR")
    poll_interval: Duration = setting(
        1.0, "How often new rows are read from each database.", env="POLL_INTERVAL")
    gauge_interval: Duration = setting(
        15.0, "How often current-state gauges (baselines, open alerts, queue depth, ...) are "
        "refreshed.")
    batch_size: Count = setting(
        50_000, "Most rows read from one table in one query; a larger backlog is read over "
        "several queries.")
    start_position: StartPosition = setting(
        "backfill", "On a first start with no state: \"backfill\" aggregates the rows already "
        "in the tables (one grouped query, not a replay), \"now\" counts only rows written "
        "from now on.", env="START_POSITION")
    gap_grace: Duration = setting(
        2.0, "An id below the read position that is not visible yet is a writer still "
        "committing or a rollback. It is settled as a rollback only once every transaction "
        "that could hold it has ended and it stayed empty for this long (covering the instant "
        "between nextval() and the insert). Rows committed late are still counted exactly "
        "once.")
    max_pending_gaps: Count = setting(
        1_000_000, "Cap on remembered invisible ids per table; beyond it the oldest are given "
        "up and counted in pggit_exporter_errors_total{stage=\"gaps_dropped\"}.")
    log_format: LogFormat = setting(
        "logfmt", "Log line format: logfmt or json; one line per event, passwords never logged.",
        env="LOG_FORMAT")
    log_level: LogLevel = setting(
        "info", "debug, info, warning or error.", env="LOG_LEVEL")
    buckets: Buckets = setting(
        DEFAULT_BUCKETS, "Upper bounds (seconds, strictly increasing, positive) of "
        "pggit_operation_duration_seconds; by default 100 µs to 60 s.")
    merge_buckets: Buckets = setting(
        DEFAULT_MERGE_BUCKETS, "Bucket bounds of pggit_merge_duration_seconds; by default 1 ms to "
        "300 s.")
    span_buckets: Buckets = setting(
        DEFAULT_BUCKETS, "Bucket bounds of pggit_span_duration_seconds (trace forwarding); "
        "by default the same as buckets.")
    native_schema: NativeSchema = setting(
        DEFAULT_SCHEMA, "Resolution of the native histograms served in protobuf: each power "
        "of two is split into 2^native_schema buckets.")
    native_max_buckets: Count = setting(
        DEFAULT_MAX_BUCKETS, "Most native buckets one series keeps; past that it halves its "
        "resolution, as Prometheus does.")
    max_label_values: Count = setting(
        500, "Most distinct values per label name (operation_type, branch, ...) per database; "
        "later new values are folded into \"__other__\" and counted in "
        "pggit_exporter_label_overflow_total. The values admitted stay stable across "
        "restarts.")
    max_label_length: LabelLength = setting(
        200, "Longer label values are cut and end in \"~\" plus 8 hex digits of a hash of the "
        "whole value, so distinct values stay distinct. At least 16.")
    retry_backoff_max: Duration = setting(
        30.0, "Longest wait between reconnection attempts while a database is unreachable "
        "(the wait doubles from poll_interval up to this).")
    databases: tuple[DatabaseConfig, ...] = Field(
        (), validate_default=True, description="One entry per pgGit database; each is read "
        "independently and every series carries a database=\"<name>\" label. At least one is "
        "required. PGGIT_EXPORTER_DSN replaces the dsn of the single database (or defines one "
        "if the list is empty); PGGIT_EXPORTER_PASSWORD_FILE sets its password_file.")
    traces: TracesConfig = Field(
        TracesConfig(), description="Forwarding pgGit's operation_traces (and merges) as "
        "OTLP spans. Off unless an endpoint is set here or in the standard "
        "OTEL_EXPORTER_OTLP_ENDPOINT / OTEL_EXPORTER_OTLP_TRACES_ENDPOINT variables; the other "
        "standard OTEL_EXPORTER_OTLP_* variables apply where a key is unset.")
    silences: SilencesConfig = Field(
        SilencesConfig(), description="Keeping Alertmanager silences in step with pgGit's "
        "alert_snooze table.")
    shard: ShardConfig | None = Field(
        None, description="Splitting the databases between replicas: each database is read "
        "by exactly one shard, chosen by a stable hash of its name.")
    replica: OptionalText = setting(
        None, "A replica label on every series, for HA pairs that Thanos, Mimir or Cortex "
        "deduplicate.", env="REPLICA", example="a")
    metrics: MetricsConfig = Field(
        MetricsConfig(), description="Pushing the same series as OTLP metrics (durations as "
        "exponential histograms, cumulative), for stacks that ingest OTLP rather than scrape.")

    @property
    def owned_databases(self) -> tuple[DatabaseConfig, ...]:
        """The databases this process reads: all of them, or its shard's share."""
        if self.shard is None:
            return self.databases
        return tuple(db for db in self.databases
                     if shard.owner(db.name, self.shard.total) == self.shard.index)

    @property
    def native(self) -> NativeSpec:
        """Resolution and bucket limit of the native histograms (exporter.native)."""
        return NativeSpec(self.native_schema, self.native_max_buckets)

    @property
    def listen_address(self) -> tuple[str, int]:
        host, _, port = self.listen.rpartition(":")
        return host.strip("[]") or "0.0.0.0", int(port)

    @field_validator("databases", mode="before")
    @classmethod
    def _some_databases(cls, value: Any) -> Any:
        if not isinstance(value, list | tuple) or not value:
            raise _problem("at least one database is required (or set PGGIT_EXPORTER_DSN)")
        return value

    @field_validator("databases")
    @classmethod
    def _unique_names(cls, dbs: tuple[DatabaseConfig, ...]) -> tuple[DatabaseConfig, ...]:
        names = [db.name for db in dbs]
        for name in sorted({n for n in names if names.count(n) > 1}):
            raise _problem(f"name {name!r} is used twice; give each database its own name")
        return dbs

    @field_validator("web_config_file")
    @classmethod
    def _web_config_file(cls, path: Path | None) -> Path | None:
        if path is not None and not path.is_file():
            raise _problem(f"file {str(path)!r} does not exist")
        return path


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


def _did_you_mean(name: str, known: Any) -> str:
    close = difflib.get_close_matches(name, sorted(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


# --- from validation errors to one line per problem ------------------------------------------


def keys(model: type[BaseModel]) -> dict[str, str]:
    """YAML key -> attribute name of a model's settings (they differ where a name is taken)."""
    return {(f.alias or name): name for name, f in model.model_fields.items()}


def _submodel(annotation: Any) -> type[BaseModel] | None:
    """The model a field holds, directly or as the items of a tuple."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if get_origin(annotation) is tuple:
        return _submodel(get_args(annotation)[0])
    optional = [a for a in get_args(annotation) if a is not type(None)]
    if len(optional) == 1 and len(get_args(annotation)) == 2:
        return _submodel(optional[0])
    return None


def _walk(loc: tuple[Any, ...]) -> tuple[str, type[BaseModel] | None]:
    """The dotted key of a pydantic error location, and the model that holds its last key."""
    model: type[BaseModel] | None = Config
    text, holder = "", None
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
            continue
        holder = model
        text = f"{text}.{part}" if text else str(part)
        field = None
        if model is not None:
            field = model.model_fields.get(keys(model).get(str(part), ""))
        model = _submodel(field.annotation) if field is not None else None
    return text, holder


def _line(error: Any) -> str:
    key, holder = _walk(tuple(error["loc"]))
    kind = error["type"]
    ctx = error.get("ctx") or {}
    if kind == "config_at":
        return f"{key}.{ctx['at']}: {ctx['message']}"
    if kind == "config" and "message" in ctx:
        return f"{key}: {ctx['message']}"
    if kind == "config":
        return f"{key}: {error['msg']}"
    if kind == "extra_forbidden":
        known = keys(holder) if holder is not None else {}
        return f"{key}: unknown key" + _did_you_mean(key.rpartition(".")[2], known)
    if kind == "missing":
        what = ""
        if holder is not None:
            field = holder.model_fields[keys(holder)[key.rpartition(".")[2]]]
            kinds = [m for m in field.metadata if isinstance(m, Kind)]
            what = f" ({kinds[0].what})" if kinds else ""
        return f"{key}: is required{what}"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"{key or 'config'}: must be a mapping, got {type(error['input']).__name__}"
    return f"{key or 'config'}: {error['msg']}"


# --- environment overrides -----------------------------------------------------------------


def _env_settings(model: type[BaseModel]) -> dict[str, str]:
    """Variable suffix -> YAML key, for the settings of `model` that have one."""
    out = {}
    for name, f in model.model_fields.items():
        extra = f.json_schema_extra if isinstance(f.json_schema_extra, dict) else {}
        if "env" in extra:
            out[str(extra["env"])] = f.alias or name
    return out


ENV_KEYS = _env_settings(Config)
"""Top-level settings a PGGIT_EXPORTER_* variable overrides (suffix -> key)."""
DATABASE_ENV_KEYS = _env_settings(DatabaseConfig)
"""Settings of the single database a PGGIT_EXPORTER_* variable overrides."""


def _apply_env(data: dict[str, Any], env: Mapping[str, str], problems: list[str]) -> bool:
    """Overlay PGGIT_EXPORTER_* variables; returns whether the DSN came from the environment."""
    for suffix, key in ENV_KEYS.items():
        if ENV_PREFIX + suffix in env:
            data[key] = env[ENV_PREFIX + suffix]
    given = {key: env[ENV_PREFIX + suffix] for suffix, key in DATABASE_ENV_KEYS.items()
             if ENV_PREFIX + suffix in env}
    if not given:
        return False
    databases = data.get("databases") or [{}]
    if not isinstance(databases, list) or len(databases) != 1:
        problems.append(f"{ENV_PREFIX}DSN: can only override a configuration with one database")
        return False
    first = dict(databases[0]) if isinstance(databases[0], dict) else {}
    first.update(given)
    data["databases"] = [first]
    return "dsn" in given


def _name_env_source(problem: str, env: Mapping[str, str]) -> str:
    """Say which variable set a bad value: the YAML may be fine while the container's env is not."""
    key = problem.partition(":")[0]
    sources = {key: suffix for suffix, key in ENV_KEYS.items()}
    sources.update({f"databases[0].{key}": suffix for suffix, key in DATABASE_ENV_KEYS.items()})
    suffix = sources.get(key)
    if suffix is not None and ENV_PREFIX + suffix in env:
        return f"{problem} (set by {ENV_PREFIX}{suffix})"
    return problem


# --- loading -------------------------------------------------------------------------------


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
    if problems or cfg is None:
        raise ConfigError([_name_env_source(p, env) for p in problems])
    return cfg


def parse(data: dict[str, Any], problems: list[str], dsn_from_env: bool = False) -> Config | None:
    """Validate a mapping as read from YAML; appends one line per problem, None if any."""
    try:
        return Config.model_validate(data, context={"dsn_from_env": dsn_from_env})
    except ValidationError as exc:
        lines = [_line(e) for e in exc.errors()]
        problems.extend(dict.fromkeys(lines))
        return None


def yaml_error(exc: yaml.YAMLError) -> str:
    """PyYAML's message on one line: its default spans several, breaking one-line-per-problem."""
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        what = " ".join(part for part in (exc.context, exc.problem) if part)
        return f"line {mark.line + 1}, column {mark.column + 1}: {what}"
    return " ".join(str(exc).split())


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
