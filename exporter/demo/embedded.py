"""A throwaway PostgreSQL server for tests and demos, with full control over its lifecycle.

pgserver's own ``PostgresServer`` shares one server per data directory across processes and
hides restarts; tests of the exporter need to restart, crash and re-time-zone the server, so
only pgserver's bundled binaries are used here and the lifecycle is driven with pg_ctl.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import warnings
from pathlib import Path
from types import TracebackType

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

SERVER_USER = "pgserver"
"""System account that owns the cluster when we run as root (PostgreSQL refuses root)."""

SUPERUSER = "postgres"
LOG_NAME = "server.log"
START_TIMEOUT_S = 30
STOP_TIMEOUT_S = 30

HBA_CONF = """\
# Written by exporter.demo.embedded: the superuser may connect without a password, every other
# role must authenticate over TCP, so password handling can be tested for real.
local all all trust
host all postgres 127.0.0.1/32 trust
host all all 127.0.0.1/32 scram-sha-256
"""


class EmbeddedPostgresError(RuntimeError):
    """The server could not be initialised, started or stopped; the message has the log tail."""


def find_bin_dir() -> Path:
    """Prefer pgserver's bundled binaries (a known version), else the machine's PostgreSQL."""
    try:
        with warnings.catch_warnings():
            # pgserver's import resolves platformdirs paths and warns when XDG_RUNTIME_DIR is
            # unset, which is the normal case under root in CI; the warning is noise here.
            warnings.simplefilter("ignore")
            from pgserver import _commands
        bin_dir = Path(_commands.POSTGRES_BIN_PATH)
        if (bin_dir / "initdb").exists():
            return bin_dir
    except ImportError:
        pass
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).resolve().parent
    pg_config = shutil.which("pg_config")
    if pg_config:
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False)
        candidate = Path(out.stdout.strip())
        if (candidate / "initdb").exists():
            return candidate
    raise EmbeddedPostgresError(
        "no PostgreSQL binaries for the throwaway database: install the demo extra "
        "(pip install 'pggit-exporter[demo]', which brings pgserver) or PostgreSQL's initdb, "
        "or point the demo at an existing database with --dsn")


def ensure_server_user() -> pwd.struct_passwd:
    """Reuse pgserver's helper when present so both tools share one system account."""
    try:
        from pgserver.utils import ensure_user_exists
    except ImportError:
        try:
            return pwd.getpwnam(SERVER_USER)
        except KeyError:
            subprocess.run(
                ["useradd", "--system", "--no-create-home", "-s", "/bin/sh", SERVER_USER],
                check=True,
                capture_output=True,
            )
            return pwd.getpwnam(SERVER_USER)
    entry = ensure_user_exists(SERVER_USER)
    if entry is None:
        raise EmbeddedPostgresError(f"could not create system user {SERVER_USER}")
    return entry


