"""kill -9 at random moments: every span arrives, resends carry identical ids, counts exact."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psycopg
import pytest

from tests.otlp_receiver import Receiver
from tests.pg_fixtures import create_select_only_role
from tests.test_traces_trees import end_span, start_span

ROOT = Path(__file__).resolve().parent.parent
KILLS = 8


def child(dsn: str, state_dir: Path, receiver: Receiver) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "tests.otlp_receiver", dsn, str(state_dir),
                             receiver.grpc_endpoint], cwd=ROOT, env=env)


def write_trees(dsn: str, n: int) -> list[str]:
    """n trees of depth 3, each span ended; returns every span id."""
    span_ids = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        for _ in range(n):
            chain = [str(uuid.uuid4()) for _ in range(3)]
            for i, s in enumerate(chain):
                start_span(conn, s, chain[i - 1] if i else None)
            for s in reversed(chain):
                end_span(conn, s)
            span_ids += chain
    return span_ids


@pytest.mark.parametrize("role", ["superuser", "select_only"])
def test_kill_9_at_random_points_loses_no_span_and_keeps_counts_exact(
        pggit_dsn: str, tmp_path: Path, role: str) -> None:
    """Both read paths: pg_stat_activity's bound (superuser) and SELECT-only."""
    reader_dsn = pggit_dsn
    if role == "select_only":
        reader_dsn = create_select_only_role(pggit_dsn, f"crash_{uuid.uuid4().hex[:8]}", "pw")
    receiver = Receiver()
    receiver.start()
    rng = random.Random(20261122)
    expected: list[str] = []
    try:
        for _ in range(KILLS):
            expected += write_trees(pggit_dsn, 10)
            proc = child(reader_dsn, tmp_path, receiver)
            time.sleep(rng.uniform(0.3, 1.5))
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
        proc = child(reader_dsn, tmp_path, receiver)
        deadline = time.monotonic() + 60
        while (set(expected) - set(receiver.by_pggit_span_id())
               and time.monotonic() < deadline):
            time.sleep(0.2)
        time.sleep(1.0)  # one more poll interval, so the last sends are checkpointed
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
    finally:
        receiver.stop()

    by_id = receiver.by_pggit_span_id()
    assert set(by_id) == set(expected)
    for copies in by_id.values():
        assert len({(c.trace_id, c.span_id, c.parent_span_id) for c in copies}) == 1
    state = json.loads((tmp_path / "main.json").read_text())["traces"]
    cells = state["aggregates"]["histograms"]["pggit_span_duration_seconds"]
    assert sum(sum(cell[:-1]) for _, cell in cells) == len(expected)
    assert state["unsent"] == []
