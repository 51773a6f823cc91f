"""The docker-compose demo stack, checked statically: Docker does not run on our machines.

What is checked: the compose file parses (PyYAML, and the compose-spec parser when installed),
every bind-mounted file exists in the repository, images are pinned, service names and ports
agree with the configs that name them (Prometheus, Grafana datasources, collector, exporter,
Alertmanager secrets), the Dockerfile builds a non-root image with a health check, and the
webhook sink really accepts a POST. Nothing here starts a container.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from psycopg.conninfo import conninfo_to_dict

from exporter import cli, config
from tests.dashboards_fixtures import REPO
from tests.exporter_fixtures import wait_for

COMPOSE_PATH = REPO / "docker-compose.yml"
COMPOSE: dict[str, Any] = yaml.safe_load(COMPOSE_PATH.read_text(encoding="utf-8"))
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
EXPORTER_SERVICE = "exporter"
EXPORTER_PORT = 9863


def binds(service: str) -> dict[str, Path]:
    """Container path -> repository path for every bind mount (`./x:/y[:ro]`) of a service."""
    out = {}
    for volume in SERVICES[service].get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith("."):
            out[target] = (REPO / source).resolve()
    return out


def repo_file(service: str, container_path: str) -> Path:
    """The repository file a service sees at `container_path`, through its bind mounts."""
    for target, source in binds(service).items():
        if container_path == target:
            return source
        if container_path.startswith(target.rstrip("/") + "/"):
            return source / container_path[len(target.rstrip("/")) + 1:]
    raise AssertionError(f"{service} has no bind mount covering {container_path}")


def container_ports(service: str) -> set[int]:
    return {int(str(p).rsplit(":", 1)[-1].split("/")[0]) for p in SERVICES[service]
            .get("ports", [])}


def host_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url if "://" in url else "tcp://" + url)
    assert parts.hostname and parts.port, url
    return parts.hostname, parts.port


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def test_compose_file_is_valid_for_the_compose_spec_parser() -> None:
    compose_spec = pytest.importorskip("compose_spec", reason="pip install compose-spec")
    parsed = compose_spec.PyCompose.from_yaml(COMPOSE_PATH.read_text(encoding="utf-8"))
    assert set(parsed.service_names()) == set(SERVICES)


def test_the_stack_has_every_service_the_issue_asks_for() -> None:
    assert {"postgres", "demo", EXPORTER_SERVICE, "prometheus", "alertmanager",
            "webhook-sink", "grafana", "otel-collector", "tempo"} <= set(SERVICES)


def test_every_bind_mounted_file_exists_in_the_repository() -> None:
    missing = [f"{name}: {source}" for name in SERVICES for source in binds(name).values()
               if not source.exists()]
    assert missing == []


def test_images_are_pinned_to_a_version() -> None:
    expected = {"postgres": r"postgres:16\.\d+", "prometheus": r"prom/prometheus:v[23]\.\d+\.\d+",
                "alertmanager": r"prom/alertmanager:v0\.\d+\.\d+",
                "grafana": r"grafana/grafana:1\d\.\d+\.\d+",
                "otel-collector": r"otel/opentelemetry-collector-contrib:0\.\d+\.\d+",
                "tempo": r"grafana/tempo:2\.\d+\.\d+",
                "webhook-sink": r"python:3\.11\.\d+-slim"}
    for name, pattern in expected.items():
        assert re.match(pattern, SERVICES[name]["image"]), (name, SERVICES[name]["image"])
    for name, service in SERVICES.items():
        image = service["image"]
        assert ":" in image and not image.endswith(":latest"), name


def test_dependencies_and_named_volumes_are_declared() -> None:
    declared = set(COMPOSE.get("volumes") or {})
    for name, service in SERVICES.items():
        assert set(service.get("depends_on", [])) <= set(SERVICES), name
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if not source.startswith((".", "/")):
                assert source in declared, (name, source)


def test_exporter_and_demo_commands_parse_with_the_real_cli() -> None:
    for name in ("demo", EXPORTER_SERVICE):
        assert SERVICES[name]["build"]["dockerfile"] == "Dockerfile"
        args = cli.parser().parse_args(SERVICES[name]["command"])
        assert args.command == {"demo": "demo", EXPORTER_SERVICE: "run"}[name]


def test_exporter_config_loads_and_names_the_stack_services() -> None:
    exporter_cfg = repo_file(EXPORTER_SERVICE, "/etc/pggit-exporter/config.yml")
    env = {k: str(v) for k, v in SERVICES[EXPORTER_SERVICE]["environment"].items()}
    cfg = config.load(exporter_cfg, env)
    assert cfg.listen_address[1] == EXPORTER_PORT
    assert EXPORTER_PORT in container_ports(EXPORTER_SERVICE)
    (db,) = cfg.databases
    assert db.password_env in env, "the DSN's password must come from the service environment"
    dsn = conninfo_to_dict(db.dsn)
    pg_env = SERVICES["postgres"]["environment"]
    assert (dsn["host"], dsn["dbname"], dsn["user"]) == (
        "postgres", pg_env["POSTGRES_DB"], pg_env["POSTGRES_USER"])
    assert host_port(cfg.traces.endpoint or "") == ("otel-collector", 4317)
    assert host_port(cfg.silences.alertmanager_url) == ("alertmanager", 9093)


def test_demo_workload_targets_the_stack_database() -> None:
    args = cli.parser().parse_args(SERVICES["demo"]["command"])
    dsn = conninfo_to_dict(args.dsn)
    pg_env = SERVICES["postgres"]["environment"]
    assert (dsn["host"], dsn["dbname"], dsn["user"]) == (
        "postgres", pg_env["POSTGRES_DB"], pg_env["POSTGRES_USER"])
    assert SERVICES["demo"]["environment"]["PGPASSWORD"] == pg_env["POSTGRES_PASSWORD"]


def test_prometheus_scrapes_the_exporter_service_and_alerts_the_alertmanager() -> None:
    prom = load_yaml(repo_file("prometheus", "/etc/prometheus/prometheus.yml"))
    targets = {t for job in prom["scrape_configs"] for sc in job.get("static_configs", [])
               for t in sc["targets"]}
    assert f"{EXPORTER_SERVICE}:{EXPORTER_PORT}" in targets, (
        "inside the stack the exporter is reached by its service name, not localhost")
    for target in targets:
        host, _ = host_port(target)
        assert host in SERVICES or host == "localhost", target
    am_targets = {t for am in prom["alerting"]["alertmanagers"]
                  for sc in am.get("static_configs", []) for t in sc["targets"]}
    assert am_targets == {"alertmanager:9093"}
    for pattern in prom["rule_files"]:
        # Relative rule paths are relative to the config file's directory in the container.
        in_container = Path("/etc/prometheus") / pattern
        rules_dir = repo_file("prometheus", str(in_container.parent))
        assert list(rules_dir.glob(in_container.name)), pattern


def test_alertmanager_secret_files_exist_and_chat_webhooks_reach_the_sink() -> None:
    am = load_yaml(repo_file("alertmanager", "/etc/alertmanager/alertmanager.yml"))
    files = {v for d in _dicts(am) for k, v in d.items() if k.endswith("_file")}
    assert files, "the shipped config reads its secrets from files"
    for path in files:
        assert repo_file("alertmanager", path).is_file(), path
    for name in ("slack-webhook-url", "mattermost-webhook-url"):
        url = repo_file("alertmanager", f"/etc/alertmanager/secrets/{name}").read_text().strip()
        assert host_port(url) == ("webhook-sink", 8080)
    assert 8080 in container_ports("webhook-sink")
    for pattern in am.get("templates", []):
        assert repo_file("alertmanager", str(Path(pattern).parent)).is_dir(), pattern


def _dicts(obj: Any) -> Any:
    if isinstance(obj, dict):
        yield obj
        for v in obj.values():
            yield from _dicts(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _dicts(v)


def test_grafana_provisioning_points_at_the_mounted_dashboards_and_stack_services() -> None:
    provisioning = repo_file("grafana", "/etc/grafana/provisioning")
    (provider,) = load_yaml(provisioning / "dashboards" / "pggit.yml")["providers"]
    dashboards = repo_file("grafana", provider["options"]["path"])
    assert sorted(p.name for p in dashboards.glob("*.json")), dashboards
    expected = {"prometheus": ("prometheus", 9090), "tempo": ("tempo", 3200),
                "alertmanager": ("alertmanager", 9093)}
    for path in (provisioning / "datasources").glob("*.yml"):
        for ds in load_yaml(path)["datasources"]:
            assert host_port(ds["url"]) == expected[ds["type"]], ds["name"]
            assert expected[ds["type"]][1] in container_ports(expected[ds["type"]][0])


def test_collector_pipeline_forwards_to_tempo_on_its_receiver_port() -> None:
    collector = load_yaml(repo_file("otel-collector", "/etc/otelcol-contrib/config.yaml"))
    for pipeline in collector["service"]["pipelines"].values():
        assert set(pipeline["receivers"]) <= set(collector["receivers"])
        assert set(pipeline["processors"]) <= set(collector["processors"])
        assert set(pipeline["exporters"]) <= set(collector["exporters"])
    grpc = collector["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"]
    assert int(grpc.rsplit(":", 1)[1]) in container_ports("otel-collector")
    tempo_cfg = load_yaml(repo_file("tempo", "/etc/tempo.yaml"))
    tempo_grpc = tempo_cfg["distributor"]["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"]
    traces = collector["service"]["pipelines"]["traces"]["exporters"]
    endpoints = {collector["exporters"][e].get("endpoint") for e in traces}
    assert f"tempo:{tempo_grpc.rsplit(':', 1)[1]}" in endpoints
    assert tempo_cfg["server"]["http_listen_port"] in container_ports("tempo")


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined and comments dropped."""
    text = (REPO / "Dockerfile").read_text(encoding="utf-8").replace("\\\n", " ")
    lines = [ln.strip() for ln in text.splitlines()]
    return [(ln.split(None, 1)[0].upper(), ln.split(None, 1)[1]) for ln in lines
            if ln and not ln.startswith("#")]


