"""Which configured databases this process reads when N replicas share one config.

Rendezvous hashing: every replica scores every (shard, database name) pair with SHA-256 and a
database belongs to the shard with the highest score. Each replica decides alone, from the
config and its own index, with no coordination, and they all agree: each database is read by
exactly one shard. Changing the number of shards moves only the databases the added or removed
shard wins or loses (about 1/N of them), so few replicas start a database from scratch.
"""

from __future__ import annotations

import hashlib
import re
import socket
from collections.abc import Sequence

_ORDINAL = re.compile(r"-(\d+)$")


def owner(name: str, total: int) -> int:
    """The shard (0 .. total-1) that reads the database called `name`."""
    def score(shard: int) -> bytes:
        return hashlib.sha256(f"{shard}\0{name}".encode()).digest()
    return max(range(total), key=score)


def ordinal(hostname: str | None = None) -> int | None:
    """A StatefulSet pod's ordinal from its host name (`pggit-exporter-2` -> 2), else None."""
    match = _ORDINAL.search(hostname if hostname is not None else socket.gethostname())
    return int(match.group(1)) if match else None


def split(names: Sequence[str], total: int) -> dict[int, list[str]]:
    """Every shard's databases, for check-config and the README."""
    out: dict[int, list[str]] = {i: [] for i in range(total)}
    for name in names:
        out[owner(name, total)].append(name)
    return out
