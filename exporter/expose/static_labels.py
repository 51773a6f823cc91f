"""A database's static labels (`databases[].labels`) on the series prometheus_client renders.

The direct encoder adds them when it builds a series' start (`text.Encoder`); the
self-metrics (pggit_up, rows read, poll duration, ...) come from prometheus_client's
registry, and this view adds them there: every sample with a `database` label gets that
database's labels, and every sample gets the common ones (`replica`). prometheus_client's
encoders only call `collect()` on what they render.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric


class Relabelled:
    """`registry` as seen through `static_labels` (database name -> labels)."""

    def __init__(self, registry: CollectorRegistry,
                 static_labels: Mapping[str, Mapping[str, str]],
                 common_labels: Mapping[str, str] | None = None):
        self.registry = registry
        self.static_labels = static_labels
        self.common_labels = dict(common_labels or {})

    def collect(self) -> Iterator[Metric]:
        for family in self.registry.collect():
            samples = []
            for sample in family.samples:
                extra = self.static_labels.get(sample.labels.get("database", ""))
                if extra or self.common_labels:
                    sample = sample._replace(
                        labels={**sample.labels, **(extra or {}), **self.common_labels})
                samples.append(sample)
            family = copy.copy(family)
            family.samples = samples
            yield family
