"""The HTTP routes, one module per resource; the `table_*` modules list them by resource group,
`table` joins the groups into the `/v1` route table, and `seeds/` holds the seed-compatible paths."""
