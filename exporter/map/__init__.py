"""Map: pgGit rows to observations, one module per pgGit table."""
