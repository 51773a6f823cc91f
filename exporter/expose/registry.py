"""The exposition: every source of metrics on one page, rendered at most once per change.

State only changes when a poll publishes, so the page is cached per format and rebuilt at
most once per publish, however often Prometheus (or several of them) scrape. Scrapes that
find the cache stale while another is rebuilding it wait for that render and take its page
rather than render the same page again.

The pgGit data (thousands of series) is written by the direct encoder in `text`; the few
series prometheus_client keeps (the exporter's self-metrics, process and platform metrics)
are rendered by prometheus_client and appended. The two sets of names are disjoint, so each
family appears once, and prometheus_client's OpenMetrics output brings the single `# EOF`.
A client that prefers the protobuf format (Prometheus with native histograms) gets both sets
written by `protobuf`, the only format that carries native histograms.
"""

from __future__ import annotations

import gzip
import sys
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector
from prometheus_client.exposition import choose_encoder
from prometheus_client.openmetrics.exposition import ESCAPING_HEADER_TAG, UNDERSCORES

from exporter import __version__
from exporter.expose import protobuf
from exporter.expose.families import Part, Series
from exporter.expose.protobuf import ProtobufEncoder
from exporter.expose.static_labels import Relabelled
from exporter.expose.text import Encoder, StaticLabels

Source = Callable[[], Iterable[Part]]

GZIP_LEVEL = 1
"""The page is mostly repeated label text: the fastest level already shrinks it about 10x."""


@dataclass
class _Page:
    """The cached page of one format; `lock` makes renders of that format take turns."""

    encoder: Encoder | ProtobufEncoder
    lock: threading.Lock = field(default_factory=threading.Lock)
    generation: int = -1
    body: bytes = b""
    gzipped: bytes | None = None


def _escaping(content_type: str) -> str:
    """The name escaping prometheus_client chose; it names it in the content type."""
    for token in content_type.split(";"):
        key, _, value = token.strip().partition("=")
        if key == ESCAPING_HEADER_TAG:
            return value
    return UNDERSCORES


class Exposition:
    def __init__(self, static_labels: StaticLabels | None = None,
                 common_labels: dict[str, str] | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        self._sources: list[Source] = []
        self._build = Series("pggit_exporter_build_info",
                             {(__version__, sys.version.split()[0]): 1.0})
        self._lock = threading.Lock()
        self._generation = 0
        self._pages: dict[tuple[bool, str] | str, _Page] = {}
        self.relabel(static_labels, common_labels)

    def relabel(self, static_labels: StaticLabels | None,
                common_labels: Mapping[str, str] | None) -> None:
        """Set the databases' static labels and the common ones (`replica`); a reload that
        changes them starts every page afresh."""
        self.static_labels = {db: dict(labels) for db, labels in (static_labels or {}).items()
                              if labels}
        self.common_labels = dict(common_labels or {})
        # Without static labels prometheus_client renders its registry as it always has.
        view: Any = (Relabelled(self.registry, self.static_labels, self.common_labels)
                     if self.static_labels or self.common_labels else self.registry)
        with self._lock:
            self._client_view = view
            self._pages = {}

    def add_source(self, source: Source) -> None:
        self.replace_sources([], [source])

    def replace_sources(self, old: list[Source], new: list[Source]) -> None:
        """Swap sources in one step, so no page shows both (duplicates) or neither (a gap)."""
        with self._lock:
            self._sources = [s for s in self._sources if s not in old] + new
            self._generation += 1

    def parts(self) -> list[Part]:
        """What every source has published, the build info first (also pushed over OTLP)."""
        parts: list[Part] = [self._build]
        for source in list(self._sources):
            parts.extend(source())
        return parts

    def changed(self) -> None:
        """Called after any state a scrape shows has changed."""
        with self._lock:
            self._generation += 1

    def render(self, accept: str | None, compressed: bool = False) -> tuple[bytes, str]:
        """The page for this Accept header, gzip-compressed if asked, and its content type.

        Prometheus always asks for gzip, so the compressed page is kept too: compressing
        costs about as much as rendering, and is also done at most once per change.

        The page is keyed by format and name escaping only: the OpenMetrics versions
        prometheus_client accepts differ in native histograms alone, which only the protobuf
        format carries.
        """
        client_encoder: Callable[[CollectorRegistry], bytes]
        if protobuf.accepts(accept):
            client_encoder, content_type = protobuf.encode_collector, protobuf.CONTENT_TYPE
            key: tuple[bool, str] | str = "protobuf"
        else:
            client_encoder, content_type = choose_encoder(accept or "")
            key = (content_type.startswith("application/openmetrics-text"),
                   _escaping(content_type))
        with self._lock:
            page = self._pages.get(key)
            if page is None:
                page = self._pages[key] = _Page(
                    ProtobufEncoder(self.static_labels, self.common_labels)
                    if isinstance(key, str)
                    else Encoder(*key, self.static_labels, self.common_labels))
        with page.lock:
            with self._lock:
                generation = self._generation
            if page.generation != generation:
                page.body = (page.encoder.encode(self.parts())
                             + client_encoder(self._client_view))
                page.generation, page.gzipped = generation, None
            if not compressed:
                return page.body, content_type
            if page.gzipped is None:
                page.gzipped = gzip.compress(page.body, compresslevel=GZIP_LEVEL)
            return page.gzipped, content_type
