"""`bench soak`: an endurance run of one instance (`uvicorn asgi:app`, PostgreSQL, the in-process
broker or `--redis`) under everything that must not pile up over hours, together:

- stream churn: `--churn-clients` WebSocket clients connecting, subscribing, staying 0.05–0.5 s
  and closing, 30 % of them by aborting the TCP connection (bench/soak_load.py);
- keyed holds nobody captures, `--hold-rate` a second, on a server whose
  CREDITSTREAM_HOLD_TTL_S is `--ttl`: the sweeper must expire them as fast as they come;
- jobs of an external provider that never answers, `--job-rate` a second, whose timeout is the
  same setting: the sweeper must time them out;
- outbound webhooks: an endpoint for every event type pointing at a receiver in this process
  (bench/soak_receiver.py) that notes each event's arrival.

Reported: the server's RSS every `--sample-s` and its least-squares slope over the second half
(MiB/min), the growth of each half and their ratio, RSS per 1,000 closed streams; the sweeper's
lateness (released or timed out minus expiry, from the database's timestamps) for holds and
jobs, with what is still open past expiry at the end; delivery lag (arrival minus the event's
`created_at`) and the events not delivered after a drain. A bound exceeded exits non-zero.

The run against the server is bench/soak_session.py (the load's process and the RSS samples in
bench/soak_load_process.py, the lateness read back in bench/soak_lateness.py); the rows and the
bounds are bench/soak_report.py.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.database import audit_database, bench_database
from bench.measure import machine_info, raise_nofile, service_versions
from bench.results import Progress, Result
from bench.soak_report import CAPTION, add_rows
from bench.soak_session import ABORT_SHARE, run_session


def _at_least(minimum: float, kind: type = float) -> Any:
    """An argparse type: a number no smaller than `minimum`, else a usage error naming it."""

    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from exc
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum:g}, got {text}")
        return float(value) if kind is float else int(value)

    return parse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    load = parser.add_argument_group("load")
    load.add_argument(
        "--duration",
        type=_at_least(1),
        default=600.0,
        help="seconds of load (default 600; CI runs 120)",
    )
    load.add_argument(
        "--churn-clients",
        type=_at_least(0, int),
        default=40,
        help="WebSocket clients connecting, staying 0.05–0.5 s and closing, each "
        "in a loop (default 40: some 100 streams close a second)",
    )
    load.add_argument(
        "--stream-accounts",
        type=_at_least(1, int),
        default=500,
        help="accounts the streams subscribe to (default 500)",
    )
    load.add_argument(
        "--accounts",
        type=_at_least(1, int),
        default=2000,
        help="accounts the holds and jobs spread over, the stream accounts among "
        "them (default 2000)",
    )
    load.add_argument(
        "--hold-rate",
        type=_at_least(0),
        default=100.0,
        help="keyed holds per second, left to expire (default 100)",
    )
    load.add_argument(
        "--job-rate",
        type=_at_least(0),
        default=5.0,
        help="jobs per second of a provider that never answers (default 5)",
    )
    load.add_argument(
        "--ttl",
        type=_at_least(1, int),
        default=5,
        help="the server's CREDITSTREAM_HOLD_TTL_S: holds' TTL and jobs' timeout (default 5)",
    )
    load.add_argument(
        "--receiver-delay-ms",
        type=_at_least(0),
        default=10.0,
        help="how long the webhook receiver takes to answer (default 10)",
    )
    load.add_argument(
        "--redis",
        action="store_true",
        help="the instance's broker is Redis at --redis-url (default: in-process)",
    )
    measure = parser.add_argument_group("measurement")
    measure.add_argument(
        "--sample-s",
        type=_at_least(0.1),
        default=3.0,
        help="seconds between RSS samples (default 3)",
    )
    measure.add_argument(
        "--drain",
        type=_at_least(0),
        default=15.0,
        help="after the load, seconds at most to wait for deliveries to stop arriving (default 15)",
    )
    bounds = parser.add_argument_group("bounds (exceeding one exits 1)")
    bounds.add_argument(
        "--max-rss-slope-mib-per-min",
        type=float,
        default=2.0,
        help="server RSS slope over the second half (default 2)",
    )
    bounds.add_argument(
        "--max-sweeper-late-s",
        type=float,
        default=5.0,
        help="p99 of hold expiry and job timeout lateness (default 5)",
    )
    bounds.add_argument(
        "--max-sweeper-late-max-s",
        type=float,
        default=None,
        help="the largest lateness (default twice --max-sweeper-late-s)",
    )
    bounds.add_argument(
        "--max-delivery-lag-s",
        type=float,
        default=10.0,
        help="p99 of delivery lag, undelivered events counted (default 10)",
    )


async def run(args: argparse.Namespace, say: Progress) -> Result:
    raise_nofile(args.churn_clients * 4 + 4096)
    late_max = args.max_sweeper_late_max_s or 2 * args.max_sweeper_late_s
    params = {
        k: getattr(args, k)
        for k in (
            "duration",
            "churn_clients",
            "stream_accounts",
            "accounts",
            "hold_rate",
            "job_rate",
            "ttl",
            "receiver_delay_ms",
            "redis",
            "sample_s",
            "drain",
            "max_rss_slope_mib_per_min",
            "max_sweeper_late_s",
            "max_delivery_lag_s",
        )
    }
    params["max_sweeper_late_max_s"] = late_max
    params["abort_share"] = ABORT_SHARE
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="creditstream-soak-") as tmp:
        logs = Path(tmp)
        async with bench_database(args.pg_admin, args.database_url) as dsn:
            pg_version, redis_version = await service_versions(
                dsn, args.redis_url if args.redis else None
            )
            measured = await run_session(args, dsn, logs, say)
            measured["audit"] = await audit_database(dsn)
    result = Result(
        "soak",
        f"soak: {args.duration:g} s of stream churn, expiring holds and jobs, "
        "outbound deliveries" + (" (Redis)" if args.redis else ""),
        params,
        machine=machine_info(pg_version, redis_version),
        caption=CAPTION,
    )
    add_rows(result, measured, args, late_max)
    result.details = measured
    result.elapsed_s = time.monotonic() - started
    return result
