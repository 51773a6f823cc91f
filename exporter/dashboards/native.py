"""The dashboards for a Prometheus that ingests native histograms (grafana/dashboards-native/).

Same boards, panels and layout as grafana/dashboards/; every query over the duration
histograms is rewritten by `exporter.native_rules.to_native`, the function that rewrites the
rules, so a dashboard and the rules it sits beside read the histograms the same way. The
heatmaps then show native buckets (Grafana 10 or later draws native histograms). Uids, titles
and links between boards get a `-native` suffix so both sets can be imported side by side.
"""

from __future__ import annotations

import copy
import re
from typing import Any

from exporter.native_rules import to_native

SUFFIX = "-native"
_LINK = re.compile(r"/d/(pggit-[a-z-]+)\?")


def native_variant(dashboard: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(dashboard)
    out["uid"] += SUFFIX
    out["title"] += " (native histograms)"
    _rewrite(out)
    return out


def _rewrite(node: Any) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("expr", "definition") and isinstance(value, str):
                node[key] = to_native(value)
            elif key == "query" and isinstance(value, dict) and isinstance(
                    value.get("query"), str):
                value["query"] = to_native(value["query"])
            elif key == "url" and isinstance(value, str):
                node[key] = _LINK.sub(rf"/d/\1{SUFFIX}?", value)
            else:
                _rewrite(value)
    elif isinstance(node, list):
        for item in node:
            _rewrite(item)
