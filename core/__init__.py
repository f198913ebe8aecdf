"""The credit engine: plain Python rules with no framework and no I/O."""