def test_dockerfile_builds_a_non_root_image() -> None:
    steps = dockerfile_instructions()
    args = {name: value for name, value in steps}
    assert re.match(r"python:3\.11\.\d+-slim", args["FROM"])
    user = [value for name, value in steps if name == "USER"]
    assert user and user[-1].split(":")[0] not in ("0", "root")
    assert args["EXPOSE"] == str(EXPORTER_PORT)
    assert json.loads(args["ENTRYPOINT"]) == ["pggit-exporter"]
    for name, value in steps:
        if name == "COPY":
            for source in value.split()[:-1]:
                assert (REPO / source).exists(), f"COPY source {source} is missing"


def test_dockerfile_healthcheck_is_the_healthcheck_command_on_the_run_config() -> None:
    """The probe reads the config `run` reads, so it follows its port, TLS and auth."""
    args = dict(dockerfile_instructions())
    probe = json.loads(args["HEALTHCHECK"].split(" CMD ", 1)[1])
    run = json.loads(args["CMD"])
    assert probe[:2] == ["pggit-exporter", "healthcheck"]
    assert probe[probe.index("--config") + 1] == run[run.index("--config") + 1]
    assert cli.parser().parse_args(probe[1:]).command == "healthcheck"


def test_image_installs_no_demo_postgresql() -> None:
    installs = [value for name, value in dockerfile_instructions()
                if name == "RUN" and "pip install" in value]
    assert installs
    for command in installs:
        assert "pgserver" not in command and "[demo" not in command, command


