"""Shared fixtures: real PostgreSQL servers (tests.pg_fixtures) and exporter helpers."""

pytest_plugins = ["tests.pg_fixtures", "tests.exporter_fixtures"]
