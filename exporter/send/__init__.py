"""Send: pgGit spans (and merges) to an OTLP endpoint with the official OpenTelemetry exporters."""
