"""The README's first command: the demo serves pgGit metrics and leaves nothing behind."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys

from tests.exporter_fixtures import free_port, parse, scrape, total, wait_for


def accepts(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_demo_serves_live_pggit_metrics_and_ctrl_c_stops_everything() -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "exporter", "demo", "--listen", f"127.0.0.1:{port}",
         "--ops-per-second", "100"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        samples = wait_for(
            lambda: (s := parse(scrape(port)))
            and total(s, "pggit_operation_duration_seconds_count") > 50
            and total(s, "pggit_merges_total") > 0 and s,
            90, what="the demo workload to show up on /metrics")
        assert total(samples, "pggit_up") == 1
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    output = proc.stdout.read().decode()
    db_port = int(re.search(r"workload running on 127\.0\.0\.1:(\d+)/", output).group(1))
    assert "msg=stopped" in output
    assert not accepts(port), "the exporter still listens after Ctrl-C"
    assert not accepts(db_port), "the demo's PostgreSQL still runs after Ctrl-C"
