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
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.database import (
    account_ids,
    audit_database,
    bench_database,
    create_server_key,
    seed_accounts,
)
from bench.measure import (
    CpuMeter,
    contention_note,
    machine_info,
    raise_nofile,
    rss_kib,
    service_versions,
)
from bench.results import Goal, Progress, Result, Row
from bench.servers import BENCH_SECRET, ROOT, UvicornServer, stop_servers, user_tokens
from bench.soak_figures import delivery_lag, lateness, rss_figures
from bench.soak_receiver import DeliveryReceiver

EVENT_TYPES = ["balance.updated", "job.updated", "credits.low"]
JOB_PROVIDER = "soak-external"  # not built in: nobody calls back
ABORT_SHARE = 0.3
CAPTION = (
    "ceiling column: the first half of the run, or the start, where a row compares; goal: "
    "the bound of the command line (lateness and lag in seconds)"
)


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
            measured = await _soak(args, dsn, logs, say)
            measured["audit"] = await audit_database(dsn)
    result = Result(
        "soak",
        f"soak: {args.duration:g} s of stream churn, expiring holds and jobs, "
        "outbound deliveries" + (" (Redis)" if args.redis else ""),
        params,
        machine=machine_info(pg_version, redis_version),
        caption=CAPTION,
    )
    _rows(result, measured, args, late_max)
    result.details = measured
    result.elapsed_s = time.monotonic() - started
    return result


async def _soak(args: argparse.Namespace, dsn: str, logs: Path, say: Progress) -> dict[str, Any]:
    ids = account_ids(f"bsoak{uuid.uuid4().hex[:6]}", max(args.accounts, args.stream_accounts))
    await seed_accounts(dsn, ids)
    stream_ids = ids[: args.stream_accounts]
    env = {
        "CREDITSTREAM_DATABASE_URL": dsn,
        "CREDITSTREAM_USER_TOKEN_SECRET": BENCH_SECRET,
        "CREDITSTREAM_RESULTS_DIR": str(logs / "results"),
        "CREDITSTREAM_HOLD_TTL_S": str(args.ttl),
        "CREDITSTREAM_WEBHOOK_ALLOW_PRIVATE": "1",
        "CREDITSTREAM_LOG_LEVEL": "WARNING",
    }
    if args.redis:
        env["CREDITSTREAM_REDIS_URL"] = args.redis_url
    server = UvicornServer("asgi:app", env, "asyncio", logs, "soak-server")
    receiver = await DeliveryReceiver(args.receiver_delay_ms / 1000).start()
    try:
        await server.start()
        key = await create_server_key(dsn)
        registered_at = time.time()  # what came before (seeding, an earlier run) is left out
        await _register(server.url, key, receiver.url)
        base = server.url.replace("http://", "ws://") + "/v1/stream"
        cfg = {
            "host": "127.0.0.1",
            "port": server.port,
            "authorization": f"Bearer {key}",
            "accounts": ids,
            "duration": args.duration,
            "churn_clients": args.churn_clients,
            "stream_targets": [
                [f"{base}?token={t}", a]
                for a, t in zip(stream_ids, user_tokens(stream_ids), strict=True)
            ],
            "abort_share": ABORT_SHARE,
            "hold_rate": args.hold_rate,
            "job_rate": args.job_rate,
            "job_provider": JOB_PROVIDER,
            "report_s": max(1.0, args.sample_s),
        }
        say(
            f"soak: {args.duration:g} s: {args.churn_clients} churning streams, "
            f"{args.hold_rate:g} holds/s and {args.job_rate:g} jobs/s expiring after "
            f"{args.ttl} s, deliveries to {receiver.url}"
        )
        load = await _LoadProcess.start(cfg, logs)
        meter = CpuMeter({"server": server.pid})
        meter.start()
        samples = await _sample_rss(server, load, args.sample_s, say)
        cpu = meter.stop()
        # the load process has exited by now: its own count of its CPU
        cpu["load"] = round(load.final.get("load_cpu_s", 0.0) / max(1e-9, samples[-1][0]), 3)
        cpu["other"] = round(max(0.0, cpu["other"] - cpu["load"]), 3)
        ended = datetime.now(UTC)
        sweeper = await _sweeper_lateness(dsn, datetime.fromtimestamp(registered_at, UTC), ended)
        say(
            f"soak: load done; sweeper: holds {_brief(sweeper['holds'])}, "
            f"jobs {_brief(sweeper['jobs'])}"
        )
        drained_at = await _drain(receiver, args.drain)
        deliveries = await _delivery_lag(dsn, receiver, registered_at, drained_at)
        say(
            f"soak: deliveries {_brief(deliveries)}, {deliveries['undelivered']} of "
            f"{deliveries['events']} not delivered"
        )
        server_log = server.log_tail()
    finally:
        await stop_servers([server])
        await receiver.stop()
    return {
        "rss": rss_figures(samples),
        "rss_samples": samples,
        "load": load.final,
        "sweeper": sweeper,
        "deliveries": deliveries,
        "cpu_cores": cpu,
        "receiver": {"requests": receiver.requests, "duplicates": receiver.duplicates},
        "server_log_tail": server_log[-1500:],
    }


