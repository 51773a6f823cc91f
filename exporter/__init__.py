"""pggit-exporter: pgGit's in-database performance monitoring, served to Prometheus and OTLP."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("pggit-exporter")
except PackageNotFoundError:
    __version__ = "0.0.0+unknown"
