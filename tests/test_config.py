"""Every configuration mistake is caught by `check-config` before anything connects.

The command is run as operators run it (`python -m exporter check-config --config F`): exit 2
and one line per problem, each starting with the key at fault, or exit 0 for a valid file.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import subprocess
import sys
from pathlib import Path
from unittest import mock

import psycopg
import pytest
import yaml
from psycopg import sql
from pydantic import ValidationError

from exporter import cli, config, config_doc
from exporter.config import Config, DatabaseConfig, SilencesConfig, TracesConfig

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "config" / "pggit-exporter.yml"
GOOD_DSN = "host=127.0.0.1 port=5432 dbname=pggit user=exporter"


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PGGIT_EXPORTER_")}
    env.update(extra)
    return env


def run_command(path: Path, **env: str) -> tuple[int, list[str]]:
    """`python -m exporter check-config` as a process: exit code and non-empty stderr lines."""
    proc = subprocess.run(
        [sys.executable, "-m", "exporter", "check-config", "--config", str(path)],
        capture_output=True, text=True, timeout=60, env=_clean_env(**env), cwd=ROOT)
    return proc.returncode, [line for line in proc.stderr.splitlines() if line.strip()]


def check(path: Path, **env: str) -> tuple[int, list[str]]:
    """The same command in-process (half a second less per case); the process form is
    covered by the test_command_line_* tests below."""
    err = io.StringIO()
    with mock.patch.dict(os.environ, _clean_env(**env), clear=True), \
            contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = cli.main(["check-config", "--config", str(path)])
    return code, [line for line in err.getvalue().splitlines() if line.strip()]


def minimal(**top: object) -> dict[str, object]:
    data: dict[str, object] = {"listen": "127.0.0.1:9863", "state_dir": "/tmp/pggit-state",
                               "databases": [{"name": "main", "dsn": GOOD_DSN}]}
    data.update(top)
    return data


def with_db(**db: object) -> dict[str, object]:
    data = minimal()
    data["databases"] = [{"name": "main", "dsn": GOOD_DSN, **db}]
    return data


def write(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "pggit-exporter.yml"
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


def single_problem(tmp_path: Path, data: object, key: str, *words: str, **env: str) -> str:
    """Assert exit 2 with exactly one line, naming `key` first and containing `words`."""
    code, lines = check(write(tmp_path, data), **env)
    assert code == 2, lines
    assert len(lines) == 1, lines
    assert lines[0].startswith(key + ":"), lines
    for word in words:
        assert word in lines[0], lines
    return lines[0]


# --- the documented example -------------------------------------------------------------------


def test_committed_example_is_what_the_model_renders() -> None:
    assert EXAMPLE.read_text(encoding="utf-8") == config_doc.example_yaml(), (
        "config/pggit-exporter.yml is stale; run: python -m exporter.config_doc")


def test_example_documents_the_trace_protocol_the_code_uses() -> None:
    """The example once said grpc while the code sent http/protobuf."""
    from exporter.send.otlp import protocol
    documented = config_doc.default_text(TracesConfig.model_fields["protocol"])
    assert documented.endswith(f"else {protocol(TracesConfig(), {})}.")
    assert "protocol: http/protobuf" in EXAMPLE.read_text(encoding="utf-8")


def test_adding_a_setting_is_one_declaration() -> None:
    """A field added to a model is validated, documented and defaulted with no other edit."""

    class Extended(SilencesConfig):
        labels: config.StringMap = config.setting({}, "Extra labels.", example="team: db")

    assert Extended(labels={"team": "db"}).labels == {"team": "db"}
    assert Extended().labels == {}
    with pytest.raises(ValidationError, match="must be a mapping of strings to strings"):
        Extended(labels={"team": 1})
    field = Extended.model_fields["labels"]
    assert config_doc.default_text(field) == "Default: none."


def _mentioned_keys(text: str) -> set[str]:
    """Keys written in the example, whether set or shown commented out."""
    return set(re.findall(r"^[ \t]*(?:#[ \t]*)?(?:-[ \t]+)?([a-z_]+):", text, re.MULTILINE))


@pytest.mark.parametrize("cls", [Config, DatabaseConfig, TracesConfig, SilencesConfig],
                         ids=lambda c: c.__name__)
def test_example_mentions_every_setting(cls: type) -> None:
    missing = set(config.keys(cls)) - _mentioned_keys(EXAMPLE.read_text())
    assert not missing, f"config/pggit-exporter.yml does not document {sorted(missing)}"


def test_example_mentions_every_environment_override() -> None:
    text = EXAMPLE.read_text()
    names = {config.ENV_PREFIX + s for s in config.ENV_KEYS} | {
        config.ENV_PREFIX + "DSN", config.ENV_PREFIX + "PASSWORD_FILE"}
    assert not {n for n in names if n not in text}


def test_example_is_valid() -> None:
    code, lines = check(EXAMPLE)
    assert code == 0, lines


def test_example_values_are_the_documented_defaults() -> None:
    """The example sets each key to its default, so its "Default ..." comments cannot lie."""
    cfg = config.load(EXAMPLE, {})
    db = cfg.databases[0]
    assert cfg.model_copy(update={"databases": ()}) == Config.model_construct(databases=())
    assert db.model_copy(update={"dsn": "dbname=x"}) == DatabaseConfig(name="main", dsn="dbname=x")
    assert cfg.traces == TracesConfig()
    assert cfg.silences == SilencesConfig()


def test_command_line_valid_config_exits_zero(tmp_path: Path) -> None:
    code, lines = run_command(write(tmp_path, minimal()))
    assert (code, lines) == (0, [])


def test_command_line_problems_exit_two_with_one_line_each(tmp_path: Path) -> None:
    code, lines = run_command(write(tmp_path, minimal(listen="nowhere", colour="blue")))
    assert code == 2
    assert sorted(line.partition(":")[0] for line in lines) == ["colour", "listen"]


def test_command_line_env_override_is_applied(tmp_path: Path) -> None:
    code, lines = run_command(write(tmp_path, minimal()), PGGIT_EXPORTER_POLL_INTERVAL="never")
    assert code == 2
    assert len(lines) == 1 and lines[0].startswith("poll_interval:"), lines


def test_command_line_missing_file_exits_two(tmp_path: Path) -> None:
    code, lines = run_command(tmp_path / "absent.yml")
    assert code == 2
    assert len(lines) == 1 and lines[0].startswith("config:") and "absent.yml" in lines[0]


# --- one problem, one line naming its key ----------------------------------------------------


@pytest.mark.parametrize(("data", "key"), [
    (minimal(pol_interval="1s"), "pol_interval"),
    (with_db(passwrd_file="/x"), "databases[0].passwrd_file"),
    (minimal(traces={"endpont": "http://x:4317"}), "traces.endpont"),
    (minimal(silences={"enable": True}), "silences.enable"),
], ids=["top", "database", "traces", "silences"])
def test_unknown_key_is_an_error_at_every_level(tmp_path: Path, data: object, key: str) -> None:
    single_problem(tmp_path, data, key, "unknown key")


@pytest.mark.parametrize(("data", "key"), [
    (minimal(batch_size="many"), "batch_size"),
    (minimal(batch_size=True), "batch_size"),
    (minimal(max_label_values=0), "max_label_values"),
    (minimal(max_label_length=8), "max_label_length"),
    (minimal(log_format="text"), "log_format"),
    (minimal(log_level="verbose"), "log_level"),
    (minimal(start_position="beginning"), "start_position"),
    (minimal(state_dir=["a"]), "state_dir"),
    (minimal(silences={"enabled": "yes"}), "silences.enabled"),
    (minimal(traces={"protocol": "http"}), "traces.protocol"),
    (minimal(traces={"user_name": "all"}), "traces.user_name"),
    (minimal(traces={"headers": {"x": 1}}), "traces.headers"),
    (with_db(schema=""), "databases[0].schema"),
    (with_db(disabled_collectors="performance_metrics"), "databases[0].disabled_collectors"),
    (with_db(tables=["performance_metrics"]), "databases[0].tables"),
])
def test_wrong_type_names_the_key(tmp_path: Path, data: object, key: str) -> None:
    single_problem(tmp_path, data, key, "must be")


@pytest.mark.parametrize("value", ["5 seconds", "-1s", "0", 0, "1d", "", "ms", True])
def test_bad_duration_is_rejected(tmp_path: Path, value: object) -> None:
    single_problem(tmp_path, minimal(poll_interval=value), "poll_interval", "duration")


@pytest.mark.parametrize("key", ["gauge_interval", "gap_grace", "retry_backoff_max"])
def test_bad_duration_is_rejected_for_every_duration_key(tmp_path: Path, key: str) -> None:
    single_problem(tmp_path, minimal(**{key: "soon"}), key, "duration")


@pytest.mark.parametrize("key", ["running_timeout", "retry_for", "timeout"])
def test_bad_traces_duration_names_its_key(tmp_path: Path, key: str) -> None:
    single_problem(tmp_path, minimal(traces={key: "soon"}), f"traces.{key}", "duration")


def test_traces_retry_for_is_parsed_as_a_duration() -> None:
    cfg = config.parse(minimal(traces={"retry_for": "90s"}), [])
    assert cfg.traces.retry_for == 90.0


def test_bad_database_duration_names_its_database(tmp_path: Path) -> None:
    single_problem(tmp_path, with_db(statement_timeout="-5s"), "databases[0].statement_timeout")


def test_misspelt_time_zone_is_rejected_with_a_suggestion(tmp_path: Path) -> None:
    line = single_problem(tmp_path, with_db(timezone="America/New_Yrok"),
                          "databases[0].timezone", "unknown time zone")
    assert "'America/New_York'" in line


def test_time_zone_check_agrees_with_postgresql(tmp_path: Path, pggit_dsn: str) -> None:
    """What the check lets through, the server takes; what it refuses, the server refuses."""
    with psycopg.connect(pggit_dsn, autocommit=True) as conn:
        for zone in ("America/New_York", "europe/berlin", "UTC", "EST5EDT", "PST8PDT",
                     "+02:00", "-5", "CET", "America/New_Yrok", "Mars/Olympus_Mons"):
            code, lines = check(write(tmp_path, with_db(timezone=zone)))
            try:
                conn.execute(sql.SQL("SET TimeZone = {}").format(sql.Literal(zone)))
                server_accepts = True
            except psycopg.errors.InvalidParameterValue:
                server_accepts = False
            assert (code == 0) == server_accepts, (zone, lines)


def test_durations_with_units_are_accepted() -> None:
    assert [config.parse_duration(v) for v in ("250ms", "2s", "1.5m", "1h", 3, "0.5")] == [
        0.25, 2.0, 90.0, 3600.0, 3.0, 0.5]


@pytest.mark.parametrize("value", ["9863", "localhost", "127.0.0.1:http", "127.0.0.1:70000",
                                   "127.0.0.1:", 9863])
def test_bad_listen_address_is_rejected(tmp_path: Path, value: object) -> None:
    single_problem(tmp_path, minimal(listen=value), "listen", "host:port")


@pytest.mark.parametrize("databases", [[], None, {"name": "main"}])
def test_no_database_is_an_error(tmp_path: Path, databases: object) -> None:
    single_problem(tmp_path, minimal(databases=databases), "databases", "at least one")


def test_database_without_dsn_is_an_error(tmp_path: Path) -> None:
    single_problem(tmp_path, minimal(databases=[{"name": "main"}]), "databases[0].dsn",
                   "required")


def test_duplicate_database_names_are_an_error(tmp_path: Path) -> None:
    data = minimal(databases=[{"name": "a", "dsn": GOOD_DSN},
                              {"name": "a", "dsn": GOOD_DSN.replace("pggit", "other")}])
    single_problem(tmp_path, data, "databases", "'a'", "twice")


def test_databases_without_names_default_to_dbname_and_may_not_collide(tmp_path: Path) -> None:
    data = minimal(databases=[{"dsn": GOOD_DSN}, {"dsn": GOOD_DSN.replace("5432", "5433")}])
    single_problem(tmp_path, data, "databases", "'pggit'", "twice")


@pytest.mark.parametrize("dsn", [
    GOOD_DSN + " password=hunter2",
    "postgresql://exporter:hunter2@127.0.0.1:5432/pggit",
], ids=["keyword", "uri"])
def test_password_in_yaml_dsn_is_refused(tmp_path: Path, dsn: str) -> None:
    line = single_problem(tmp_path, with_db(dsn=dsn), "databases[0].dsn", "password_file")
    assert "hunter2" not in line


def test_unparseable_dsn_is_an_error(tmp_path: Path) -> None:
    single_problem(tmp_path, with_db(dsn="host=127.0.0.1 dbname"), "databases[0].dsn",
                   "not a valid connection string")


def test_missing_password_file_is_an_error(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-secret"
    single_problem(tmp_path, with_db(password_file=str(missing)),
                   "databases[0].password_file", str(missing), "does not exist")


def test_existing_password_file_is_accepted(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("hunter2\n")
    code, lines = check(write(tmp_path, with_db(password_file=str(secret))))
    assert (code, lines) == (0, [])


def test_unknown_table_override_is_an_error(tmp_path: Path) -> None:
    data = with_db(tables={"performance_metric": "pm_v2"})
    single_problem(tmp_path, data, "databases[0].tables.performance_metric", "unknown")


def test_unknown_disabled_collector_is_an_error(tmp_path: Path) -> None:
    """A typo here would otherwise silently leave the collector running."""
    data = with_db(disabled_collectors=["performance_metric"])
    single_problem(tmp_path, data, "databases[0].disabled_collectors", "'performance_metric'")


def test_missing_web_config_file_is_an_error(tmp_path: Path) -> None:
    single_problem(tmp_path, minimal(web_config_file=str(tmp_path / "web.yml")),
                   "web_config_file", "does not exist")


@pytest.mark.parametrize(("buckets", "why"), [
    ([0.1, 0.05, 1], "strictly increasing"),
    ([0.1, 0.1, 1], "strictly increasing"),
    ([-0.1, 0.5, 1], "positive"),
    ([0, 0.5, 1], "positive"),
    ([0.1, float("inf")], "positive finite"),
    ([], "non-empty"),
    ("0.1,0.5", "non-empty"),
    ([0.1, "fast"], "bucket"),
], ids=["unsorted", "repeated", "negative", "zero", "infinite", "empty", "string", "word"])
def test_bad_buckets_are_rejected(tmp_path: Path, buckets: object, why: str) -> None:
    single_problem(tmp_path, minimal(buckets=buckets), "buckets", why)


@pytest.mark.parametrize("key", ["merge_buckets", "span_buckets"])
def test_bad_buckets_are_rejected_for_each_histogram(tmp_path: Path, key: str) -> None:
    single_problem(tmp_path, minimal(**{key: [1, 0.5]}), key, "strictly increasing")


# --- environment overrides -------------------------------------------------------------------


def test_env_overrides_replace_file_values(tmp_path: Path) -> None:
    path = write(tmp_path, minimal(poll_interval="5s"))
    cfg = config.load(path, {
        "PGGIT_EXPORTER_DSN": "host=10.0.0.9 dbname=other user=x",
        "PGGIT_EXPORTER_LISTEN": "127.0.0.1:19863",
        "PGGIT_EXPORTER_STATE_DIR": str(tmp_path / "state"),
        "PGGIT_EXPORTER_POLL_INTERVAL": "250ms",
    })
    assert cfg.databases[0].dsn == "host=10.0.0.9 dbname=other user=x"
    assert cfg.databases[0].name == "main"
    assert cfg.listen == "127.0.0.1:19863"
    assert cfg.state_dir == tmp_path / "state"
    assert cfg.poll_interval == 0.25


def test_env_dsn_alone_makes_a_complete_config(tmp_path: Path) -> None:
    code, lines = check(write(tmp_path, {"state_dir": str(tmp_path)}),
                        PGGIT_EXPORTER_DSN=GOOD_DSN)
    assert (code, lines) == (0, [])


def test_env_dsn_may_carry_the_password(tmp_path: Path) -> None:
    """The environment is a secret store for containers; only the YAML must stay secret-free."""
    code, lines = check(write(tmp_path, minimal()),
                        PGGIT_EXPORTER_DSN=GOOD_DSN + " password=hunter2")
    assert (code, lines) == (0, [])


def test_env_dsn_cannot_override_several_databases(tmp_path: Path) -> None:
    data = minimal(databases=[{"name": "a", "dsn": GOOD_DSN}, {"name": "b", "dsn": GOOD_DSN}])
    single_problem(tmp_path, data, "PGGIT_EXPORTER_DSN", "one database",
                   PGGIT_EXPORTER_DSN=GOOD_DSN)


@pytest.mark.parametrize(("var", "value", "key"), [
    ("PGGIT_EXPORTER_LISTEN", "nowhere", "listen"),
    ("PGGIT_EXPORTER_POLL_INTERVAL", "fast", "poll_interval"),
    ("PGGIT_EXPORTER_STATE_DIR", "", "state_dir"),
    ("PGGIT_EXPORTER_DSN", "host=x dbname", "databases[0].dsn"),
])
def test_bad_env_override_names_key_and_variable(tmp_path: Path, var: str, value: str,
                                                  key: str) -> None:
    single_problem(tmp_path, minimal(), key, var, **{var: value})


def test_env_password_file_must_exist(tmp_path: Path) -> None:
    single_problem(tmp_path, minimal(), "databases[0].password_file", "does not exist",
                   PGGIT_EXPORTER_PASSWORD_FILE=str(tmp_path / "absent"))


# --- several problems, broken files ------------------------------------------------------------


def test_several_problems_give_one_line_each(tmp_path: Path) -> None:
    data = minimal(listen="nowhere", poll_interval="soon", colour="blue",
                   buckets=[2, 1], databases=[{"name": "a", "dsn": GOOD_DSN, "shema": "x"},
                                              {"name": "b"}])
    code, lines = check(write(tmp_path, data))
    assert code == 2
    keys = sorted(line.partition(":")[0] for line in lines)
    assert keys == sorted(["listen", "poll_interval", "colour", "buckets",
                           "databases[0].shema", "databases[1].dsn"])


def test_invalid_yaml_is_one_clear_line(tmp_path: Path) -> None:
    line = single_problem(tmp_path, "listen: [127.0.0.1:9863\ndatabases: {", "config",
                          "not valid YAML")
    assert str(tmp_path) in line


def test_yaml_that_is_not_a_mapping_is_an_error(tmp_path: Path) -> None:
    single_problem(tmp_path, "- listen: 127.0.0.1:9863\n", "config", "mapping")


def test_missing_config_file_is_an_error(tmp_path: Path) -> None:
    code, lines = check(tmp_path / "absent.yml")
    assert code == 2
    assert len(lines) == 1 and lines[0].startswith("config:"), lines
    assert "absent.yml" in lines[0]


def test_empty_file_asks_for_a_database(tmp_path: Path) -> None:
    single_problem(tmp_path, "", "databases", "at least one")