def _brief(figures: dict[str, Any]) -> str:
    parts = [f"{q} {figures[q]:.2f} s" for q in ("p50", "p99", "max") if figures[q] is not None]
    return ", ".join(parts) or "none"


async def _register(url: str, key: str, target: str) -> None:
    import httpx

    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        response = await http.post(
            "/v1/webhook-endpoints",
            headers={"Authorization": f"Bearer {key}"},
            json={"url": target, "events": EVENT_TYPES},
        )
        if response.status_code != 201:
            raise RuntimeError(
                f"registering the webhook endpoint: {response.status_code} {response.text}"
            )


class _LoadProcess:
    """bench/soak_load.py: fed its settings on stdin, read for running totals on stdout."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.latest: dict[str, Any] = {}
        self.final: dict[str, Any] = {}
        self.reader = asyncio.create_task(self._read())

    @property
    def pid(self) -> int:
        return self.process.pid

    @classmethod
    async def start(cls, cfg: dict[str, Any], logs: Path) -> _LoadProcess:
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(
                p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p
            ),
        }
        with open(logs / "soak-load.log", "ab") as errors:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "bench.soak_load",
                cwd=ROOT,
                env=env,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=errors,
                limit=2**22,
            )
        assert process.stdin is not None
        process.stdin.write(json.dumps(cfg).encode() + b"\n")
        await process.stdin.drain()
        return cls(process)

    async def _read(self) -> None:
        assert self.process.stdout is not None
        async for line in self.process.stdout:
            totals = json.loads(line)
            self.latest = totals
            if totals.get("final"):
                self.final = totals

    @property
    def running(self) -> bool:
        return not self.reader.done()

    async def wait(self) -> None:
        await self.reader
        await self.process.wait()
        if not self.final:
            raise RuntimeError(
                f"the soak load exited with {self.process.returncode} and no "
                "totals (its stderr is soak-load.log)"
            )


async def _sample_rss(
    server: UvicornServer, load: _LoadProcess, every_s: float, say: Progress
) -> list[tuple[float, float, int]]:
    """(seconds, RSS MiB, streams closed so far) every `every_s` until the load ends."""
    samples: list[tuple[float, float, int]] = []
    t0 = time.monotonic()
    next_say = t0 + 30
    try:
        while load.running:
            now = time.monotonic()
            samples.append(
                (
                    round(now - t0, 2),
                    round(rss_kib(server.pid) / 1024, 2),
                    int(load.latest.get("streams_closed", 0)),
                )
            )
            if now >= next_say:
                next_say += 30
                say(
                    f"soak: {now - t0:.0f} s, RSS {samples[-1][1]:.0f} MiB, "
                    f"{samples[-1][2]} streams closed, "
                    f"{load.latest.get('holds_ok', 0)} holds, {load.latest.get('jobs_ok', 0)} jobs"
                )
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(load.reader), every_s)
    finally:
        if load.running:
            load.process.kill()
    await load.wait()
    samples.append(
        (
            round(time.monotonic() - t0, 2),
            round(rss_kib(server.pid) / 1024, 2),
            int(load.final.get("streams_closed", 0)),
        )
    )
    return samples


async def _sweeper_lateness(dsn: str, start: datetime, end: datetime) -> dict[str, Any]:
    """From the database: each hold created since `start` the sweeper expired
    (closed_at − expires_at) and each such job it timed out (completed_at − expires_at), with
    those still open past expiry at `end`. Holds of jobs are left out: their job's timeout
    releases them."""
    import asyncpg

    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        holds_closed = await conn.fetch(
            "SELECT extract(epoch FROM closed_at - expires_at)::float8 AS late FROM holds "
            "WHERE job_id IS NULL AND status = 'expired' AND created_at >= $1",
            start,
        )
        holds_open = await conn.fetch(
            "SELECT extract(epoch FROM $2 - expires_at)::float8 AS late FROM holds "
            "WHERE job_id IS NULL AND status = 'open' AND expires_at < $2 AND created_at >= $1",
            start,
            end,
        )
        jobs_closed = await conn.fetch(
            "SELECT extract(epoch FROM completed_at - expires_at)::float8 AS late FROM jobs "
            "WHERE status = 'failed' AND error LIKE 'timed out%' AND created_at >= $1",
            start,
        )
        jobs_open = await conn.fetch(
            "SELECT extract(epoch FROM $2 - expires_at)::float8 AS late FROM jobs "
            "WHERE status = 'processing' AND expires_at < $2 AND created_at >= $1",
            start,
            end,
        )
        created = await conn.fetchval(
            "SELECT count(*) FROM holds WHERE job_id IS NULL AND created_at >= $1", start
        )
    finally:
        await conn.close()
    return {
        "holds": {
            **lateness([r["late"] for r in holds_closed], [r["late"] for r in holds_open]),
            "created": created,
        },
        "jobs": lateness([r["late"] for r in jobs_closed], [r["late"] for r in jobs_open]),
    }


async def _drain(receiver: DeliveryReceiver, most_s: float) -> float:
    """Wait, at most `most_s`, until no delivery arrived for 3 s (counted from the drain's start
    at the earliest); the wall time it ended."""
    deadline = time.monotonic() + most_s
    started = time.time()
    while time.monotonic() < deadline:
        if time.time() - max(started, receiver.last_arrival) >= 3.0:
            break
        await asyncio.sleep(0.25)
    return time.time()


async def _delivery_lag(
    dsn: str, receiver: DeliveryReceiver, registered_at: float, end: float
) -> dict[str, Any]:
    """Every journal event of the endpoint's types written after it was registered, against
    the receiver's arrivals."""
    import asyncpg

    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        rows = await conn.fetch(
            "SELECT account_id, seq, extract(epoch FROM created_at)::float8 AS at FROM events "
            "WHERE type = ANY($1) AND created_at > to_timestamp($2)",
            EVENT_TYPES,
            registered_at,
        )
    finally:
        await conn.close()
    created = {(r["account_id"], int(r["seq"])): float(r["at"]) for r in rows}
    return delivery_lag(created, receiver.arrivals, end)


