"""Read: every query on pgGit's tables, run inside one snapshot per poll, exactly once.

The engine (`snapshot`, `spec`, `incremental`, `backfill`, `cursor`, `holes`) is the same for
every table; each table's queries live in a module named for the table, like its mapping in
`exporter.map`, which only turns the rows handed over into observations.
"""
