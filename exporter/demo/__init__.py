"""A throwaway pgGit database for tests and demos: schema, writer functions, server, workload."""
