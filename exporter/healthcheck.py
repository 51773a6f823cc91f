"""`pggit-exporter healthcheck`: probe the running exporter as its own configuration says.

Container HEALTHCHECKs and Kubernetes exec probes run this inside the exporter's container.
It reads the same config file and web config as `run`, so TLS, basic auth and a changed port
need no second place to be written: the probe connects to the listen port (loopback when the
exporter listens on all addresses), speaks TLS when the web config has a certificate, and
trusts exactly that certificate (the name in it need not be "127.0.0.1").

Basic auth stores only bcrypt hashes, so the probe cannot log in by itself. With
`--user` and a password (`--password-file` or PGGIT_EXPORTER_HEALTHCHECK_PASSWORD) it does;
without them a 401 from /healthz still proves the server is up and serving behind its auth,
which is all liveness asks. /readyz reports per-database state only to a logged-in client,
so it needs the credentials.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import ssl
import sys
from pathlib import Path
from typing import Any

import yaml

from exporter import config

PASSWORD_ENV = "PGGIT_EXPORTER_HEALTHCHECK_PASSWORD"
EXIT_HEALTHY, EXIT_UNHEALTHY, EXIT_CONFIG = 0, 1, 2


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--endpoint", choices=("/healthz", "/readyz"), default="/healthz",
                   help="/healthz: the process serves (liveness); /readyz: every database "
                        "is up and caught up (readiness)")
    p.add_argument("--user", help="basic auth user from the web config")
    p.add_argument("--password-file", type=Path,
                   help=f"file holding that user's password (or set {PASSWORD_ENV})")
    p.add_argument("--client-cert", type=Path,
                   help="client certificate, when the web config requires one")
    p.add_argument("--client-key", type=Path, help="key of --client-cert")
    p.add_argument("--timeout", type=float, default=4.0, help="seconds before giving up")


def probe_address(listen: str) -> tuple[str, int]:
    """The address to dial for a listen address: a wildcard means "this host", so loopback."""
    host, _, port = listen.rpartition(":")
    host = host.strip("[]")
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return host, int(port)


def _tls_context(web_config_file: Path, client_cert: Path | None,
                 client_key: Path | None) -> ssl.SSLContext | None:
    """A client context pinned to the server's own certificate, or None for plain HTTP."""
    data: Any = yaml.safe_load(web_config_file.read_text(encoding="utf-8")) or {}
    tls = data.get("tls_server_config")
    if not tls:
        return None
    context = ssl.create_default_context(cafile=str(web_config_file.parent / tls["cert_file"]))
    context.check_hostname = False
    # The leaf itself is the trust anchor, whoever signed it.
    context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    if client_cert is not None:
        context.load_cert_chain(client_cert, client_key)
    return context


def _password(args: argparse.Namespace) -> str | None:
    if args.password_file is not None:
        return args.password_file.read_text(encoding="utf-8").rstrip("\r\n")
    return os.environ.get(PASSWORD_ENV)


def probe(cfg: config.Config, args: argparse.Namespace) -> tuple[int, str]:
    """(exit code, one line saying why)."""
    host, port = probe_address(cfg.listen)
    url = f"{host}:{port}{args.endpoint}"
    try:
        context = (_tls_context(cfg.web_config_file, args.client_cert, args.client_key)
                   if cfg.web_config_file is not None else None)
        password = _password(args)
    except (OSError, ssl.SSLError) as exc:
        return EXIT_CONFIG, f"cannot prepare the probe: {exc}"
    headers = {}
    if args.user is not None:
        if password is None:
            return EXIT_CONFIG, f"--user needs --password-file or {PASSWORD_ENV}"
        token = base64.b64encode(f"{args.user}:{password}".encode()).decode()
        headers["Authorization"] = f"Basic {token}"
    scheme = "https" if context is not None else "http"
    conn: http.client.HTTPConnection = (
        http.client.HTTPSConnection(host, port, timeout=args.timeout, context=context)
        if context is not None else http.client.HTTPConnection(host, port, timeout=args.timeout))
    try:
        conn.request("GET", args.endpoint, headers=headers)
        response = conn.getresponse()
        body = response.read()
    except (OSError, http.client.HTTPException) as exc:
        return EXIT_UNHEALTHY, f"unhealthy: {scheme}://{url}: {exc}"
    finally:
        conn.close()
    if response.status == 200:
        return EXIT_HEALTHY, f"healthy: {scheme}://{url} answered 200"
    if response.status == 401:
        if args.endpoint == "/healthz" and args.user is None:
            return EXIT_HEALTHY, (f"healthy: {scheme}://{url} answered 401 (basic auth is on; "
                                  "the server is up behind it)")
        why = "wrong user or password" if args.user else (
            f"basic auth is on: pass --user and --password-file (or {PASSWORD_ENV})")
        return EXIT_UNHEALTHY, f"unhealthy: {scheme}://{url} answered 401: {why}"
    detail = ""
    if args.endpoint == "/readyz":
        try:
            status = json.loads(body)
            detail = "; ".join(
                f"{d['name']}: {'up' if d['up'] else 'down'}, "
                f"{'caught up' if d['caught_up'] else 'catching up'}"
                + (f", {d['last_error']}" if d.get("last_error") else "")
                for d in status["databases"])
        except (ValueError, KeyError, TypeError):
            detail = ""
    return EXIT_UNHEALTHY, (f"unhealthy: {scheme}://{url} answered {response.status}"
                            + (f": {detail}" if detail else ""))


def run(cfg: config.Config, args: argparse.Namespace) -> int:
    code, message = probe(cfg, args)
    print(message, file=sys.stdout if code == EXIT_HEALTHY else sys.stderr)
    return code
