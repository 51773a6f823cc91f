"""Durable state files: written atomically so a crash leaves the old or the new, never half.

The exporter's promise of no lost and no doubled row rests on the read position and the
aggregates built from the rows before it being saved together, in one rename.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


class CheckpointError(Exception):
    """A state file exists but cannot be used; carries the path and what is wrong."""


def write_atomic(path: Path, data: Any) -> None:
    """Write JSON to `path` via a synced temporary file and rename, then sync the directory."""
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = json.dumps(data, separators=(",", ":"), allow_nan=False).encode()
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def read(path: Path) -> Any | None:
    """The saved state, or None when there is none yet."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read state file: {exc.strerror}") from None
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise CheckpointError(
            f"{path}: state file is not valid JSON ({exc}); move it away to start over") from None
