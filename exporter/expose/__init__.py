"""Expose: turn the exporter's state into Prometheus exposition and serve it over HTTP."""
