"""The OTLP span wire format: pure functions, no I/O.

Shared by `exporter.map` (a row becomes encoded span bytes) and `exporter.send` (batches of
those bytes go out inside a request envelope); it imports neither, so both can depend on it
and dependencies still point one way: read -> map -> send.
"""
