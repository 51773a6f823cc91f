"""Why a database could not be reached, in libpq's words and as one of a few fixed reasons.

The pool reports every failed connection as the same `PoolTimeout`, which tells an operator
nothing; libpq's own message says what to fix (a password, a database name, a firewall).
That message, scrubbed of secrets, goes to the log, the landing page and /readyz; the reason,
one value of `REASONS`, labels `pggit_exporter_errors_total` so an alert can tell a rotated
password from a down server without free text in a label.
"""

from __future__ import annotations

import re

import psycopg
from psycopg_pool import PoolTimeout

from exporter.logs import scrub

# Checked in order; each pattern is a fragment of libpq's or the server's own message.
_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (reason, re.compile(pattern, re.IGNORECASE)) for reason, pattern in (
        ("ssl_required", r"no encryption|SSL (?:connection )?(?:is )?required"
                         r"|server does not support SSL"),
        ("auth_failed", r"authentication failed|no password supplied|password is required"),
        ("no_such_role", r"role \"[^\"]*\" does not exist"),
        ("no_such_database", r"database \"[^\"]*\" does not exist"),
        ("too_many_connections", r"too many (?:clients|connections)|connection slots are "
                                 r"reserved"),
        ("not_allowed", r"no pg_hba\.conf entry|permission denied for database"
                        r"|not permitted to log in"),
        ("unknown_host", r"could not translate host name|failed to resolve host"
                         r"|Name or service not known"
                         r"|nodename nor servname|Temporary failure in name resolution"),
        ("connection_refused", r"Connection refused|No such file or directory"),
        ("timeout", r"timeout expired|timed out"),
        ("server_unavailable", r"the database system is (?:starting up|shutting down|in "
                               r"recovery mode)|server closed the connection unexpectedly"),
    ))

REASONS = (*(reason for reason, _ in _PATTERNS), "pool_timeout", "query_timeout", "other")
"""Every value of the `reason` label; anything unrecognised is "other"."""


class ConnectFailed(psycopg.OperationalError):
    """The last connection attempt's failure, raised where the pool only says it timed out.

    An OperationalError, so code that treats a lost connection as one keeps doing so.
    """

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def reason(exc: BaseException) -> str:
    """One of REASONS for any exception a poll can end with."""
    if isinstance(exc, ConnectFailed):
        return exc.reason
    if isinstance(exc, psycopg.errors.QueryCanceled):
        return "query_timeout"
    if isinstance(exc, psycopg.OperationalError):
        return _match(str(exc)) or "other"
    if isinstance(exc, PoolTimeout):
        return "pool_timeout"
    return "other"


def _match(text: str) -> str | None:
    return next((r for r, pattern in _PATTERNS if pattern.search(text)), None)


def describe(exc: BaseException) -> str:
    """libpq's message on one line, secrets scrubbed: what the operator reads."""
    return scrub(" ".join(str(exc).split())) or type(exc).__name__


def connect_failed(exc: psycopg.Error) -> ConnectFailed:
    return ConnectFailed(reason(exc), describe(exc))