def test_dockerignore_keeps_what_the_package_build_needs() -> None:
    ignore = (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines()
    assert {"!pyproject.toml", "!README.md", "!exporter/"} <= set(ignore)


def test_webhook_sink_accepts_a_post_and_counts_it() -> None:
    sink = repo_file("webhook-sink", "/opt/webhook_sink.py")
    proc = subprocess.Popen([sys.executable, str(sink), "--listen", "127.0.0.1:0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        banner = proc.stderr.readline() if proc.stderr else ""
        port = int(banner.strip().rsplit(":", 1)[1])
        base = f"http://127.0.0.1:{port}"
        wait_for(lambda: urllib.request.urlopen(base + "/healthz", timeout=2).status == 200,
                 10, what="the sink to listen")
        body = json.dumps({"text": "PggitThresholdExceeded"}).encode()
        req = urllib.request.Request(base + "/slack", data=body,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=5) as resp:
            assert resp.status == 200
        with urllib.request.urlopen(base + "/", timeout=5) as resp:
            assert json.loads(resp.read()) == {"received": {"/slack": 1}}
        line = json.loads(proc.stdout.readline()) if proc.stdout else {}
        assert line["path"] == "/slack"
        assert line["payload"] == {"text": "PggitThresholdExceeded"}
    finally:
        proc.terminate()
        proc.wait(10)
