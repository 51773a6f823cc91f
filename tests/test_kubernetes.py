"""deploy/kubernetes as `kubectl apply -k` sees it: rendered by the real kustomize, every
object valid against the Kubernetes schemas, the rules and dashboards exactly the shipped ones,
and the pod wired the way the exporter's own config expects."""

from __future__ import annotations

import copy
import importlib.util
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from exporter import cli, config

ROOT = Path(__file__).resolve().parent.parent
KUBE = ROOT / "deploy" / "kubernetes"
KUBERNETES_VERSIONS = ("1.30.0", "1.34.0")


def load_generator() -> Any:
    spec = importlib.util.spec_from_file_location("k8s_generate", KUBE / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


generate = load_generator()


def render(path: Path) -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed (CI installs it: .ci/run)")
    done = subprocess.run([kubectl, "kustomize", str(path)], capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return [d for d in yaml.safe_load_all(done.stdout) if d]


@pytest.fixture(scope="module", params=["base", "overlays/example"])
def rendered(request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    return render(KUBE / request.param)


@pytest.fixture(scope="module")
def overlay() -> list[dict[str, Any]]:
    return render(KUBE / "overlays" / "example")


def one(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (found,) = [o for o in objects if o["kind"] == kind]
    return found


def container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    (c,) = one(objects, "StatefulSet")["spec"]["template"]["spec"]["containers"]
    return c


def exporter_config(objects: list[dict[str, Any]]) -> dict[str, Any]:
    (cm,) = [o for o in objects if o["kind"] == "ConfigMap"
             and o["metadata"]["name"].startswith("pggit-exporter-config")]
    return yaml.safe_load(cm["data"]["config.yml"])


def mount_for(objects: list[dict[str, Any]], path: str) -> dict[str, Any]:
    """The volume mount a file path lives under (longest mount path wins)."""
    mounts = [m for m in container(objects)["volumeMounts"]
              if path == m["mountPath"] or path.startswith(m["mountPath"].rstrip("/") + "/")]
    assert mounts, f"{path} is on no volume"
    return max(mounts, key=lambda m: len(m["mountPath"]))


def test_generated_rules_and_dashboards_are_up_to_date() -> None:
    assert generate.main(["--check"]) == 0, "run: python deploy/kubernetes/generate.py"


def test_every_built_in_object_is_valid_against_the_kubernetes_schemas(
        rendered: list[dict[str, Any]]) -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    builtin = [o for o in rendered if "monitoring.coreos.com" not in o["apiVersion"]]
    assert {o["kind"] for o in builtin} >= {"StatefulSet", "Service", "ServiceAccount",
                                            "ConfigMap"}
    for version in KUBERNETES_VERSIONS:
        for obj in builtin:
            kubernetes_validate.validate(obj, version, strict=True)


def test_the_schema_check_rejects_a_broken_statefulset(overlay: list[dict[str, Any]]) -> None:
    """The validator is not a no-op: an unknown field fails it."""
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    broken = copy.deepcopy(one(overlay, "StatefulSet"))
    broken["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSIONS[0], strict=True)


def test_prometheus_rule_carries_exactly_the_shipped_rules(
        rendered: list[dict[str, Any]], tmp_path: Path) -> None:
    rule = one(rendered, "PrometheusRule")
    assert rule["spec"]["groups"] == generate.rule_groups()
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (apt-get install prometheus)")
    groups = tmp_path / "groups.yml"
    groups.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    done = subprocess.run([promtool, "check", "rules", str(groups)], capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_service_monitor_scrapes_the_service_as_the_rules_job(
        rendered: list[dict[str, Any]]) -> None:
    monitor, service = one(rendered, "ServiceMonitor"), one(rendered, "Service")
    labels = service["metadata"]["labels"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= labels.items()
    params = yaml.safe_load((ROOT / "prometheus" / "params.yml").read_text(encoding="utf-8"))
    assert labels[monitor["spec"]["jobLabel"]] == params["job"]
    ports = {p["name"] for p in service["spec"]["ports"]}
    assert {e["port"] for e in monitor["spec"]["endpoints"]} <= ports
    pod_labels = one(rendered, "StatefulSet")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()


def test_tls_overlay_scrapes_over_https_with_basic_auth(overlay: list[dict[str, Any]]) -> None:
    (endpoint,) = one(overlay, "ServiceMonitor")["spec"]["endpoints"]
    assert endpoint["scheme"] == "https"
    secrets = {o["metadata"]["name"]: o for o in overlay if o["kind"] == "Secret"}
    for ref in endpoint["basicAuth"].values():
        assert ref["key"] in secrets[ref["name"]]["data"]


def test_dashboard_config_maps_are_the_shipped_dashboards_with_the_sidecar_label(
        rendered: list[dict[str, Any]]) -> None:
    maps = [o for o in rendered if o["kind"] == "ConfigMap"
            and o["metadata"].get("labels", {}).get("grafana_dashboard") == "1"]
    shipped = {p.name: json.loads(p.read_text(encoding="utf-8")) for p in generate.DASHBOARDS}
    assert len(maps) == len(shipped)
    assert {name: json.loads(text) for m in maps for name, text in m["data"].items()} == shipped


def test_pod_runs_as_non_root_on_a_read_only_root_filesystem(
        rendered: list[dict[str, Any]]) -> None:
    pod = one(rendered, "StatefulSet")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["automountServiceAccountToken"] is False
    security = container(rendered)["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]


def test_probes_run_the_healthcheck_command_on_the_run_config(
        rendered: list[dict[str, Any]]) -> None:
    c = container(rendered)
    run = cli.parser().parse_args(c["args"])
    endpoints = {}
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        args = cli.parser().parse_args(c[probe]["exec"]["command"][1:])
        assert c[probe]["exec"]["command"][0] == "pggit-exporter"
        assert (args.command, args.config) == ("healthcheck", run.config)
        endpoints[probe] = args.endpoint
    assert endpoints == {"livenessProbe": "/healthz", "readinessProbe": "/readyz",
                         "startupProbe": "/healthz"}
    assert mount_for(rendered, str(run.config))["name"] == "config"


def test_readiness_logs_in_when_basic_auth_is_on(overlay: list[dict[str, Any]]) -> None:
    args = cli.parser().parse_args(container(overlay)["readinessProbe"]["exec"]["command"][1:])
    web = yaml.safe_load((KUBE / "overlays" / "example" / "web-config.yml").read_text())
    assert args.user in web["basic_auth_users"]
    assert mount_for(overlay, str(args.password_file))["name"] == "secrets"


def test_state_dir_is_on_the_persistent_volume(rendered: list[dict[str, Any]]) -> None:
    state_dir = exporter_config(rendered)["state_dir"]
    claims = {t["metadata"]["name"]
              for t in one(rendered, "StatefulSet")["spec"]["volumeClaimTemplates"]}
    mount = mount_for(rendered, state_dir)
    assert mount["name"] in claims and not mount.get("readOnly")


def test_every_file_the_config_names_is_mounted_from_a_secret(
        rendered: list[dict[str, Any]]) -> None:
    data = exporter_config(rendered)
    problems: list[str] = []
    config.parse(copy.deepcopy(data), problems)
    assert all("does not exist" in p for p in problems), problems
    volumes = {v["name"]: v for v in
               one(rendered, "StatefulSet")["spec"]["template"]["spec"]["volumes"]}
    files = [db["password_file"] for db in data["databases"]]
    if "web_config_file" in data:
        files.append(data["web_config_file"])
        web = yaml.safe_load((KUBE / "overlays" / "example" / "web-config.yml").read_text())
        files += [web["tls_server_config"]["cert_file"], web["tls_server_config"]["key_file"]]
    for path in files:
        assert "secret" in volumes[mount_for(rendered, path)["name"]], path


def test_memory_request_covers_the_measured_peak() -> None:
    """Requests cite bench/results: the pod must fit the measured peak RSS of one database."""
    objects = render(KUBE / "base")
    resources = container(objects)["resources"]
    results = json.loads((ROOT / "bench" / "results" / "results.json").read_text())
    peak_mb = max(m["after_steady_mb"]["VmHWM"] for m in results["memory"])
    request_mb = int(resources["requests"]["memory"].removesuffix("Mi")) * 1.048576
    assert peak_mb < request_mb < int(resources["limits"]["memory"].removesuffix("Mi"))


def test_image_tag_is_the_package_version(rendered: list[dict[str, Any]]) -> None:
    from exporter import __version__
    assert container(rendered)["image"].rsplit(":", 1)[1] == __version__


def test_readme_kubernetes_commands_render(tmp_path: Path) -> None:
    """The README's snippet as written, with `apply` swapped for `kustomize` (no cluster)."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = next(b for b in readme.split("```sh\n")[1:] if "kubectl apply -k" in b)
    commands = [line.split("  #")[0] for line in block.split("```")[0].splitlines()]
    shutil.copytree(ROOT / "deploy", tmp_path / "deploy")
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed (CI installs it: .ci/run)")
    for command in commands:
        command = command.replace("kubectl apply -k", f"{kubectl} kustomize")
        done = subprocess.run(command, shell=True, cwd=tmp_path, capture_output=True,
                              text=True, timeout=120, check=False)
        assert done.returncode == 0, (command, done.stderr)
    assert "kind: StatefulSet" in done.stdout
