"""The official OTLP span exporter, and the bounded queue and sender thread in front of it.

The SDK's `BatchSpanProcessor` is built for live spans and drops silently when full; here the
spans come from a table with a checkpoint, so the queue must say what it holds (its keys go
into the checkpoint, so a crash re-reads instead of losing them), what it dropped (counted),
and never block the poll thread or a scrape while the endpoint is slow or down.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from exporter.config import OTLP_DEFAULT_PROTOCOL as DEFAULT_PROTOCOL
from exporter.config import OTLP_PROTOCOLS as PROTOCOLS
from exporter.config import TracesConfig
from exporter.send.envelope import Envelope

log = logging.getLogger(__name__)

def signal_protocol(configured: str | None, signal: str, env: Mapping[str, str]) -> str:
    """YAML wins; then the per-signal variable, then the general one (OTel spec order)."""
    value = (configured or env.get(f"OTEL_EXPORTER_OTLP_{signal.upper()}_PROTOCOL")
             or env.get("OTEL_EXPORTER_OTLP_PROTOCOL") or DEFAULT_PROTOCOL).strip()
    if value not in PROTOCOLS:
        raise ValueError(f"{signal}.protocol: {value!r} is not one of {', '.join(PROTOCOLS)}")
    return value


def protocol(cfg: TracesConfig, env: Mapping[str, str]) -> str:
    return signal_protocol(cfg.protocol, "traces", env)


def headers(cfg: TracesConfig) -> dict[str, str] | None:
    """YAML headers plus those read from files (an API key kept out of the YAML).

    None when the YAML sets none, so the SDK reads `OTEL_EXPORTER_OTLP_*HEADERS` itself.
    """
    out = {k.lower(): v for k, v in cfg.headers.items()}
    for name, path in cfg.header_files.items():
        out[name.lower()] = Path(path).read_text(encoding="utf-8").strip()
    return out or None


def http_endpoint(endpoint: str) -> str:
    """A YAML endpoint without a path gets OTLP/HTTP's `/v1/traces`, like the general env var."""
    parts = urlsplit(endpoint)
    if parts.path in ("", "/"):
        return endpoint.rstrip("/") + "/v1/traces"
    return endpoint


def build_exporter(cfg: TracesConfig, env: Mapping[str, str] | None = None, *,
                   envelope: Envelope) -> SpanExporter:
    """The SDK exporter for the configured protocol; unset fields fall to the SDK's env reading.

    It sends batches of encoded spans (`exporter.send.exporters`) inside `envelope`.
    """
    env = os.environ if env is None else env
    proto = protocol(cfg, env)
    hdrs = headers(cfg)
    secs = cfg.timeout  # None: the SDK reads OTEL_EXPORTER_OTLP_*TIMEOUT, else 10 s
    if proto == "grpc":
        import grpc

        from exporter.send.exporters import GrpcBytesExporter

        credentials = None
        if cfg.certificate_file or cfg.client_certificate_file:
            def read(p: Path | None) -> bytes | None:
                return Path(p).read_bytes() if p else None

            credentials = grpc.ssl_channel_credentials(
                read(cfg.certificate_file), read(cfg.client_key_file),
                read(cfg.client_certificate_file))
        compression = None
        if cfg.compression:
            compression = (grpc.Compression.Gzip if cfg.compression == "gzip"
                           else grpc.Compression.NoCompression)
        return GrpcBytesExporter(envelope, endpoint=cfg.endpoint, insecure=cfg.insecure,
                                 credentials=credentials, headers=hdrs, timeout=secs,
                                 compression=compression)
    from opentelemetry.exporter.otlp.proto.http import Compression

    from exporter.send.exporters import HttpBytesExporter

    def path(p: Path | None) -> str | None:
        return str(p) if p else None

    return HttpBytesExporter(
        envelope, endpoint=http_endpoint(cfg.endpoint) if cfg.endpoint else None,
        certificate_file=path(cfg.certificate_file), client_key_file=path(cfg.client_key_file),
        client_certificate_file=path(cfg.client_certificate_file), headers=hdrs, timeout=secs,
        compression=Compression(cfg.compression) if cfg.compression else None)


class Group:
    """Spans that come from one row (a span, or a merge and its phases), sent together.

    A single span may be given as a function that encodes it, called by the sender thread
    when the group is first sent: encoding then runs while the poll thread waits for the
    database, instead of after it.
    """

    __slots__ = ("_encode", "_spans", "key", "size")

    def __init__(self, key: str, spans: Sequence[bytes] = (),
                 encode: Callable[[], bytes] | None = None):
        self.key = key
        self._spans = spans
        self._encode = encode
        self.size = 1 if encode is not None else len(spans)

    def spans(self) -> Sequence[bytes]:
        """Encoded `Span` messages (`exporter.otlp.encode`); encodes once, on first use."""
        if self._encode is not None:
            self._spans, self._encode = (self._encode(),), None
        return self._spans


@dataclass
class SenderStats:
    exported: int = 0
    dropped: int = 0
    failures: int = 0
    healthy: bool = True


