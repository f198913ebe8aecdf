"""The load of `bench soak`, in a process of its own (`python -m bench.soak_load`).

Reads one JSON line of settings on stdin and, for `duration` seconds, runs together:
- stream churn: `churn_clients` picows clients, each in a loop: connect to /v1/stream with a user
  token, subscribe to one of the stream accounts, stay 0.05–0.5 s, then close (a CLOSE frame),
  or, for `abort_share` of them, abort the TCP connection with no close at all;
- keyed holds: `POST /v1/holds` with a fresh Idempotency-Key at `hold_rate` per second over all
  accounts, never captured or released, so every one waits for the sweeper;
- hanging jobs: `POST /v1/jobs` with an external provider at `job_rate` per second; nobody
  reports back, so every one waits for the sweeper's timeout.
Requests are paced (an open loop): a server that falls behind does not slow the load down.
Every `report_s` it prints one JSON line of running totals; at the end, one with `"final": true`.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time
import uuid
from collections import Counter
from typing import Any

from bench.fleet_clients import open_subscriber
from bench.loadgen import RawConnection
from bench.measure import raise_nofile
from bench.servers import run

STAY_S = (0.05, 0.5)
GIVE_UP_S = 5.0


class Totals:
    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.statuses: Counter[str] = Counter()

    def snapshot(self, final: bool = False, **extra: float) -> dict[str, Any]:
        return {
            "t": time.time(),
            "final": final,
            **self.counts,
            **extra,
            "statuses": dict(self.statuses),
            "errors": dict(self.errors.most_common(8)),
        }


class _ChurnState:
    """What picows' Subscriber records (bench.fleet_clients.FleetState); churn reads none of
    it, the balance updates pushed meanwhile are not measured here."""

    def __init__(self) -> None:
        self.heartbeat_s = 25.0
        self.receipts: list[tuple[str, int, float]] = []
        self.close_codes: Counter[str] = Counter()


async def churn(cfg: dict[str, Any], totals: Totals, stop_at: float) -> None:
    state = _ChurnState()
    targets: list[list[str]] = cfg["stream_targets"]
    abort_share: float = cfg["abort_share"]

    async def client(seed: int) -> None:
        rng = random.Random(seed)
        while time.monotonic() < stop_at:
            url, account_id = rng.choice(targets)
            try:
                transport = await open_subscriber(state, url, account_id)
            except Exception as exc:  # counted; a refused stream is a finding, not a crash
                totals.counts["streams_failed"] += 1
                totals.errors[f"stream {type(exc).__name__}: {str(exc)[:80]}"] += 1
                await asyncio.sleep(0.2)
                continue
            totals.counts["streams_opened"] += 1
            await asyncio.sleep(rng.uniform(*STAY_S))
            if rng.random() < abort_share:
                transport.underlying_transport.abort()  # no CLOSE frame, no FIN: a RST
                totals.counts["streams_aborted"] += 1
            else:
                transport.send_close()
                transport.disconnect()
            totals.counts["streams_closed"] += 1
            state.receipts.clear()  # pushed updates are not kept: memory here stays flat

    await asyncio.gather(*(client(i) for i in range(cfg["churn_clients"])))


async def paced_posts(
    cfg: dict[str, Any],
    totals: Totals,
    stop_at: float,
    kind: str,
    path: str,
    rate: float,
    body_of: Any,
) -> None:
    """`rate` requests per second spread over a few keep-alive connections, each request due at
    its own time whatever the previous ones took (late ones go at once and are counted)."""
    if rate <= 0:
        return
    loop = asyncio.get_running_loop()
    host, port = cfg["host"], cfg["port"]
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Authorization: {cfg['authorization']}\r\nContent-Type: application/json\r\n"
    )
    # about one request a second per connection: latencies under a second keep to the pace
    workers = max(1, min(200, round(rate)))
    interval = workers / rate

    async def worker(index: int) -> None:
        rng = random.Random(f"{kind}{index}")
        conn: RawConnection | None = None
        due = time.monotonic() + index / rate
        while due < stop_at and time.monotonic() < stop_at:  # what is still due then: dropped
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            elif wait < -1.0:
                totals.counts[f"{kind}_late"] += 1
            due += interval
            body = json.dumps(body_of(rng)).encode()
            data = (
                head + f"Idempotency-Key: {uuid.uuid4().hex}\r\nContent-Length: {len(body)}\r\n\r\n"
            ).encode() + body
            try:
                if conn is None or conn.transport is None or conn.transport.is_closing():
                    _, conn = await loop.create_connection(RawConnection, host, port)
                status = await conn.request(data)
            except (ConnectionError, OSError) as exc:
                totals.errors[f"{kind} {type(exc).__name__}"] += 1
                conn = None
                continue
            totals.statuses[f"{kind} {status}"] += 1
            totals.counts[f"{kind}_ok" if 200 <= status < 300 else f"{kind}_failed"] += 1
        if conn is not None and conn.transport is not None:
            conn.transport.close()

    await asyncio.gather(*(worker(i) for i in range(workers)))


async def report(totals: Totals, every_s: float, stop_at: float) -> None:
    while time.monotonic() < stop_at:
        await asyncio.sleep(min(every_s, max(0.0, stop_at - time.monotonic())))
        write(totals.snapshot())


def write(line: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(line) + "\n")
    sys.stdout.flush()


async def generate(cfg: dict[str, Any]) -> None:
    totals = Totals()
    stop_at = time.monotonic() + cfg["duration"]
    accounts: list[str] = cfg["accounts"]

    def hold(rng: random.Random) -> dict[str, Any]:
        return {"account_id": rng.choice(accounts), "amount": 1}

    def job(rng: random.Random) -> dict[str, Any]:
        # an external provider: the client would call it, nobody ever reports back
        return {
            "account_id": rng.choice(accounts),
            "operation": "audio",
            "provider": cfg["job_provider"],
        }

    cpu0 = time.process_time()
    load = asyncio.gather(
        churn(cfg, totals, stop_at),
        paced_posts(cfg, totals, stop_at, "holds", "/v1/holds", cfg["hold_rate"], hold),
        paced_posts(cfg, totals, stop_at, "jobs", "/v1/jobs", cfg["job_rate"], job),
        report(totals, cfg["report_s"], stop_at),
    )
    try:  # handshakes and requests still waiting on the server then are given up
        await asyncio.wait_for(load, cfg["duration"] + GIVE_UP_S)
    except TimeoutError:
        totals.counts["given_up_at_the_end"] += 1
    write(totals.snapshot(final=True, load_cpu_s=round(time.process_time() - cpu0, 2)))


def main() -> None:
    cfg = json.loads(sys.stdin.readline())
    raise_nofile(cfg["churn_clients"] * 2 + 1024)
    run(lambda: generate(cfg), "uvloop")


if __name__ == "__main__":
    main()
