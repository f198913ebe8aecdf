"""The HTTP routes, one module per resource; `table` joins them into the `/v1` route table and
`seeds/` holds the seed-compatible paths."""
