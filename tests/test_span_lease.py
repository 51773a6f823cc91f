"""The span lease: two exporter processes on one database send each span once, and the
standby takes over from a holder killed with SIGKILL; the killed one, restarted from an older
checkpoint, takes over in turn when the second holder is killed.

Spans are written all along, so the kills land while spans are read, queued and sent.
Takeover time and repeated spans are measured and printed (`-s`), never asserted as wall time."""

from __future__ import annotations

import threading
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from exporter.demo.embedded import EmbeddedPostgres
from tests.exporter_fixtures import ExporterProcess, total, wait_for, write_config
from tests.otlp_receiver import Receiver
from tests.pg_fixtures import create_select_only_role, wait_replayed
from tests.test_traces_trees import end_span, start_span

BATCH = 20


class Writer(threading.Thread):
    """Trees of three spans, ended, one every few milliseconds until stopped."""

    def __init__(self, dsn: str):
        super().__init__(daemon=True)
        self.dsn = dsn
        self.ids: list[str] = []
        self.written_at: list[float] = []
        self.halt = threading.Event()

    def since(self, t: float) -> int:
        """Spans committed at or after `t` (Unix seconds)."""
        return 3 * sum(1 for w in self.written_at if w >= t)

    def run(self) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            while not self.halt.is_set():
                chain = [str(uuid.uuid4()) for _ in range(3)]
                for i, s in enumerate(chain):
                    start_span(conn, s, chain[i - 1] if i else None)
                for s in reversed(chain):
                    end_span(conn, s)
                self.ids += chain
                self.written_at.append(time.time())
                time.sleep(0.005)


def start(tmp_path: Path, name: str, dsn: str, receiver: Receiver,
          **traces: Any) -> ExporterProcess:
    state = tmp_path / name
    state.mkdir(exist_ok=True)
    params = conninfo_to_dict(dsn)
    password = str(params.pop("password"))
    cfg = write_config(tmp_path / f"{name}.yaml", make_conninfo(**params), state,
                       traces={"endpoint": receiver.grpc_endpoint, "protocol": "grpc",
                               "insecure": True, "batch_size": BATCH, **traces},
                       database={"password_env": "PGGIT_LEASE_TEST_PASSWORD"})
    return ExporterProcess(cfg, env={"PGGIT_LEASE_TEST_PASSWORD": password})


def held(exporter: ExporterProcess) -> float:
    return total(exporter.samples(), "pggit_exporter_span_lease_held", database="main")


def acquired_at(exporter: ExporterProcess) -> float:
    """When the process last logged taking the lease (Unix seconds): the takeover itself,
    without the delay until /metrics shows it."""
    lines = [line for line in exporter.cfg_path.with_suffix(".log").read_text().splitlines()
             if "span lease acquired" in line]
    stamp = lines[-1].split()[0].removeprefix("ts=")
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def copies(receiver: Receiver) -> dict[str, int]:
    return {k: len(v) for k, v in receiver.by_pggit_span_id().items()}


def repeats(got: dict[str, int]) -> int:
    return sum(n - 1 for n in got.values() if n > 1)