def free_port() -> int:
    """Ask the kernel for an unused port; another process may take it first, start() retries."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def create_database(admin_dsn: str, name: str, template: str | None = None) -> None:
    """CREATE DATABASE, optionally copied from `template`, on the server of `admin_dsn`.

    Autocommit, because CREATE DATABASE cannot run inside a transaction block; shared by the
    embedded server and the tests' external one.
    """
    query = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
    if template is not None:
        query = sql.SQL("{} TEMPLATE {}").format(query, sql.Identifier(template))
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(query)


class EmbeddedPostgres:
    """One private PostgreSQL cluster: initdb on first start, listening on 127.0.0.1:<port>.

    ``timezone`` becomes the server's default ``TimeZone`` (``-c TimeZone=...``), which is what
    sessions see unless they set their own; pgGit writes local time in that zone. ``settings``
    are extra ``-c`` options applied at every start. A caller-provided ``data_dir`` is kept by
    ``close()``; a temporary one is deleted.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str] | None = None,
        *,
        timezone: str = "UTC",
        settings: dict[str, str | int | float | bool] | None = None,
        port: int | None = None,
    ) -> None:
        self.bin_dir = find_bin_dir()
        self.timezone = timezone
        self.settings = dict(settings or {})
        self._owns_base = data_dir is None
        if data_dir is None:
            # Short path under /tmp: unix socket paths are limited to ~107 bytes.
            self.base_dir = Path(tempfile.mkdtemp(prefix="pggit-pg-"))
            self.data_dir = self.base_dir / "data"
        else:
            self.data_dir = Path(data_dir).resolve()
            self.base_dir = self.data_dir.parent
        self.socket_dir = Path(tempfile.mkdtemp(prefix="pggit-sock-"))
        self.port = port if port is not None else free_port()
        self._fixed_port = port is not None
        self._run_as = ensure_server_user() if os.geteuid() == 0 else None
        self._started = False
        self._closed = False
        self._ever_started = False

    # -- public API -------------------------------------------------------------------------

    @property
    def log_path(self) -> Path:
        return self.data_dir / LOG_NAME

    @property
    def running(self) -> bool:
        return self._started

    def start(self) -> None:
        """Start (initdb first if needed); idempotent. Waits until connections are accepted."""
        if self._closed:
            raise EmbeddedPostgresError("server was closed")
        if self._started:
            return
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb()
        # The socket directory is new for every instance, also for a kept data directory
        # that initdb (which hands it over too) will not see again.
        self._chown(self.socket_dir)
        attempts = 1 if (self._fixed_port or self._ever_started) else 3
        for attempt in range(attempts):
            result = self._pg_ctl("start", "-w", "-t", str(START_TIMEOUT_S), "-l",
                                  str(self.log_path), "-o", self._server_options())
            if result.returncode == 0:
                self._started = True
                self._ever_started = True
                return
            if attempt + 1 < attempts and "could not bind" in self._log_tail():
                # Someone grabbed our port between free_port() and bind(); only safe to move
                # before the first start, since DSNs handed out later embed the port.
                self.port = free_port()
                continue
            raise EmbeddedPostgresError(
                f"pg_ctl start failed ({result.returncode}): {result.stdout}{result.stderr}\n"
                f"--- {self.log_path} ---\n{self._log_tail()}"
            )

    def stop(self, mode: str = "fast") -> None:
        """Stop with pg_ctl's ``smart``/``fast``/``immediate``; a no-op if not running."""
        if not self._started:
            return
        result = self._pg_ctl("stop", "-w", "-t", str(STOP_TIMEOUT_S), "-m", mode)
        if result.returncode != 0 and self._postmaster_pid() is not None:
            raise EmbeddedPostgresError(
                f"pg_ctl stop failed: {result.stdout}{result.stderr}\n{self._log_tail()}"
            )
        self._started = False

    def restart(self, mode: str = "fast") -> None:
        """Stop and start on the same port, so existing DSNs stay valid."""
        self.stop(mode)
        self.start()

    def kill(self) -> None:
        """Crash the server: SIGKILL the postmaster and its children, no shutdown checkpoint.

        Every server child calls setsid(), so killing the process group is not enough; the
        postmaster is frozen first (it can then fork no new child) and its children are
        collected from /proc. They must die too, because an orphaned backend keeps the
        shared memory segment attached and the next start would refuse to run.
        """
        pid = self._postmaster_pid()
        self._started = False
        if pid is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGSTOP)
        victims = [pid, *_children_of(pid)]
        for victim in victims:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(_alive(v) for v in victims):
            time.sleep(0.01)
        # The dead postmaster may linger as a zombie until PID 1 reaps it, and PostgreSQL
        # treats any existing PID in postmaster.pid as a running server. Nothing of the old
        # server is alive any more, so the lock files are stale, as after a power cut.
        stale = [self.data_dir / "postmaster.pid", *self.socket_dir.glob(".s.PGSQL.*")]
        for path in stale:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def dsn(self, dbname: str = "postgres", user: str = SUPERUSER,
            password: str | None = None) -> str:
        """A libpq key=value string over TCP, where non-superusers must give a password."""
        params: dict[str, str | int] = {
            "host": "127.0.0.1",
            "port": self.port,
            "dbname": dbname,
            "user": user,
        }
        if password is not None:
            params["password"] = password
        return make_conninfo(**params)

    def socket_dsn(self, dbname: str = "postgres", user: str = SUPERUSER) -> str:
        """Over the unix socket, where ``trust`` applies to every role."""
        return make_conninfo(host=str(self.socket_dir), port=self.port, dbname=dbname,
                             user=user)

    def create_database(self, name: str, template: str | None = None) -> str:
        """Create a database (optionally copied from a template) and return its DSN."""
        create_database(self.dsn(), name, template)
        return self.dsn(dbname=name)

    def replica(self) -> EmbeddedPostgres:
        """A hot standby of this running server, started on its own port; the caller closes it.

        `pg_basebackup -R` copies the cluster and writes `primary_conninfo` and
        `standby.signal`, so the copy starts in recovery and streams WAL from this server over
        its unix socket. The pg_hba.conf written by `_initdb` does not allow replication
        connections (`all` does not match them), so a local trust line is added and the
        configuration reloaded first.
        """
        hba = self.data_dir / "pg_hba.conf"
        text = hba.read_text(encoding="utf-8")
        if "replication" not in text:
            hba.write_text(text + "local replication all trust\n", encoding="utf-8")
            with psycopg.connect(self.socket_dsn(), autocommit=True) as conn:
                conn.execute("SELECT pg_reload_conf()")
        standby = EmbeddedPostgres(timezone=self.timezone, settings=self.settings)
        standby._chown(standby.base_dir)
        result = standby._run([str(self.bin_dir / "pg_basebackup"), "-D", str(standby.data_dir),
                               "-R", "-X", "stream", "-c", "fast", "--no-sync",
                               "-h", str(self.socket_dir), "-p", str(self.port),
                               "-U", SUPERUSER])
        if result.returncode != 0:
            standby.close()
            raise EmbeddedPostgresError(
                f"pg_basebackup failed ({result.returncode}): {result.stdout}{result.stderr}")
        try:
            standby.start()
        except BaseException:
            standby.close()
            raise
        return standby

    def close(self) -> None:
        """Stop the server and remove what we created; safe to call more than once."""
        if self._closed:
            return
        try:
            if self._started:
                try:
                    self.stop("immediate")
                except EmbeddedPostgresError:
                    self.kill()
        finally:
            self._closed = True
            shutil.rmtree(self.socket_dir, ignore_errors=True)
            if self._owns_base:
                shutil.rmtree(self.base_dir, ignore_errors=True)

    def __enter__(self) -> EmbeddedPostgres:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"EmbeddedPostgres(port={self.port}, data_dir={str(self.data_dir)!r}, "
                f"timezone={self.timezone!r}, running={self._started})")

    # -- internals --------------------------------------------------------------------------

    def _server_options(self) -> str:
        options: dict[str, str | int | float | bool] = {
            "listen_addresses": "127.0.0.1",
            "port": self.port,
            "unix_socket_directories": str(self.socket_dir),
            "max_connections": 120,
            "TimeZone": self.timezone,
            "log_timezone": self.timezone,
            # A throwaway cluster: fsync only costs time. synchronous_commit stays on so that
            # commit writes WAL out of shared memory: kill() then loses no committed row,
            # because the OS page cache outlives the server processes.
            "fsync": "off",
            "full_page_writes": "off",
            "logging_collector": "off",
        }
        options.update(self.settings)
        parts: list[str] = []
        for key, value in options.items():
            if isinstance(value, bool):
                value = "on" if value else "off"
            # pg_ctl hands -o to /bin/sh, hence shell quoting of each -c pair.
            parts += ["-c", shlex.quote(f"{key}={value}")]
        return " ".join(parts)

    def _initdb(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self._owns_base:
            self._chown(self.base_dir)
        self._chown(self.data_dir)
        result = self._run([str(self.bin_dir / "initdb"), "-D", str(self.data_dir), "-U",
                            SUPERUSER, "-A", "trust", "-E", "UTF8", "--no-locale",
                            "--no-sync", "--no-instructions"])
        if result.returncode != 0:
            raise EmbeddedPostgresError(f"initdb failed: {result.stdout}{result.stderr}")
        (self.data_dir / "pg_hba.conf").write_text(HBA_CONF, encoding="utf-8")
        self._chown(self.data_dir / "pg_hba.conf")

    def _chown(self, path: Path) -> None:
        if self._run_as is None:
            return
        os.chown(path, self._run_as.pw_uid, self._run_as.pw_gid)
        os.chmod(path, 0o700)

    def _pg_ctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self._run([str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), *args])

    def _run(self, cmd: list[str]) -> subprocess.CompletedProcess[str]:
        kwargs: dict[str, object] = {}
        if self._run_as is not None:
            kwargs = {"user": self._run_as.pw_uid, "group": self._run_as.pw_gid,
                      "extra_groups": [], "cwd": str(self.data_dir.parent)}
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["LC_ALL"] = "C"
        # stdin/stdout must not be inherited by the postmaster pg_ctl leaves running, or
        # capture_output would wait for the server to exit; pg_ctl -l redirects it for us.
        return subprocess.run(cmd, capture_output=True, text=True, check=False, env=env,
                              stdin=subprocess.DEVNULL, **kwargs)  # type: ignore[arg-type]

    def _postmaster_pid(self) -> int | None:
        try:
            first = (self.data_dir / "postmaster.pid").read_text().splitlines()[0]
            pid = int(first)
        except (OSError, ValueError, IndexError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return pid

    def _log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no server log)"



def _proc_stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name: state, ppid, pgrp, ..."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2:].split()


def _children_of(pid: int) -> list[int]:
    """Direct children of a process (Linux /proc; elsewhere none are found)."""
    children = []
    for entry in Path("/proc").glob("[0-9]*"):
        fields = _proc_stat(int(entry.name))
        if fields is not None and int(fields[1]) == pid:
            children.append(int(entry.name))
    return children


def _alive(pid: int) -> bool:
    """Running and not a zombie: a killed server process re-parented to PID 1 may wait long
    to be reaped, but as a zombie it no longer holds shared memory."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    fields = _proc_stat(pid)
    return fields is not None and fields[0] not in ("Z", "X")
