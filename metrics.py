"""Prometheus metrics, served at /metrics. One registry for the process; names in one place."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry()

HTTP_REQUESTS = Counter(
    "creditstream_http_requests",
    "HTTP requests by route and status",
    ["method", "route", "status"],
    registry=REGISTRY,
)
HTTP_SECONDS = Histogram(
    "creditstream_http_request_seconds",
    "HTTP request duration",
    ["method", "route"],
    registry=REGISTRY,
    buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
OPERATIONS = Counter(
    "creditstream_operations",
    "Holds, charges, captures, releases, grants "
    "and jobs by outcome (ok, insufficient_credits, daily_limit_exceeded, …)",
    ["operation", "outcome"],
    registry=REGISTRY,
)
IDEMPOTENT_REPLAYS = Counter(
    "creditstream_idempotent_replays",
    "Requests answered from a stored Idempotency-Key response",
    registry=REGISTRY,
)
WEBHOOK_REJECTIONS = Counter(
    "creditstream_webhook_rejections",
    "Webhooks refused before any effect",
    ["provider", "reason"],
    registry=REGISTRY,
)
WEBHOOK_DELIVERIES = Counter(
    "creditstream_webhook_deliveries",
    "Outbound webhook attempts (ok, failed) and endpoints disabled",
    ["outcome"],
    registry=REGISTRY,
)
WEBHOOK_LAG = Gauge(
    "creditstream_webhook_lag_seconds",
    "Per endpoint, the age of the oldest event this instance holds pending for it (0: caught up)",
    ["endpoint"],
    registry=REGISTRY,
)
WEBHOOK_OLDEST_STEP = Gauge(
    "creditstream_webhook_oldest_step_seconds",
    "Age of the outbound "
    "deliverer's oldest unfinished step (an attempt or a database "
    "call); past CREDITSTREAM_WEBHOOK_STUCK_S readiness reports it stuck",
    registry=REGISTRY,
)
CONNECTIONS = Gauge(
    "creditstream_stream_connections", "Open WebSocket connections", registry=REGISTRY
)
SUBSCRIPTIONS = Gauge(
    "creditstream_stream_subscriptions", "Local account subscriptions", registry=REGISTRY
)
EVENTS_PUBLISHED = Counter(
    "creditstream_events_published",
    "Committed events published by this instance",
    registry=REGISTRY,
)
EVENTS_DELIVERED = Counter(
    "creditstream_events_delivered", "Events queued to local subscribers", registry=REGISTRY
)
EVENTS_FILLED = Counter(
    "creditstream_events_gap_filled",
    "Events recovered from the journal (gap-fill, resync)",
    registry=REGISTRY,
)
PUSH_LATENCY = Histogram(
    "creditstream_push_latency_seconds",
    "From the event's commit to its delivery to local subscribers",
    registry=REGISTRY,
    buckets=(0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
SLOW_CONSUMERS = Counter(
    "creditstream_slow_consumer_closes", "Streams closed with 1013", registry=REGISTRY
)
SWEEPS = Counter("creditstream_sweeper_runs", "Sweeper passes", ["result"], registry=REGISTRY)
SWEPT = Counter("creditstream_swept", "What the sweeper expired", ["kind"], registry=REGISTRY)
SWEEPER_OLDEST_DUE = Gauge(
    "creditstream_sweeper_oldest_due_seconds",
    "How far past its expiry "
    "the oldest due hold or job was at the sweeper's last pass (0: none "
    "due); above a few seconds the sweeper is falling behind",
    ["kind"],
    registry=REGISTRY,
)
REDIS_CONNECTED = Gauge(
    "creditstream_redis_listener_connected",
    "1 when the Redis listener is connected",
    registry=REGISTRY,
)
REDIS_RECONNECTS = Counter(
    "creditstream_redis_reconnects", "Redis listener reconnections", registry=REGISTRY
)
BACKGROUND_ERRORS = Counter(
    "creditstream_background_task_errors",
    "Failed rounds of background "
    "tasks (redis-listener, redis-publisher, journal-check, sweeper), "
    "each retried with backoff; also a task that ended",
    ["task"],
    registry=REGISTRY,
)
WRITE_BATCH_SIZE = Histogram(
    "creditstream_write_batch_size",
    "Operations per group-commit transaction",
    registry=REGISTRY,
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
)
WRITE_BATCH_SPLITS = Counter(
    "creditstream_write_batch_splits",
    "Batches that failed for a non-domain reason and ran again one operation at a time",
    registry=REGISTRY,
)
WRITE_BATCHES_REMEMBERED = Counter(
    "creditstream_write_batches_remembered",
    "Batches that applied on the accounts as this process last committed them, without a "
    "locking read: `committed`, or `stale` (a row or key changed elsewhere meanwhile; the "
    "batch ran again with the locking read)",
    ["outcome"],
    registry=REGISTRY,
)
STANDBY_READS = Counter(
    "creditstream_standby_reads",
    "Reads routed to CREDITSTREAM_DATABASE_READ_URL, by who served them (standby, primary) "
    "and why (caught_up; or lagging, standby_down, standby_busy, not_a_standby, recovery_conflict)",
    ["served_by", "reason"],
    registry=REGISTRY,
)
STANDBY_POSITION_FETCHES = Counter(
    "creditstream_standby_position_fetches",
    "Round trips to the primary for its WAL position (pg_current_wal_lsn()), each shared by the "
    "standby reads that arrived while the previous one was in flight",
    registry=REGISTRY,
)
