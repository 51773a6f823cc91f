"""Scrape latency with idle connections open, for this server and the previous one, same run.

Both run as `python -m exporter run` against one database of `--rows` pgGit rows (a
realistic page), first in plain HTTP, then with TLS and basic auth from a web config file.
Both processes run at once. For each of 0, 50 and 500 idle connections to each (TCP
connected, nothing sent, as a port scanner or a stuck load balancer leaves them), `--scrapes`
rounds run, each scraping every variant once in turn (so the load of a shared machine falls
on both servers alike): each server on a new connection (Prometheus's first scrape, or any
scrape through the previous server, which closed every connection), and the new server also
on one kept-alive connection, which is what Prometheus does from the second scrape on. A
scrape that takes longer than `--timeout` counts as failed; three in a row end that variant.
Resident memory and the thread count of each process are read from /proc with the idle
connections open.

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
SETTINGS = {"new": {"web_read_timeout": "10m", "web_tls_handshake_timeout": "10m"}}
"""The idle clients must stay for the whole case; by default the new server closes them
after 10 s of silence."""
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
                 tls: ssl.SSLContext | None, settings: dict[str, Any]):
        workdir.mkdir(parents=True)
        self.port = free_port()
        self.tls = tls
        data: dict[str, Any] = {
            "listen": f"127.0.0.1:{self.port}", "state_dir": str(workdir / "state"),
            "poll_interval": "1s", "log_format": "json", "log_level": "warning",
            "databases": [{"name": "main", "dsn": dsn, "password_env": common.PASSWORD_ENV}]}
        if web is not None:
            data["web_config_file"] = str(web)
        data.update(settings)
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


class Variant:
    """One way of scraping one server; scrapes of all variants alternate, so load on the
    shared machine falls on each alike."""

    def __init__(self, exporter: Exporter, timeout: float, keep_alive: bool):
        self.exporter = exporter
        self.timeout = timeout
        self.keep_alive = keep_alive
        self.conn: http.client.HTTPConnection | None = None
        self.times: list[float] = []
        self.failed = self.in_a_row = 0

    @property
    def given_up(self) -> bool:
        return self.in_a_row >= 3

    def scrape(self) -> None:
        t = time.perf_counter()
        try:
            if self.conn is None:
                self.conn = self.exporter.connection(self.timeout)
            status, _, _ = self.exporter.get(self.conn, "/metrics")
            ok = status == 200
        except (OSError, http.client.HTTPException):
            ok = False
        if not ok or not self.keep_alive:
            self.close()
        if ok:
            self.times.append((time.perf_counter() - t) * 1000)
            self.in_a_row = 0
        else:
            self.failed += 1
            self.in_a_row += 1

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def result(self) -> dict[str, Any]:
        self.close()
        out: dict[str, Any] = {"answered": len(self.times), "failed": self.failed}
        if self.times:
            summary = common.summarize(self.times)
            out.update(median_ms=round(summary["median"], 2), p99_ms=round(summary["p99"], 2))
        return out


def measure(trees: dict[str, Path], dsn: str, workdir: Path, web: Path | None,
            tls: ssl.SSLContext | None, scrapes: int, timeout: float) -> dict[str, Any]:
    """Both servers at once; for each idle count, their scrapes alternate."""
    exporters = {name: Exporter(tree, dsn, workdir / name, web, tls, SETTINGS.get(name, {}))
                 for name, tree in trees.items()}
    try:
        result: dict[str, Any] = {
            name: {"http_version": f"HTTP/{e.wait_ready() / 10:.1f}", "idle": {}}
            for name, e in exporters.items()}
        for n in IDLE:
            with contextlib.ExitStack() as stack:
                opened = {name: stack.enter_context(idle_connections(e.port, n))
                          for name, e in exporters.items()}
                statuses = {name: e.proc_status() for name, e in exporters.items()}
                variants = {(name, "new_connection"): Variant(e, timeout, False)
                            for name, e in exporters.items()}
                variants[("new", "kept_alive")] = Variant(exporters["new"], timeout, True)
                for _ in range(scrapes):
                    for variant in variants.values():
                        if not variant.given_up:
                            variant.scrape()
                for name, status in statuses.items():
                    case: dict[str, Any] = {"opened": len(opened[name]),
                                            "rss_mb": round(status["VmRSS"] / 1024, 1),
                                            "threads": status["Threads"]}
                    for (server, how), variant in variants.items():
                        if server == name:
                            case[how] = variant.result()
                    result[name]["idle"][str(n)] = case
                    print(f"  {name} idle={n}: {case}", flush=True)
        return result
    finally:
        for e in exporters.values():
            e.close()


def run(server: common.BenchServer, rows: int, scrapes: int, timeout: float) -> dict[str, Any]:
    gen = common.database_for(server, rows)
    dsn = server.exporter_dsn(gen.dbname)
    with tempfile.TemporaryDirectory(prefix="pggit-bench-http-") as tmp:
        work = Path(tmp)
        trees = {"new": ROOT, "previous": export_previous(work)}
        web, tls = make_web_config(work)
        out: dict[str, Any] = {"rows": rows, "scrapes": scrapes, "timeout_s": timeout,
                               "previous": PREVIOUS}
        for mode, web_file, context in (("plain", None, None), ("tls_basic_auth", web, tls)):
            print(f"== {mode}", flush=True)
            out[mode] = measure(trees, dsn, work / mode, web_file, context, scrapes, timeout)
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
