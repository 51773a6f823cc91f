"""The exposition: every source of metrics merged into one registry, rendered once per change.

State only changes when a poll publishes, so the text of `/metrics` is cached per format and
rebuilt at most once per publish, however often Prometheus (or several of them) scrape.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterable, Iterator

from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder

from exporter import __version__
from exporter.catalog import metric

Source = Callable[[], Iterable[Metric]]


def merge_families(families: Iterable[Metric]) -> list[Metric]:
    """One family per name: several databases each contribute samples to the same family."""
    merged: dict[str, Metric] = {}
    for family in families:
        first = merged.get(family.name)
        if first is None:
            merged[family.name] = family
        else:
            first.samples.extend(family.samples)
    return list(merged.values())


class _Sources:
    """A prometheus_client collector that asks each registered source at collect time."""

    def __init__(self) -> None:
        self.sources: list[Source] = []

    def collect(self) -> Iterator[Metric]:
        spec = metric("pggit_exporter_build_info")
        build = GaugeMetricFamily(spec.name, spec.help, labels=spec.all_labels)
        build.add_metric([__version__, sys.version.split()[0]], 1)
        families: list[Metric] = [build]
        for source in list(self.sources):
            families.extend(source())
        yield from merge_families(families)


class Exposition:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self._sources = _Sources()
        self.registry.register(self._sources)
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        self._lock = threading.Lock()
        self._generation = 0
        self._cache: dict[str, tuple[int, bytes]] = {}

    def add_source(self, source: Source) -> None:
        self._sources.sources.append(source)
        self.changed()

    def changed(self) -> None:
        """Called after any state a scrape shows has changed."""
        with self._lock:
            self._generation += 1

    def render(self, accept: str | None) -> tuple[bytes, str]:
        """The page for this Accept header, and its content type."""
        encoder, content_type = choose_encoder(accept or "")
        with self._lock:
            generation = self._generation
            cached = self._cache.get(content_type)
            if cached is not None and cached[0] == generation:
                return cached[1], content_type
        body = encoder(self.registry)
        with self._lock:
            self._cache[content_type] = (generation, body)
        return body, content_type
