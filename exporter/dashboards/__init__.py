"""Grafana dashboards generated from the metric catalog, so the two cannot drift apart.

`python -m exporter.dashboards --out grafana/dashboards` rewrites the committed JSON; a test
fails when the committed files differ from what the code renders.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from exporter.dashboards.boards import render_all

__all__ = ["dump", "render_all", "write_all"]


def dump(dashboard: dict[str, Any]) -> str:
    """The committed form: stable key order and indentation so diffs stay reviewable."""
    return json.dumps(dashboard, indent=2, ensure_ascii=False) + "\n"


def write_all(out: Path) -> list[Path]:
    """Write every dashboard as `<out>/<name>.json`, removing stale pggit-*.json files."""
    out.mkdir(parents=True, exist_ok=True)
    rendered = render_all()
    for stale in out.glob("pggit-*.json"):
        if stale.stem not in rendered:
            stale.unlink()
    written = []
    for name, dashboard in rendered.items():
        path = out / f"{name}.json"
        path.write_text(dump(dashboard), encoding="utf-8")
        written.append(path)
    return written
