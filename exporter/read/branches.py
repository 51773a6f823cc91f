"""branches: branch names for the `branch` labels, looked up in the poll's snapshot.

The deployed table has branch_id/branch_name; an older draft had id/name. Which pair exists
is read from the discovered columns instead of assumed. A mapping gets the lookup as a plain
id -> name function (`exporter.map.base.Context.branch_name`), never the connection.
"""

from __future__ import annotations

import psycopg
from psycopg import sql

from exporter.discover import Found


class BranchNames:
    """Id -> name, reloaded when an unknown id shows up (a branch created since)."""

    def __init__(self) -> None:
        self.names: dict[int, str] = {}
        self.columns: tuple[str, str] | None = None
        self._missed: set[int] = set()

    def configure(self, found: Found) -> str | None:
        """Pick the id/name columns; returns why names are unavailable, or None."""
        cols = found.columns.get("branches", frozenset())
        for pair in (("branch_id", "branch_name"), ("id", "name")):
            if set(pair) <= cols:
                self.columns = pair
                return None
        self.columns = None
        return found.missing("branches", frozenset({"branch_id", "branch_name"})) or \
            "table branches has neither branch_id/branch_name nor id/name"

    def reload(self, conn: psycopg.Connection, table: sql.Composed) -> None:
        if self.columns is None:
            return
        query = sql.SQL("SELECT {}, {} FROM {}").format(
            sql.Identifier(self.columns[0]), sql.Identifier(self.columns[1]), table)
        self.names = {int(i): str(n) for i, n in conn.execute(query)}
        self._missed.clear()

    def lookup(self, conn: psycopg.Connection, table: sql.Composed, branch_id: int | None) -> str:
        """The branch's name; "" when there is none, the id itself if the branch is gone."""
        if branch_id is None:
            return ""
        name = self.names.get(branch_id)
        if name is None and branch_id not in self._missed:
            self._missed.add(branch_id)
            missed = set(self._missed)
            self.reload(conn, table)
            self._missed = missed - set(self.names)
            name = self.names.get(branch_id)
        return name if name is not None else str(branch_id)