class SpanQueue:
    """Bounded by spans (not rows), thread-safe, and able to list what it holds."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self._groups: deque[Group] = deque()
        self._in_flight: list[Group] = []
        self._depth = 0
        lock = threading.Lock()
        self._cond = threading.Condition(lock)  # spans were added
        self._room = threading.Condition(lock)  # spans were sent

    @property
    def depth(self) -> int:
        return self._depth

    def room(self) -> int:
        return max(self.capacity - self._depth, 0)

    def offer(self, group: Group) -> bool:
        """Add unless there is no room for all of the group's spans; never waits."""
        with self._cond:
            if self._depth + group.size > self.capacity:
                return False
            self._groups.append(group)
            self._depth += group.size
            self._cond.notify()
            return True

    def take(self, max_spans: int, wait: float) -> list[Group]:
        """Move up to `max_spans` spans (whole groups) in flight; they count until `done()`."""
        with self._cond:
            if self._in_flight:
                return list(self._in_flight)
            if not self._groups and wait > 0:
                self._cond.wait(wait)
            taken = 0
            while self._groups and (taken == 0 or
                                    taken + self._groups[0].size <= max_spans):
                group = self._groups.popleft()
                self._in_flight.append(group)
                taken += group.size
            return list(self._in_flight)

    def done(self) -> int:
        with self._cond:
            n = sum(g.size for g in self._in_flight)
            self._in_flight.clear()
            self._depth -= n
            self._room.notify_all()
            return n

    def wait_depth(self, depth: int, timeout: float) -> None:
        """Wait until at most `depth` spans are queued (or `wake()`, or the timeout)."""
        with self._cond:
            if self._depth > depth:
                self._room.wait(timeout)

    def take_back(self) -> list[Group]:
        """Remove and return what waits (not what is in flight): the span lease was lost."""
        with self._cond:
            groups = list(self._groups)
            self._groups.clear()
            self._depth -= sum(g.size for g in groups)
            self._room.notify_all()
            return groups

    def keys(self) -> list[str]:
        """What has not been confirmed sent, for the checkpoint."""
        with self._cond:
            return [g.key for g in self._in_flight] + [g.key for g in self._groups]

    def wake(self) -> None:
        with self._cond:
            self._cond.notify_all()
            self._room.notify_all()


class Sender:
    """A thread that exports batches, retrying a failed batch with exponential backoff.

    A batch that fails stays in flight (and so in the checkpoint) while the backoff runs, for
    up to `give_up_after` seconds (`traces.retry_for`); then it is dropped and counted, and the
    next one is tried. Without a limit a batch the endpoint will never take (too large,
    malformed) would block every span behind it for good.
    The SDK exporter's own retries are bounded by its timeout, so `stop()` returns in time.
    """

    def __init__(self, exporter: SpanExporter, queue: SpanQueue, batch_size: int,
                 on_exported: Callable[[int], None], on_failure: Callable[[str], None],
                 on_dropped: Callable[[int], None], give_up_after: float,
                 backoff_initial: float = 0.5, backoff_max: float = 30.0,
                 on_sent: Callable[[list[Group]], None] | None = None,
                 may_send: Callable[[], bool] | None = None):
        self.exporter = exporter
        self.on_sent = on_sent
        self.may_send = may_send
        self.queue = queue
        self.batch_size = batch_size
        self.on_exported = on_exported
        self.on_failure = on_failure
        self.on_dropped = on_dropped
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.give_up_after = give_up_after
        self._failing_since: float | None = None
        self.stats = SenderStats()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="pggit-otlp-sender", daemon=True)
        self._thread.start()

    def _export(self, groups: list[Group]) -> bool:
        try:
            result = self.exporter.export([s for g in groups for s in g.spans()])
        except Exception as exc:  # the SDK logs and returns FAILURE; a bug must not kill us
            log.warning("span export raised: %s", exc)
            return False
        return result == SpanExportResult.SUCCESS

    def send_once(self, wait: float = 0.0) -> bool | None:
        """Try the next batch once; None when there was nothing to send (or sending is
        not this exporter's turn: `may_send`, the span lease)."""
        if self.may_send is not None and not self.may_send():
            self._stop.wait(wait)
            return None
        groups = self.queue.take(self.batch_size, wait)
        if not groups:
            return None
        if self._export(groups):
            self._failing_since = None
            if self.on_sent is not None:
                self.on_sent(groups)
            n = self.queue.done()
            self.stats.exported += n
            self.stats.healthy = True
            self.on_exported(n)
            return True
        self.stats.failures += 1
        self.stats.healthy = False
        size = sum(g.size for g in groups)
        now = time.monotonic()
        if self._failing_since is None:
            self._failing_since = now
        if now - self._failing_since < self.give_up_after:
            self.on_failure(f"export of {size} spans failed")
            return False
        self._failing_since = None
        self.queue.done()
        self.stats.dropped += size
        self.on_dropped(size)
        self.on_failure(f"export of {size} spans failed for {self.give_up_after:g} s; "
                        "dropped")
        return False

    def _run(self) -> None:
        backoff = self.backoff_initial
        while not self._stop.is_set():
            ok = self.send_once(wait=0.2)
            if ok is False:
                self._stop.wait(backoff)
                backoff = min(backoff * 2, self.backoff_max)
            elif ok:
                backoff = self.backoff_initial

    def drain(self, deadline: float) -> None:
        """Stop the thread, then send what is queued while the endpoint answers and time is left."""
        self._stop.set()
        self.queue.wake()
        if self._thread is not None:
            self._thread.join(max(deadline - time.monotonic(), 0.1))
            if self._thread.is_alive():
                return
        while time.monotonic() < deadline and self.queue.depth and self.stats.healthy:
            if not self.send_once():
                break
        try:
            self.exporter.shutdown()
        except Exception as exc:
            log.debug("exporter shutdown: %s", exc)
