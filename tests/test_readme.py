"""The README stays true: its metric table is the catalog's, its commands are CI's."""

from __future__ import annotations

import re
from pathlib import Path

from exporter import render
from exporter.catalog import markdown_table
from exporter.config import ENV_KEYS, ENV_PREFIX
from exporter.config_doc import env_table

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_metric_table_is_generated_from_the_catalog() -> None:
    block = README.split("<!-- metric-table:start -->\n", 1)[1].split(
        "\n<!-- metric-table:end -->", 1)[0]
    assert block == markdown_table()


def test_environment_table_is_generated_from_the_config_model() -> None:
    block = README.split("<!-- config-env:start -->\n", 1)[1].split(
        "\n<!-- config-env:end -->", 1)[0]
    assert block == env_table()


def test_ci_runs_the_readme_test_command() -> None:
    command = re.search(r"(?:python -m pytest|pytest)[^`\n]*", README).group(0)
    assert command in (ROOT / ".ci/run").read_text(encoding="utf-8")


def test_ci_installs_the_extras_the_readme_installs() -> None:
    extras = re.search(r"pip install -e '\.\[([a-z,]+)\]'", README).group(1)
    assert "demo" in extras.split(",")
    assert f"pip install -q -e '.[{extras}]'" in (ROOT / ".ci/run").read_text(encoding="utf-8")


def test_every_environment_override_is_documented() -> None:
    for suffix in (*ENV_KEYS, "DSN", "PASSWORD_FILE"):
        assert f"`{ENV_PREFIX}{suffix}`" in README


def test_scrape_snippet_is_the_rendering_of_the_rules_job() -> None:
    block = README.split("<!-- scrape-snippet:start -->\n", 1)[1].split(
        "\n<!-- scrape-snippet:end -->", 1)[0]
    params = render.load_params(ROOT / "prometheus" / "params.yml")
    assert block == f"```yaml\n{render.readme_snippet(params)}```"
