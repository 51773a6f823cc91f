"""The wheel users install: what it holds and what it requires (the container installs it)."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    out = tmp_path_factory.mktemp("wheel")
    # With build isolation, as `pip install .` in the Dockerfile builds it.
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out),
                    str(ROOT)], check=True, capture_output=True,
                   timeout=300, cwd=out)
    (built,) = out.glob("pggit_exporter-*.whl")
    return zipfile.ZipFile(built)


def metadata(wheel: zipfile.ZipFile) -> dict[str, list[str]]:
    name = next(n for n in wheel.namelist() if n.endswith(".dist-info/METADATA"))
    message = Parser().parsestr(wheel.read(name).decode())
    return {key: message.get_all(key) or [] for key in ("Requires-Dist", "Provides-Extra")}


def test_pgserver_is_only_in_the_demo_extra(wheel: zipfile.ZipFile) -> None:
    requires = metadata(wheel)["Requires-Dist"]
    pgserver = [r for r in requires if r.startswith("pgserver")]
    assert pgserver and all('extra == "demo"' in r for r in pgserver), pgserver
    assert "demo" in metadata(wheel)["Provides-Extra"]


def test_runtime_requirements_are_the_declared_ones(wheel: zipfile.ZipFile) -> None:
    runtime = sorted(r.split(">=")[0].split("[")[0] for r in metadata(wheel)["Requires-Dist"]
                     if "extra ==" not in r)
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert runtime == sorted(r.split(">=")[0].split("[")[0] for r in declared)
    assert "pgserver" not in runtime


def test_wheel_holds_the_package_and_the_demo_sql_only(wheel: zipfile.ZipFile) -> None:
    names = wheel.namelist()
    top = {n.split("/")[0] for n in names}
    assert {t for t in top if not t.endswith(".dist-info")} == {"exporter"}
    assert "exporter/healthcheck.py" in names
    assert any(n.startswith("exporter/demo/sql/") and n.endswith(".sql") for n in names)
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    assert "pggit-exporter = exporter.cli:main" in wheel.read(entry).decode()


def test_demo_without_the_extra_says_how_to_get_it(tmp_path: Path) -> None:
    """pgserver hidden and no initdb on PATH: a clear message, exit 1, nothing left behind."""
    hidden = tmp_path / "hide"
    hidden.mkdir()
    (hidden / "pgserver.py").write_text("raise ImportError('hidden by the test')\n")
    env = {**os.environ, "PYTHONPATH": str(hidden), "PATH": str(Path(sys.executable).parent)}
    done = subprocess.run([sys.executable, "-m", "exporter", "demo", "--duration", "1"],
                          capture_output=True, text=True, timeout=120, env=env, cwd=ROOT)
    assert done.returncode == 1, done.stderr
    assert "pip install 'pggit-exporter[demo]'" in done.stderr
    assert "--dsn" in done.stderr
