"""Shared fixtures: real PostgreSQL servers (tests.pg_fixtures), exporter helpers, a real
Alertmanager (tests.rules_fixtures) and a real OTLP receiver (tests.otlp_receiver)."""

pytest_plugins = ["tests.pg_fixtures", "tests.exporter_fixtures", "tests.rules_fixtures",
                  "tests.otlp_receiver"]
