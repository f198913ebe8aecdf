"""Generation providers: the built-in simulated one, and fetching results they produce."""