def _rows(result: Result, m: dict[str, Any], args: argparse.Namespace, late_max: float) -> None:
    rss, load, cpu = m["rss"], m["load"], m["cpu_cores"]
    duration = args.duration
    rows = [
        Row(
            "server RSS slope, second half, MiB/min",
            rss["slope_mib_per_min"],
            None,
            Goal("value", "<=", args.max_rss_slope_mib_per_min, "MiB/min"),
        ),
        Row(
            "server RSS growth, MiB: second half (vs first)",
            rss["second_half_growth_mib"],
            rss["first_half_growth_mib"],
        ),
        Row("server RSS at the end (vs start), MiB", rss["end_mib"], rss["start_mib"]),
        Row(
            "server RSS per 1,000 closed streams, KiB (second half)",
            rss["kib_per_1000_streams"],
            None,
        ),
        Row("streams closed (30 % aborted) per s", load.get("streams_closed", 0) / duration, None),
        Row("holds/s (vs asked)", load.get("holds_ok", 0) / duration, args.hold_rate),
        Row("jobs/s (vs asked)", load.get("jobs_ok", 0) / duration, args.job_rate),
    ]
    for kind, noun in (("holds", "hold expiry"), ("jobs", "job timeout")):
        late = m["sweeper"][kind]
        rows += [
            Row(f"{noun} lateness p50, s", late["p50"], None),
            Row(
                f"{noun} lateness p99, s",
                late["p99"],
                None,
                Goal("value", "<=", args.max_sweeper_late_s, "s"),
            ),
            Row(f"{noun} lateness max, s", late["max"], None, Goal("value", "<=", late_max, "s")),
            Row(f"{kind} still open past expiry at the end", late["open_past_expiry"], None),
        ]
    lag = m["deliveries"]
    rows += [
        Row("delivery lag p50, s", lag["p50"], None),
        Row(
            "delivery lag p99, s",
            lag["p99"],
            None,
            Goal("value", "<=", args.max_delivery_lag_s, "s"),
        ),
        Row("delivery lag max, s", lag["max"], None),
        Row("events not delivered after the drain (of all)", lag["undelivered"], lag["events"]),
        Row("server CPU, cores (machine)", cpu.get("server"), cpu.get("machine")),
        Row("PostgreSQL CPU, cores", cpu.get("postgres"), None),
        Row("load CPU, cores", cpu.get("load"), None),
        Row("other processes' CPU, cores", cpu.get("other"), None),
    ]
    result.rows += rows
    flags = {
        "server RSS slope": "--max-rss-slope-mib-per-min",
        "hold expiry lateness max": "--max-sweeper-late-max-s",
        "job timeout lateness max": "--max-sweeper-late-max-s",
        "hold expiry lateness p99": "--max-sweeper-late-s",
        "job timeout lateness p99": "--max-sweeper-late-s",
        "delivery lag p99": "--max-delivery-lag-s",
    }
    for row in rows:
        if row.goal is None:
            continue
        flag = next(f for prefix, f in flags.items() if row.metric.startswith(prefix))
        if row.creditstream is None:
            result.bounds_failed.append(f"{row.metric}: nothing measured ({flag})")
        elif row.reached is False:
            result.bounds_failed.append(
                f"{row.metric} = {row.creditstream:.2f} exceeds {row.goal.target:g} ({flag})"
            )
    _notes(result, m)


