"""Which collector a failed read belongs to, so that one failing table does not stop the rest.

A read that fails for any reason other than the connection is raised as `CollectorFailed`
naming its collector; the poller then skips that collector with backoff while the others
keep reading. A lost connection is everyone's failure and is raised as it is. A query that
ran past `statement_timeout` (psycopg files it under OperationalError) is its collector's:
a table locked or too slow must not stop the other tables of the same poll for good.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg_pool import PoolTimeout


class CollectorFailed(Exception):
    """A read failed in one collector (the cause is chained), for anything but the connection."""

    def __init__(self, collector: str):
        super().__init__(collector)
        self.collector = collector


@contextmanager
def failing_as(collector: str) -> Iterator[None]:
    """Name the collector whose read failed, unless the connection did (that is everyone's)."""
    try:
        yield
    except psycopg.errors.QueryCanceled as exc:
        raise CollectorFailed(collector) from exc
    except (PoolTimeout, psycopg.OperationalError, CollectorFailed):
        raise
    except Exception as exc:
        raise CollectorFailed(collector) from exc
