"""The web config file, in the format Prometheus exporters share (exporter-toolkit).

SREs already write these files for node_exporter and postgres_exporter: TLS server settings
and bcrypt-hashed basic auth users. Reading the same format means no new thing to learn.
"""

from __future__ import annotations

import hashlib
import logging
import os
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bcrypt
import yaml

from exporter.config import ConfigError, yaml_error

log = logging.getLogger("exporter.web_config")

_CLIENT_AUTH = {
    "NoClientCert": ssl.CERT_NONE,
    "RequestClientCert": ssl.CERT_OPTIONAL,
    "RequireAnyClientCert": ssl.CERT_REQUIRED,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
_TLS_VERSIONS = {"TLS10": ssl.TLSVersion.TLSv1, "TLS11": ssl.TLSVersion.TLSv1_1,
                 "TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}
_TLS_KEYS = {"cert_file", "key_file", "client_auth_type", "client_ca_file", "min_version",
             "max_version"}
# The response headers exporter-toolkit lets an operator set, with the values it accepts
# (None: any non-empty string).
_HEADERS: dict[str, tuple[str, ...] | None] = {
    "Content-Security-Policy": None, "X-Frame-Options": ("deny", "sameorigin"),
    "X-Content-Type-Options": ("nosniff",), "X-XSS-Protection": None,
    "Strict-Transport-Security": None,
}


@dataclass
class WebConfig:
    tls: ssl.SSLContext | None = None
    users: dict[str, bytes] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    files: tuple[Path, ...] = ()
    """The files this config was read from: itself, and the certificates and keys it names."""
    _verified: set[bytes] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def authorized(self, user: str, password: str) -> bool:
        """bcrypt is slow on purpose; remember pairs already verified, as exporter-toolkit does."""
        hashed = self.users.get(user)
        if hashed is None:
            return False
        key = hashlib.sha256(user.encode() + b"\0" + password.encode() + b"\0" + hashed).digest()
        with self._lock:
            if key in self._verified:
                return True
        if not bcrypt.checkpw(password.encode(), hashed):
            return False
        with self._lock:
            self._verified.add(key)
        return True


def load(path: Path) -> WebConfig:
    """Parse and check the file; every problem is reported with its key."""
    try:
        data: Any = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise ConfigError(
            [f"web_config_file: cannot read {str(path)!r}: {exc.strerror}"]) from None
    except yaml.YAMLError as exc:
        raise ConfigError(
            [f"web_config_file: {str(path)!r} is not valid YAML: {yaml_error(exc)}"]) from None
    problems: list[str] = []
    if not isinstance(data, dict):
        raise ConfigError(["web_config_file: must be a mapping"])
    for key in sorted(set(data) - {"tls_server_config", "basic_auth_users",
                                   "http_server_config"}):
        problems.append(f"web_config_file.{key}: unknown key")
    cfg = WebConfig(files=(path,))
    users = data.get("basic_auth_users") or {}
    if not isinstance(users, dict):
        problems.append(
            "web_config_file.basic_auth_users: must be a mapping of user to bcrypt hash")
        users = {}
    for user, hashed in users.items():
        if not isinstance(hashed, str) or not hashed.startswith(("$2a$", "$2b$", "$2y$")):
            problems.append(f"web_config_file.basic_auth_users.{user}: must be a bcrypt hash")
        else:
            cfg.users[str(user)] = hashed.encode()
    tls = data.get("tls_server_config")
    if tls is not None:
        cfg.tls = _tls(tls, path.parent, problems)
        if isinstance(tls, dict):
            cfg.files += tuple(path.parent / str(tls[k]) for k in
                               ("cert_file", "key_file", "client_ca_file") if tls.get(k))
    server = data.get("http_server_config")
    if server is not None:
        cfg.headers = _http_server(server, problems)
    if problems:
        raise ConfigError(problems)
    return cfg


def _tls(tls: Any, base: Path, problems: list[str]) -> ssl.SSLContext | None:
    key = "web_config_file.tls_server_config"
    if not isinstance(tls, dict):
        problems.append(f"{key}: must be a mapping")
        return None
    for unknown in sorted(set(tls) - _TLS_KEYS):
        problems.append(f"{key}.{unknown}: unknown key")
    cert, private = tls.get("cert_file"), tls.get("key_file")
    if not cert or not private:
        problems.append(f"{key}: cert_file and key_file are both required")
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    for name, attribute, default in (("min_version", "minimum_version", "TLS12"),
                                     ("max_version", "maximum_version", "TLS13")):
        version = tls.get(name, default)
        if version not in _TLS_VERSIONS:
            problems.append(f"{key}.{name}: must be one of {', '.join(_TLS_VERSIONS)}")
            return None
        setattr(context, attribute, _TLS_VERSIONS[version])
    try:
        context.load_cert_chain(base / cert, base / private)
    except (OSError, ssl.SSLError) as exc:
        problems.append(f"{key}.cert_file: cannot load {cert!r} with {private!r}: {exc}")
        return None
    auth = tls.get("client_auth_type", "NoClientCert")
    if auth not in _CLIENT_AUTH:
        problems.append(f"{key}.client_auth_type: must be one of {', '.join(_CLIENT_AUTH)}")
        return None
    context.verify_mode = _CLIENT_AUTH[auth]
    if tls.get("client_ca_file"):
        try:
            context.load_verify_locations(base / tls["client_ca_file"])
        except (OSError, ssl.SSLError) as exc:
            problems.append(f"{key}.client_ca_file: cannot load: {exc}")
    elif auth in ("VerifyClientCertIfGiven", "RequireAndVerifyClientCert"):
        problems.append(f"{key}.client_ca_file: required for client_auth_type {auth}")
    return context


def _http_server(server: Any, problems: list[str]) -> dict[str, str]:
    """Extra response headers; `http2` is accepted for compatibility and changes nothing.

    The server speaks HTTP/1.1 only, which every Prometheus and browser client falls back
    to, so `http2: true` (exporter-toolkit's default) cannot be honoured and is not an error.
    """
    key = "web_config_file.http_server_config"
    if not isinstance(server, dict):
        problems.append(f"{key}: must be a mapping")
        return {}
    for unknown in sorted(set(server) - {"http2", "headers"}):
        problems.append(f"{key}.{unknown}: unknown key")
    if not isinstance(server.get("http2", True), bool):
        problems.append(f"{key}.http2: must be true or false")
    headers = server.get("headers") or {}
    if not isinstance(headers, dict):
        problems.append(f"{key}.headers: must be a mapping of header name to value")
        return {}
    out: dict[str, str] = {}
    for name, value in headers.items():
        allowed = _HEADERS.get(name, ())
        if allowed == ():
            problems.append(f"{key}.headers.{name}: not a header that can be set (one of "
                            f"{', '.join(_HEADERS)})")
        elif not isinstance(value, str) or not value.strip() or "\n" in value or "\r" in value:
            problems.append(f"{key}.headers.{name}: must be a one-line string")
        elif allowed is not None and value.lower() not in allowed:
            problems.append(f"{key}.headers.{name}: must be one of {', '.join(allowed)}")
        else:
            out[name] = value
    return out


Signature = tuple[tuple[int, int, int] | None, ...]


def _signature(files: tuple[Path, ...]) -> Signature:
    """What changes when any of the files is rewritten, replaced or renamed over."""
    out: list[tuple[int, int, int] | None] = []
    for path in files:
        try:
            st = os.stat(path)
        except OSError:
            out.append(None)
        else:
            out.append((st.st_mtime_ns, st.st_size, st.st_ino))
    return tuple(out)


class Watcher:
    """The web config in force, re-read when its file or a certificate it names changes.

    exporter-toolkit re-reads the file and the certificates for every new connection, so a
    certificate rotated by cert-manager or a Vault agent applies without a restart. Doing
    the same here costs a few stat() calls per connection; the files are only parsed again
    when one of them changed. A file that no longer loads is logged once and the last good
    config stays in force, rather than every handshake failing until someone notices.
    """

    def __init__(self, path: Path | None,
                 on_result: Callable[[bool], None] | None = None):
        self.path = path
        self.on_result = on_result
        self._lock = threading.Lock()
        self._config = load(path) if path is not None else WebConfig()
        self._seen = _signature(self._config.files)

    def current(self) -> WebConfig:
        """The config for a new connection, re-read first if a file changed."""
        if self.path is None:
            return self._config
        with self._lock:
            seen = _signature(self._config.files)
            if seen == self._seen:
                return self._config
            self._seen = seen
            try:
                config = load(self.path)
            except ConfigError as exc:
                for problem in exc.problems:
                    log.error("web config changed but cannot be used; keeping the previous one",
                              extra={"problem": problem})
                ok = False
            else:
                self._config, self._seen = config, _signature(config.files)
                log.info("web config re-read", extra={"path": str(self.path),
                                                      "tls": config.tls is not None})
                ok = True
        if self.on_result is not None:
            self.on_result(ok)
        return self._config

    def replace(self, path: Path | None, config: WebConfig) -> None:
        """Put a config loaded (and checked) by a reload in force."""
        with self._lock:
            self.path, self._config = path, config
            self._seen = _signature(config.files)
