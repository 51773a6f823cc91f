"""Grafana dashboards generated from the metric catalog, so the two cannot drift apart.

`python -m exporter.dashboards --out grafana/dashboards` rewrites the committed JSON (and
the native-histogram variant in grafana/dashboards-native); a test fails when the committed
files differ from what the code renders.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from exporter.dashboards.boards import render_all
from exporter.dashboards.native import native_variant

__all__ = ["dump", "render_all", "render_native", "write_all"]


def dump(dashboard: dict[str, Any]) -> str:
    """The committed form: stable key order and indentation so diffs stay reviewable."""
    return json.dumps(dashboard, indent=2, ensure_ascii=False) + "\n"


def render_native() -> dict[str, dict[str, Any]]:
    """Every dashboard over native histograms (exporter.dashboards.native)."""
    return {name: native_variant(d) for name, d in render_all().items()}


def write_all(out: Path, native: bool = False) -> list[Path]:
    """Write every dashboard as `<out>/<name>.json`, removing stale pggit-*.json files."""
    out.mkdir(parents=True, exist_ok=True)
    rendered = render_native() if native else render_all()
    for stale in out.glob("pggit-*.json"):
        if stale.stem not in rendered:
            stale.unlink()
    written = []
    for name, dashboard in rendered.items():
        path = out / f"{name}.json"
        path.write_text(dump(dashboard), encoding="utf-8")
        written.append(path)
    return written
