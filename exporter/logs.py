"""Structured logs: one line per event, logfmt or JSON, with secrets scrubbed.

Connection errors from libpq can echo connection strings; every field of every line passes
through `scrub` so a password never reaches a log collector, whatever the message carries.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}
_SECRETS = (
    (re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.I), r"\1***"),
    (re.compile(r"(://[^:/@\s]+:)[^@\s]+(@)"), r"\1***\2"),
    (re.compile(r"((?:authorization|api[-_]?key|token)\s*[:=]\s*)\S+", re.I), r"\1***"),
)


def scrub(text: str) -> str:
    for pattern, replacement in _SECRETS:
        text = pattern.sub(replacement, text)
    return text


_SECRET_KEY = re.compile(r"password|secret|token|authorization", re.I)


def _fields(record: logging.LogRecord) -> dict[str, object]:
    """The record's fields, each value scrubbed on its own.

    Scrubbing the formatted line instead would let a secret at the end of a value swallow
    the closing quote, leaving a JSON line that no longer parses (and a logfmt line whose
    quoting is broken).
    """
    fields: dict[str, object] = {
        "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        + f".{int(record.msecs):03d}Z",
        "level": record.levelname.lower(),
        "logger": record.name,
        "msg": record.getMessage(),
    }
    for key, value in vars(record).items():
        if key not in _STANDARD and not key.startswith("_"):
            fields[key] = "***" if _SECRET_KEY.search(key) else value
    if record.exc_info:
        fields["exception"] = logging.Formatter().formatException(record.exc_info)
    return {k: scrub(v) if isinstance(v, str) else v for k, v in fields.items()}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(_fields(record), default=lambda v: scrub(str(v)), ensure_ascii=False)


class LogfmtFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        parts = []
        for key, value in _fields(record).items():
            text = scrub(str(value))
            if text == "" or any(c in text for c in ' ="\n\t\\'):
                text = '"' + text.replace("\\", "\\\\").replace('"', '\\"') \
                    .replace("\n", "\\n").replace("\t", "\\t") + '"'
            parts.append(f"{key}={text}")
        return " ".join(parts)


def setup(fmt: str, level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else LogfmtFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("psycopg.pool").setLevel(logging.ERROR)
