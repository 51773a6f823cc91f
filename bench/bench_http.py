"""Scrape latency with idle connections open, for this server and the previous one, same run.

Both run as `python -m exporter run` against one database of `--rows` pgGit rows (a
realistic page), first in plain HTTP, then with TLS and basic auth from a web config file.
For each of 0, 50 and 500 idle connections (TCP connected, nothing sent, as a port scanner
or a stuck load balancer leaves them), `--scrapes` scrapes run one after another, each on a
new connection (Prometheus's first scrape, or any scrape through the previous server, which
closed every connection); the new server is also timed on one kept-alive connection, which is
what Prometheus does from the second scrape on. A scrape that takes longer than `--timeout`
counts as failed; three in a row end that case. Resident memory and the thread count of the
process are read from /proc with 500 idle connections open.

The previous server is the tree of commit PREVIOUS, exported with `git archive` into a
temporary directory and run from there.

    python -m bench.bench_http [--rows 100000] [--scrapes 200] [--out bench/results/http.json]
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import http.client
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import bcrypt
import yaml

from bench import common
from exporter.demo.embedded import free_port

PREVIOUS = "2969b66"
ROOT = Path(__file__).resolve().parent.parent
IDLE = (0, 50, 500)
PASSWORD = "bench-scrape-pw"
AUTH = "Basic " + base64.b64encode(f"prometheus:{PASSWORD}".encode()).decode()


def export_previous(into: Path) -> Path:
    tree = into / "previous"
    tree.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", PREVIOUS],
                             check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    return tree


def make_web_config(directory: Path) -> tuple[Path, ssl.SSLContext]:
    cert, key = directory / "server.crt", directory / "server.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1", "-addext",
         "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True)
    web = directory / "web.yml"
    web.write_text(yaml.safe_dump({
        "tls_server_config": {"cert_file": cert.name, "key_file": key.name},
        "basic_auth_users": {"prometheus": bcrypt.hashpw(PASSWORD.encode(),
                                                         bcrypt.gensalt(10)).decode()}}))
    return web, ssl.create_default_context(cafile=str(cert))


class Exporter:
    """One exporter process from `tree`, plain or behind the web config."""

    def __init__(self, tree: Path, dsn: str, workdir: Path, web: Path | None,
                 tls: ssl.SSLContext | None):
        workdir.mkdir(parents=True)
        self.port = free_port()
        self.tls = tls
        data: dict[str, Any] = {
            "listen": f"127.0.0.1:{self.port}", "state_dir": str(workdir / "state"),
            "poll_interval": "1s", "log_format": "json", "log_level": "warning",
            "databases": [{"name": "main", "dsn": dsn, "password_env": common.PASSWORD_ENV}]}
        if web is not None:
            data["web_config_file"] = str(web)
        cfg = workdir / "pggit-exporter.yml"
        cfg.write_text(yaml.safe_dump(data))
        self.log = (workdir / "exporter.log").open("wb")
        env = {**os.environ, "PYTHONPATH": str(tree)}
        self.proc = subprocess.Popen([sys.executable, "-m", "exporter", "run", "--config",
                                      str(cfg)], cwd=tree, env=env, stdout=self.log,
                                     stderr=subprocess.STDOUT)

    def connection(self, timeout: float) -> http.client.HTTPConnection:
        if self.tls is not None:
            return http.client.HTTPSConnection("127.0.0.1", self.port, timeout=timeout,
                                               context=self.tls)
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def get(self, conn: http.client.HTTPConnection, path: str) -> tuple[int, int, bytes]:
        """Status, HTTP version (10 or 11) and body."""
        headers = {"Accept-Encoding": "gzip"}
        if self.tls is not None:
            headers["Authorization"] = AUTH
        conn.request("GET", path, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.version, resp.read()

    def wait_ready(self, timeout: float = 600.0) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"exporter exited with {self.proc.returncode}")
            with contextlib.suppress(OSError, http.client.HTTPException):
                conn = self.connection(5)
                status, version, _ = self.get(conn, "/readyz")
                conn.close()
                if status == 200:
                    return version
            time.sleep(0.1)
        raise TimeoutError("exporter not ready")

    def proc_status(self) -> dict[str, int]:
        out = {}
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "Threads"):
                out[key] = int(value.split()[0])
        return out

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(15)
        self.log.close()


@contextlib.contextmanager
def idle_connections(port: int, n: int) -> Iterator[list[socket.socket]]:
    """`n` connections that never send a byte (fewer if the server stops accepting)."""
    opened: list[socket.socket] = []
    failures = 0
    try:
        for _ in range(n):
            try:
                opened.append(socket.create_connection(("127.0.0.1", port), timeout=3))
            except OSError:
                failures += 1
                if failures == 3:
                    break
        time.sleep(0.5)  # let the server accept (and, for the old one, start threads)
        yield opened
    finally:
        for s in opened:
            s.close()


def scrape_times(exporter: Exporter, scrapes: int, timeout: float,
                 keep_alive: bool) -> dict[str, Any]:
    times: list[float] = []
    failed = in_a_row = 0
    conn = exporter.connection(timeout) if keep_alive else None
    for _ in range(scrapes):
        t = time.perf_counter()
        try:
            c = conn or exporter.connection(timeout)
            status, _, _ = exporter.get(c, "/metrics")
            if conn is None:
                c.close()
            ok = status == 200
        except (OSError, http.client.HTTPException):
            ok = False
            if conn is not None:
                conn.close()
                conn = exporter.connection(timeout)
        if ok:
            times.append((time.perf_counter() - t) * 1000)
            in_a_row = 0
        else:
            failed += 1
            in_a_row += 1
            if in_a_row == 3:
                break
    if conn is not None:
        conn.close()
    out: dict[str, Any] = {"answered": len(times), "failed": failed}
    if times:
        summary = common.summarize(times)
        out.update(median_ms=round(summary["median"], 2), p99_ms=round(summary["p99"], 2))
    return out


def measure(name: str, tree: Path, dsn: str, workdir: Path, web: Path | None,
            tls: ssl.SSLContext | None, scrapes: int, timeout: float,
            keep_alive: bool) -> dict[str, Any]:
    exporter = Exporter(tree, dsn, workdir / name, web, tls)
    try:
        version = exporter.wait_ready()
        result: dict[str, Any] = {"http_version": f"HTTP/{version / 10:.1f}", "idle": {}}
        for n in IDLE:
            with idle_connections(exporter.port, n) as opened:
                case: dict[str, Any] = {"opened": len(opened)}
                case["new_connection"] = scrape_times(exporter, scrapes, timeout, False)
                if keep_alive:
                    case["kept_alive"] = scrape_times(exporter, scrapes, timeout, True)
                status = exporter.proc_status()
                case["rss_mb"] = round(status["VmRSS"] / 1024, 1)
                case["threads"] = status["Threads"]
            result["idle"][str(n)] = case
            print(f"  {name} idle={n}: {case}", flush=True)
        return result
    finally:
        exporter.close()


def run(server: common.BenchServer, rows: int, scrapes: int, timeout: float) -> dict[str, Any]:
    gen = common.database_for(server, rows)
    dsn = server.exporter_dsn(gen.dbname)
    with tempfile.TemporaryDirectory(prefix="pggit-bench-http-") as tmp:
        work = Path(tmp)
        previous = export_previous(work)
        web, tls = make_web_config(work)
        out: dict[str, Any] = {"rows": rows, "scrapes": scrapes, "timeout_s": timeout,
                               "previous": PREVIOUS}
        for mode, web_file, context in (("plain", None, None), ("tls_basic_auth", web, tls)):
            out[mode] = {
                "new": measure(f"new-{mode}", ROOT, dsn, work, web_file, context, scrapes,
                               timeout, True),
                "previous": measure(f"previous-{mode}", previous, dsn, work, web_file,
                                    context, scrapes, timeout, False),
            }
        shutil.rmtree(previous, ignore_errors=True)
    return out


def table(result: dict[str, Any]) -> str:
    """A Markdown table of the result, for the summary and the closing note."""
    lines = ["| mode | server | idle open | scrape median ms | p99 ms | failed | RSS MB | "
             "threads |", "|---|---|---|---|---|---|---|---|"]
    for mode in ("plain", "tls_basic_auth"):
        for server in ("new", "previous"):
            for n, case in result[mode][server]["idle"].items():
                variants = [("new connection", case["new_connection"])]
                if "kept_alive" in case:
                    variants.append(("kept alive", case["kept_alive"]))
                for how, s in variants:
                    lines.append(
                        f"| {mode} | {server}, {how} | {case['opened']}/{n} | "
                        f"{s.get('median_ms', '-')} | {s.get('p99_ms', '-')} | "
                        f"{s['failed']} of {s['answered'] + s['failed']} | {case['rss_mb']} | "
                        f"{case['threads']} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common.add_common_args(parser)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--scrapes", type=int, default=200)
    parser.add_argument("--timeout", type=float, default=5.0)
    args = parser.parse_args()
    with common.server_from_args(args) as server:
        result = run(server, args.rows, args.scrapes, args.timeout)
    result["machine"] = {"cpus": os.cpu_count(), "python": sys.version.split()[0]}
    out = Path(args.out) if args.out else common.RESULTS_DIR / "http.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    out.with_suffix(".md").write_text(table(result) + "\n")
    print(table(result))


if __name__ == "__main__":
    main()