def _notes(result: Result, m: dict[str, Any]) -> None:
    load = m["load"]
    result.notes.append(
        f"streams: {load.get('streams_opened', 0)} opened, "
        f"{load.get('streams_closed', 0)} closed ({load.get('streams_aborted', 0)} "
        f"aborted), {load.get('streams_failed', 0)} failed to open"
    )
    failed = {k: v for k, v in load.get("statuses", {}).items() if not k.split()[-1][:1] == "2"}
    if failed or load.get("errors"):
        result.notes.append(f"load: non-2xx {failed}, errors {load.get('errors')}")
    late = {k: load[k] for k in ("holds_late", "jobs_late") if load.get(k)}
    if late:
        result.notes.append(
            f"requests sent over 1 s after their time (the load fell behind): {late}"
        )
    result.notes.append(
        "lateness counts what is still open past expiry at the end at its "
        "lateness so far; delivery lag counts undelivered events at the drain's "
        "end (both lower bounds of what they will be)"
    )
    if note := contention_note([m["cpu_cores"].get("other")]):
        result.notes.append(note)
    if m["audit"]["mismatches"]:
        result.notes.append(f"AUDIT FAILED after the run: {m['audit']['first']}")
    if m["receiver"]["duplicates"]:
        result.notes.append(f"receiver: {m['receiver']['duplicates']} events delivered twice")
