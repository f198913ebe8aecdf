"""`creditstream bench`: benchmarks that measure creditstream and its ceiling in the same run.

Each benchmark runs creditstream and a hand-written "ceiling" (the same work with nothing of
creditstream in the way: raw asyncpg, a bare Starlette endpoint, a bare Redis-to-WebSocket relay)
on the same machine, back to back, and reports creditstream / ceiling against the goals of
SPEC §6. Results: a table (rich), `--json PATH`, and `--plot DIR` (PNG charts).
"""
