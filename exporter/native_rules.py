"""PromQL over native histograms, for Prometheus run with `--enable-feature=native-histograms`.

Such a Prometheus (2.42 and later without `scrape_classic_histograms`) ingests each of the
three duration histograms as one native series per label set: its `_bucket`, `_count` and
`_sum` series no longer exist. Every rule and dashboard query that reads them is therefore
rewritten by `to_native`, one function for the rules (`pggit-exporter render` with
`native_histograms: true` in prometheus/params.yml) and the dashboards
(grafana/dashboards-native/), so the two variants cannot disagree:

- `histogram_quantile(q, sum by (..., le) (rate(M_bucket{...}[w])))` drops `le` and
  `_bucket`: the quantile is read from the native buckets;
- `rate|increase(M_count{...}[w])` becomes `histogram_count(rate|increase(M{...}[w]))`, and
  `_sum` likewise with `histogram_sum`; a bare `M_count{...}` becomes `histogram_count(M{...})`;
- `min_over_time(M_count{...}[w])` (any `*_over_time`) becomes a subquery,
  `min_over_time(histogram_count(M{...})[w:])`, since 2.42 has no range functions over
  native histograms other than rate and increase;
- `label_values(M_count{...}, label)` reads the labels of `M` itself.

The recording rules keep their names, so alerts and dashboards that read recorded quantiles
work unchanged on either variant; `native_recording_group` adds the quantiles the issue
asks for per operation (p50, p90, p99) that the classic parameters do not record.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from typing import Any

HISTOGRAMS = ("pggit_operation_duration_seconds", "pggit_merge_duration_seconds",
              "pggit_span_duration_seconds")
NATIVE_QUANTILES = (0.5, 0.9, 0.99)
_NAMES = "|".join(HISTOGRAMS)
_SELECTOR = r"(?:\{[^{}]*\})?"
_RANGE = r"\[[^\]]*\](?:\s+offset\s+[-\w$]+)?"
_OVER_RANGE = re.compile(
    rf"\b(rate|increase|irate)\(\s*({_NAMES})_(count|sum)({_SELECTOR})({_RANGE})\s*\)")
_OVER_TIME = re.compile(
    rf"\b(\w+_over_time)\(\s*({_NAMES})_(count|sum)({_SELECTOR})\[([^\]:]*)\]\s*\)")
_LABEL_VALUES = re.compile(rf"\blabel_values\(\s*({_NAMES})_count\b")
_BARE_COUNT = re.compile(rf"\b({_NAMES})_(count|sum)({_SELECTOR})(\s+offset\s+[-\w$]+)?")
_BUCKET = re.compile(rf"\b({_NAMES})_bucket\b")
_BY_LE_ONLY = re.compile(r"\bby\s*\(\s*le\s*\)\s*")
_LE_LAST = re.compile(r",\s*le\s*\)")
_LE_FIRST = re.compile(r"\(\s*le\s*,\s*")
_OTHER_BUCKETS = re.compile(r"\b(\w+)_bucket\b")


def to_native(expr: str) -> str:
    """The same query over native histograms (see the module docstring for the forms)."""
    out = _LABEL_VALUES.sub(r"label_values(\1", expr)
    out = _OVER_RANGE.sub(lambda m: f"histogram_{m[3]}({m[1]}({m[2]}{m[4]}{m[5]}))", out)
    out = _OVER_TIME.sub(
        lambda m: f"{m[1]}(histogram_{m[3]}({m[2]}{m[4]})[{m[5]}:])", out)
    out = _BARE_COUNT.sub(lambda m: f"histogram_{m[2]}({m[1]}{m[3]}{m[4] or ''})", out)
    if _BUCKET.search(out):
        if any(name not in HISTOGRAMS for name in _OTHER_BUCKETS.findall(out)):
            raise ValueError(f"mixes native and classic buckets, cannot rewrite: {expr}")
        out = _BUCKET.sub(r"\1", out)
        out = _BY_LE_ONLY.sub("", out)
        out = _LE_LAST.sub(")", out)
        out = _LE_FIRST.sub("(", out)
    return out


def native_groups(params: Mapping[str, Any], groups: list[dict[str, Any]]
                  ) -> list[dict[str, Any]]:
    """The rule groups as given, or, with `native_histograms: true`, every expression over
    the duration histograms rewritten and the native quantile group added."""
    if not params.get("native_histograms"):
        return groups
    out = copy.deepcopy(groups)
    for group in out:
        for rule in group["rules"]:
            rule["expr"] = to_native(rule["expr"])
    if any(r.get("record") for g in out for r in g["rules"]):
        recorded = {r["record"] for g in out for r in g["rules"] if "record" in r}
        extra = native_recording_group(params, recorded)
        if extra["rules"]:
            out.append(extra)
    return out


def native_recording_group(params: Mapping[str, Any], recorded: set[str]) -> dict[str, Any]:
    """p50, p90 and p99 per operation type and window from the native histograms, for the
    quantiles the parameters do not already record."""
    parts = [f'job="{params["job"]}"'] + ([params["selector"]] if params["selector"] else [])
    selector = ",".join(parts)
    by = "job, database, operation_type"
    rules = []
    for window in params["recording"]["windows"]:
        for q in NATIVE_QUANTILES:
            name = (f"operation_type:pggit_operation_duration_seconds:"
                    f"p{round(q * 100)}_{window}")
            if name in recorded:
                continue
            rules.append({"record": name, "expr": (
                f"histogram_quantile({q}, sum by ({by}) "
                f"(rate(pggit_operation_duration_seconds{{{selector}}}[{window}])))")})
    return {"name": "pggit-native.rules", "rules": rules}