def test_two_exporters_send_each_span_once_and_the_standby_takes_over_after_kill_9(
        pggit_dsn: str, tmp_path: Path) -> None:
    reader = create_select_only_role(pggit_dsn, f"lease_{uuid.uuid4().hex[:8]}", "pw")
    receiver = Receiver()
    receiver.start()
    writer = Writer(pggit_dsn)
    exporters: list[ExporterProcess] = []
    try:
        exporters += [start(tmp_path, name, reader, receiver) for name in ("a", "b")]
        wait_for(lambda: sum(held(e) for e in exporters) == 1, 30, what="one lease holder")
        writer.start()
        time.sleep(3)
        # Phase 1: both up. Every span written so far arrives exactly once.
        before = list(writer.ids)
        wait_for(lambda: set(before) <= set(copies(receiver)), 30, what="spans before kill")
        assert sum(held(e) for e in exporters) == 1
        assert {k: n for k, n in copies(receiver).items() if n > 1} == {}

        holder = next(e for e in exporters if held(e) == 1)
        standby = next(e for e in exporters if e is not holder)
        killed_at = time.time()
        holder.kill9()
        wait_for(lambda: held(standby) == 1, 60, interval=0.02, what="takeover")
        shown = time.time() - killed_at
        takeover = acquired_at(standby) - killed_at

        # Phase 2: the killed one comes back as the standby, with a checkpoint older than
        # what it had sent: the new holder's answer to its `sync` tells it what was sent.
        restarted = start(tmp_path, "a" if holder is exporters[0] else "b", reader, receiver)
        exporters.append(restarted)
        time.sleep(3)
        assert held(standby) == 1 and held(restarted) == 0

        # Phase 3: the second holder is killed too; the restarted one takes over.
        first_repeats = repeats(copies(receiver))
        second_kill = time.time()
        standby.kill9()
        wait_for(lambda: held(restarted) == 1, 60, interval=0.02, what="second takeover")
        second_takeover = acquired_at(restarted) - second_kill
        time.sleep(2)
        writer.halt.set()
        writer.join(10)
        wait_for(lambda: set(writer.ids) <= set(copies(receiver)), 60, what="every span")
        time.sleep(2)  # a few more polls: anything sent twice would have arrived by now
        got = copies(receiver)
    finally:
        writer.halt.set()
        for e in reversed(exporters):
            e.close()
        receiver.stop()

    repeated = {k: n for k, n in got.items() if n > 1}
    print(f"\nspans written {len(writer.ids)}, received {sum(got.values())}, "
          f"repeated {repeats(got)} ({first_repeats} at the first takeover), "
          f"takeover {takeover:.3f} s "
          f"(on /metrics after {shown:.3f} s), second takeover {second_takeover:.3f} s")
    if repeated:
        # Which spans repeated (when written, against the kill) and what the processes
        # logged: the first thing to read when this bound is ever exceeded.
        at = dict(zip(writer.ids, (t for t in writer.written_at for _ in range(3)), strict=True))
        print("repeated spans written at (s after the kill):",
              sorted(round(at[k] - killed_at, 3) for k in repeated if k in at))
        for e in exporters:
            for line in e.cfg_path.with_suffix(".log").read_text().splitlines():
                if "level=warning" in line or "level=error" in line or "lease" in line:
                    print(e.cfg_path.name, line)
    assert set(writer.ids) <= set(got)
    # The bound at each takeover: what the dead holder had sent but not yet announced.
    assert first_repeats <= BATCH
    assert repeats(got) - first_repeats <= BATCH
    assert all(n == 2 for n in repeated.values())


def test_a_restarted_standby_hands_over_what_it_read_before_its_restart(
        pggit_dsn: str, tmp_path: Path) -> None:
    """The hand-over state is checkpointed: the endpoint refuses (so the holder sends and
    announces nothing) while the standby reads spans, is killed and restarted; then the
    holder is killed. The spans read before the standby's restart exist only in its
    checkpoint (its read position is past them), and must all arrive once the endpoint is
    back."""
    reader = create_select_only_role(pggit_dsn, f"lease_{uuid.uuid4().hex[:8]}", "pw")
    receiver = Receiver()
    receiver.start()
    writer = Writer(pggit_dsn)
    exporters: dict[str, ExporterProcess] = {}
    try:
        exporters = {name: start(tmp_path, name, reader, receiver) for name in ("a", "b")}
        wait_for(lambda: sum(held(e) for e in exporters.values()) == 1, 30,
                 what="one lease holder")
        holder_name = next(n for n, e in exporters.items() if held(e) == 1)
        standby_name = "b" if holder_name == "a" else "a"
        writer.start()
        time.sleep(2)
        receiver.refuse = True
        time.sleep(2)
        read_while_down = len(writer.ids)
        exporters[standby_name].kill9()
        exporters[standby_name] = start(tmp_path, standby_name, reader, receiver)
        time.sleep(2)
        killed_at = time.time()
        exporters[holder_name].kill9()
        standby = exporters[standby_name]
        wait_for(lambda: held(standby) == 1, 60, interval=0.02, what="takeover")
        shown = time.time() - killed_at
        takeover = acquired_at(standby) - killed_at
        receiver.refuse = False
        exporters[holder_name] = start(tmp_path, holder_name, reader, receiver)
        time.sleep(2)
        writer.halt.set()
        writer.join(10)
        wait_for(lambda: set(writer.ids) <= set(copies(receiver)), 90, what="every span")
        time.sleep(2)  # a few more polls: anything sent twice would have arrived by now
        assert held(standby) == 1 and held(exporters[holder_name]) == 0
    finally:
        writer.halt.set()
        for e in exporters.values():
            e.close()
        receiver.stop()

    got = copies(receiver)
    repeated = {k: n for k, n in got.items() if n > 1}
    print(f"\nspans written {len(writer.ids)} ({read_while_down} before the standby's "
          f"restart), received {sum(got.values())}, repeated "
          f"{sum(n - 1 for n in repeated.values())}, takeover {takeover:.3f} s (on /metrics "
          f"after {shown:.3f} s)")
    assert set(writer.ids) <= set(got)
    assert sum(n - 1 for n in repeated.values()) <= BATCH
    assert all(n == 2 for n in repeated.values())


