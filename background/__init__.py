"""Work every instance runs beside serving requests: the sweeper (expiry of holds, grants and
jobs), the delivery of outbound webhooks, and the supervision both run under (restart with
backoff, a heartbeat that readiness checks)."""
