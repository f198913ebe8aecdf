"""G9: the database becomes unreachable under load (its TCP path is cut, dropping every open
connection and refusing new ones) → fast 503s, nothing half-written; when it is back, the same
process recovers without a restart."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Callable

import httpx

from tests.e2e.balancer import TcpBalancer
from tests.support import LiveServer, audit_mismatches, free_port, make_server_key


async def test_database_outage_gives_fast_503_and_recovers(
    pg_url: str, live_server_factory: Callable[..., LiveServer]
) -> None:
    key = await make_server_key(pg_url)
    proxy_port = free_port()
    proxy = await TcpBalancer([5432], port=proxy_port).start()
    proxied_url = pg_url.replace("127.0.0.1:5432", f"127.0.0.1:{proxy_port}")
    # the proxy runs on this event loop: start the server from a thread so it can be served
    server = await asyncio.to_thread(live_server_factory, proxied_url)
    account = f"outage-{uuid.uuid4().hex[:8]}"
    acknowledged: list[str] = []
    async with httpx.AsyncClient(
        base_url=server.url, timeout=30, headers={"Authorization": f"Bearer {key}"}
    ) as http:

        async def grant() -> httpx.Response:
            ref = uuid.uuid4().hex
            response = await http.post(
                f"/v1/accounts/{account}/grants",
                json={"amount": 1, "reason": "purchase", "ref": ref},
            )
            if response.status_code == 201:
                acknowledged.append(ref)
            return response

        assert (await grant()).status_code == 201
        await proxy.stop()  # the database is gone
        outage = []
        for _ in range(20):
            started = time.monotonic()
            response = await grant()
            outage.append((response.status_code, time.monotonic() - started, response.json()))
        assert {status for status, _, _ in outage} == {503}
        assert max(elapsed for _, elapsed, _ in outage) < 5.0
        assert all(body["error"]["code"] == "service_unavailable" for _, _, body in outage)
        assert (await http.get(f"/v1/accounts/{account}")).status_code == 503
        assert (await http.get("/readyz")).status_code == 503

        proxy = await TcpBalancer([5432], port=proxy_port).start()  # it is back
        back = time.monotonic()
        deadline = time.monotonic() + 15
        while (await grant()).status_code != 201:
            assert time.monotonic() < deadline, "the app did not recover"
            await asyncio.sleep(0.2)
        recovered_s = time.monotonic() - back
        assert (await http.get("/readyz")).status_code == 200
        entries = (await http.get(f"/v1/accounts/{account}/entries?limit=500")).json()["entries"]
    await proxy.stop()
    refs = [e["ref"] for e in entries if e["type"] == "grant" and e["reason"] == "purchase"]
    assert sorted(refs) == sorted(acknowledged)  # every 201 is there, and nothing else
    assert await audit_mismatches(pg_url) == []
    report = (
        f"database outage test: {len(outage)} writes during the outage, all 503 "
        f"service_unavailable, slowest {max(e for _, e, _ in outage) * 1000:.0f} ms; "
        f"recovered {recovered_s * 1000:.0f} ms after the database came back, no restart; "
        f"{len(acknowledged)} acknowledged grants all in the journal, none else; audit clean"
    )
    print("\n" + report)
    append_to_report(report)


def append_to_report(line: str) -> None:
    if path := os.environ.get("CREDITSTREAM_RELIABILITY_REPORT"):
        with open(path, "a", encoding="utf-8") as out:
            out.write(line + "\n")
