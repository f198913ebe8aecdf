"""The docker-compose deployment without Docker: PostgreSQL, Redis, an S3 endpoint (moto), a
one-shot migration, two app replicas behind a balancer. Restarting a replica with SIGTERM loses
no request and no event: its streams close with 1012 and resume on the other replica."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from tests.e2e.balancer import TcpBalancer
from tests.e2e.resuming import ResumingSubscriber, settle_and_stop
from tests.support import ROOT, LiveServer, audit_mismatches, make_server_key

ACCOUNTS = [f"replica-{uuid.uuid4().hex[:8]}-{i}" for i in range(4)]


@pytest.fixture
def s3_bucket_env() -> Iterator[dict[str, str]]:
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    ).create_bucket(Bucket="results")
    yield {
        "CREDITSTREAM_S3_ENDPOINT_URL": endpoint,
        "CREDITSTREAM_S3_BUCKET": "results",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    server.stop()


async def load(url: str, key: str, stop: asyncio.Event, succeeded: list[str]) -> None:
    """Grants with an Idempotency-Key each, retried with the same key until answered."""
    async with httpx.AsyncClient(
        base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=10
    ) as http:
        index = 0
        while not stop.is_set():
            account = ACCOUNTS[index % len(ACCOUNTS)]
            ref = f"load-{uuid.uuid4().hex}"
            for _ in range(100):
                try:
                    response = await http.post(
                        f"/v1/accounts/{account}/grants",
                        headers={"Idempotency-Key": ref},
                        json={"amount": 1, "reason": "purchase", "ref": ref},
                    )
                    if response.status_code == 201:
                        succeeded.append(ref)
                        break
                    assert response.status_code in (409, 503), response.text
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.05)
            index += 1


async def whole_journal(http: httpx.AsyncClient, account: str) -> list[dict[str, Any]]:
    """Every journal line of the account, page by page (the load writes more than a page)."""
    lines: list[dict[str, Any]] = []
    after = ""
    while True:
        page = (await http.get(f"/v1/accounts/{account}/entries?after={after}&limit=500")).json()
        lines += page["entries"]
        if not page["has_more"]:
            return lines
        after = page["next_after"]


async def test_sigterm_restart_of_one_replica_loses_nothing(
    pg_url: str,
    redis_url: str,
    s3_bucket_env: dict[str, str],
    live_server_factory: Callable[..., LiveServer],
) -> None:
    migrate = subprocess.run(
        [sys.executable, "-m", "cli", "migrate"],
        cwd=ROOT,
        timeout=60,
        env={**os.environ, "CREDITSTREAM_DATABASE_URL": pg_url},
        capture_output=True,
        text=True,
    )
    assert migrate.returncode == 0, migrate.stderr
    key = await make_server_key(pg_url)
    env = {"CREDITSTREAM_REDIS_URL": redis_url, "CREDITSTREAM_AUTO_MIGRATE": "0", **s3_bucket_env}
    one, two = live_server_factory(pg_url, **env), live_server_factory(pg_url, **env)
    balancer = await TcpBalancer([one.port, two.port]).start()
    subscribers = [ResumingSubscriber(balancer.url, key, a) for a in ACCOUNTS * 2]
    readers = [asyncio.create_task(s.run()) for s in subscribers]
    stop, succeeded = asyncio.Event(), list[str]()
    loaders = [asyncio.create_task(load(balancer.url, key, stop, succeeded)) for _ in range(4)]
    try:
        await asyncio.sleep(2)
        await asyncio.to_thread(one.stop)  # SIGTERM, then wait for it to exit
        await asyncio.sleep(2)
        await asyncio.to_thread(one.start)
        await asyncio.sleep(2)
        stop.set()
        await asyncio.gather(*loaders)
        async with httpx.AsyncClient(
            base_url=two.url, headers={"Authorization": f"Bearer {key}"}
        ) as http:
            heads = {a: (await http.get(f"/v1/accounts/{a}")).json()["seq"] for a in ACCOUNTS}
            journal = {a: await whole_journal(http, a) for a in ACCOUNTS}
        await settle_and_stop(subscribers, readers, heads)
    finally:
        await balancer.stop()

    assert any(1012 in s.close_codes for s in subscribers), "no stream saw the 1012 close"
    for subscriber in subscribers:
        assert subscriber.seqs == list(range(1, heads[subscriber.account] + 1))
    refs = [
        e["ref"]
        for a in ACCOUNTS
        for e in journal[a]
        if e["type"] == "grant" and e["reason"] == "purchase"
    ]
    assert sorted(refs) == sorted(set(refs)), "a retried request took effect twice"
    assert set(succeeded) <= set(refs), "an acknowledged request is missing from the journal"
    assert len(succeeded) > 20
    assert await audit_mismatches(pg_url) == []
