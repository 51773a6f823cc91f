"""Read: incremental, exactly-once reading of pgGit tables inside one snapshot per poll."""
