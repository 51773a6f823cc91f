"""deploy/systemd/pggit-exporter.service: verified by systemd-analyze, hardened, and wired to
the exporter's CLI and to LoadCredential= through password_credential."""

from __future__ import annotations

import configparser
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from exporter import cli, config

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "deploy" / "systemd" / "pggit-exporter.service"
INSTALLED = "/opt/pggit-exporter/bin/pggit-exporter"


def unit_with_this_venv(tmp_path: Path) -> Path:
    """The unit with its ExecStart= pointing at this venv: verify checks the binary exists."""
    script = Path(sys.executable).parent / "pggit-exporter"
    copy = tmp_path / UNIT.name
    copy.write_text(UNIT.read_text(encoding="utf-8").replace(INSTALLED, str(script)))
    return copy


def directives() -> dict[str, list[str]]:
    parser = configparser.ConfigParser(strict=False, interpolation=None,
                                       dict_type=_MultiDict, empty_lines_in_values=False)
    parser.optionxform = str  # type: ignore[assignment, method-assign]
    parser.read_string(UNIT.read_text(encoding="utf-8"))
    return {key: value.split("\n") for key, value in parser["Service"].items()}


class _MultiDict(dict):
    """configparser keeps the last of repeated keys; systemd keeps them all."""

    def __setitem__(self, key: str, value: object) -> None:
        if isinstance(value, list) and key in self:
            self[key].extend(value)
        else:
            super().__setitem__(key, value)


def test_systemd_analyze_verify_passes(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (apt-get install systemd)")
    done = subprocess.run([analyze, "verify", "--man=no", str(unit_with_this_venv(tmp_path))],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0 and not done.stderr.strip(), done.stderr


def test_verify_reports_a_misspelt_directive(tmp_path: Path) -> None:
    """The check above can fail: systemd ignores an unknown key but says so on stderr."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (apt-get install systemd)")
    unit = unit_with_this_venv(tmp_path)
    unit.write_text(unit.read_text().replace("ProtectHome=yes", "ProtectHomes=yes"))
    done = subprocess.run([analyze, "verify", "--man=no", str(unit)],
                          capture_output=True, text=True, timeout=120, check=False)
    assert "Unknown key 'ProtectHomes'" in done.stderr


def test_exposure_is_low_by_systemds_own_measure(tmp_path: Path) -> None:
    """`systemd-analyze security` rates it 1.2 ("OK") today; fail above 2.0 (threshold 20)."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (apt-get install systemd)")
    done = subprocess.run([analyze, "security", "--offline=yes", "--threshold=20",
                           str(unit_with_this_venv(tmp_path))],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr


def test_hardening_directives() -> None:
    d = directives()
    for key, value in {"DynamicUser": "yes", "NoNewPrivileges": "yes",
                       "ProtectSystem": "strict", "ProtectHome": "yes", "PrivateTmp": "yes",
                       "StateDirectory": "pggit-exporter", "CapabilityBoundingSet": ""}.items():
        assert d[key] == [value], key


def test_exec_lines_are_the_cli_on_one_config() -> None:
    d = directives()
    start = cli.parser().parse_args(shlex.split(d["ExecStart"][0])[1:])
    check = cli.parser().parse_args(shlex.split(d["ExecStartPre"][0])[1:])
    assert (start.command, check.command) == ("run", "check-config")
    assert start.config == check.config
    assert d["ExecReload"] == ["/bin/kill -HUP $MAINPID"]


def test_state_dir_is_the_state_directory() -> None:
    assert "PGGIT_EXPORTER_STATE_DIR=%S/pggit-exporter" in directives()["Environment"]


def test_password_credential_reads_the_credentials_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What LoadCredential=main-password:... sets up, as the unit's comment says to use it."""
    name = directives()["LoadCredential"][0].split(":", 1)[0]
    (tmp_path / name).write_text("s3cret\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    cfg = tmp_path / "config.yml"
    cfg.write_text(yaml.safe_dump({"databases": [
        {"name": "main", "dsn": "host=db dbname=app", "password_credential": name}]}))
    (db,) = config.load(cfg, {}).databases
    assert db.password_file == tmp_path / name


def test_password_credential_without_systemd_says_what_sets_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    cfg = tmp_path / "config.yml"
    cfg.write_text(yaml.safe_dump({"databases": [
        {"name": "main", "dsn": "host=db", "password_credential": "main-password"}]}))
    with pytest.raises(config.ConfigError) as err:
        config.load(cfg, {})
    assert err.value.problems == [
        "databases[0].password_credential: $CREDENTIALS_DIRECTORY is not set: systemd sets "
        "it for a unit with LoadCredential=main-password:/path/to/file (see deploy/systemd)"]


@pytest.mark.parametrize(("extra", "problem"), [
    ({"password_file": "/etc/passwd"}, "give password_file or password_credential, not both"),
    ({"password_credential": "../x"}, "must be a credential name, not a path: '../x'")])
def test_password_credential_rejects(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                     extra: dict[str, str], problem: str) -> None:
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    db = {"name": "main", "dsn": "host=db", "password_credential": "p", **extra}
    cfg = tmp_path / "config.yml"
    cfg.write_text(yaml.safe_dump({"databases": [db]}))
    with pytest.raises(config.ConfigError) as err:
        config.load(cfg, {})
    assert f"databases[0].password_credential: {problem}" in err.value.problems