HOT_QUEUE = 600
"""queue_size on the hot standby: a takeover there repeats at most half of it, plus what the
old holder had sent but the new one not read yet."""
LEAD = 1.0
"""Seconds (five polls) the old holder is allowed to have read ahead of the standby."""


def test_on_a_hot_standby_one_exporter_sends_and_a_takeover_loses_nothing(
        pggit_dsn: str, pg_replica: EmbeddedPostgres, tmp_path: Path) -> None:
    """A server in recovery refuses LISTEN and NOTIFY, so nothing is announced: the lease
    still elects one sender, and the new holder sends every candidate it holds (the last
    half a queue of spans it read), which repeats some of what the old holder sent but loses
    nothing the old holder had not sent. Spans the old holder had sent before the standby
    read them are sent again too: the old holder's lead, counted as what was written in the
    last `LEAD` seconds before the kill."""
    reader = create_select_only_role(pggit_dsn, f"lease_{uuid.uuid4().hex[:8]}", "pw")
    dbname = conninfo_to_dict(pggit_dsn)["dbname"]
    on_replica = make_conninfo(reader, port=pg_replica.port)
    wait_replayed(pggit_dsn, pg_replica.dsn(dbname=str(dbname)))
    receiver = Receiver()
    receiver.start()
    writer = Writer(pggit_dsn)  # on the primary
    exporters: list[ExporterProcess] = []
    try:
        exporters += [start(tmp_path, name, on_replica, receiver, queue_size=HOT_QUEUE)
                      for name in ("a", "b")]
        wait_for(lambda: sum(held(e) for e in exporters) == 1, 30, what="one lease holder")
        writer.start()
        time.sleep(3)
        before = list(writer.ids)
        wait_for(lambda: set(before) <= set(copies(receiver)), 30, what="spans before kill")
        assert {k: n for k, n in copies(receiver).items() if n > 1} == {}

        holder = next(e for e in exporters if held(e) == 1)
        standby = next(e for e in exporters if e is not holder)
        killed_at = time.time()
        holder.kill9()
        lead = writer.since(killed_at - LEAD)
        wait_for(lambda: held(standby) == 1, 60, interval=0.02, what="takeover")
        takeover = acquired_at(standby) - killed_at
        time.sleep(2)
        writer.halt.set()
        writer.join(10)
        wait_for(lambda: set(writer.ids) <= set(copies(receiver)), 60, what="every span")
        time.sleep(2)
        logs = standby.cfg_path.with_suffix(".log").read_text()
    finally:
        writer.halt.set()
        for e in exporters:
            e.close()
        receiver.stop()

    got = copies(receiver)
    repeated = {k: n for k, n in got.items() if n > 1}
    print(f"\nhot standby: spans written {len(writer.ids)}, received {sum(got.values())}, "
          f"repeated {sum(n - 1 for n in repeated.values())}, takeover {takeover:.3f} s, "
          f"written in the last {LEAD} s before the kill {lead}")
    assert "LISTEN refused" in logs and "without hand-over" in logs
    assert set(writer.ids) <= set(got)
    assert sum(n - 1 for n in repeated.values()) <= HOT_QUEUE // 2 + lead
    assert all(n == 2 for n in repeated.values())
