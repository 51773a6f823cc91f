"""Shared fixtures: real PostgreSQL servers (tests.pg_fixtures), exporter helpers and a real
Alertmanager (tests.rules_fixtures)."""

pytest_plugins = ["tests.pg_fixtures", "tests.exporter_fixtures", "tests.rules_fixtures"]
