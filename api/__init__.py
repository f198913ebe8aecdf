"""HTTP: routes, auth, errors as JSON, idempotency."""
