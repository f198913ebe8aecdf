"""A stream client that follows one account, reconnecting and resuming by seq forever."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence

import httpx
import websockets

EVENT_TYPES = ("balance.updated", "job.updated", "credits.low")


class ResumingSubscriber:
    """Follows one account through the balancer, reconnecting and resuming by seq."""

    def __init__(self, url: str, key: str, account: str) -> None:
        self.url = url.replace("http://", "ws://") + f"/v1/stream?token={key}"
        self.account = account
        self.seqs: list[int] = []
        self.close_codes: list[int | None] = []
        self.stopping = False

    async def run(self) -> None:
        while not self.stopping:
            try:
                async with websockets.connect(self.url, open_timeout=5) as ws:
                    await ws.recv()  # hello
                    after = self.seqs[-1] if self.seqs else 0
                    await ws.send(
                        json.dumps(
                            {"op": "subscribe", "account_id": self.account, "after_seq": after}
                        )
                    )
                    async for raw in ws:
                        message = json.loads(raw)
                        if message.get("type") in EVENT_TYPES:
                            self.seqs.append(message["seq"])
            except websockets.ConnectionClosed as closed:
                self.close_codes.append(closed.rcvd.code if closed.rcvd else None)
            except (TimeoutError, OSError, websockets.InvalidHandshake):
                self.close_codes.append(None)
            await asyncio.sleep(0.1)


class ResumingSseSubscriber:
    """The same over Server-Sent Events, resuming with Last-Event-ID after every drop."""

    def __init__(self, url: str, key: str, account: str) -> None:
        self.url = url + f"/v1/stream/sse?account_id={account}"
        self.headers = {"Authorization": f"Bearer {key}"}
        self.account = account
        self.seqs: list[int] = []
        self.close_codes: list[int | None] = []
        self.stopping = False

    async def run(self) -> None:
        async with httpx.AsyncClient(timeout=httpx.Timeout(5, read=60)) as http:
            while not self.stopping:
                headers = dict(self.headers)
                if self.seqs:
                    headers["Last-Event-ID"] = str(self.seqs[-1])
                try:
                    async with http.stream("GET", self.url, headers=headers) as response:
                        self.close_codes.append(response.status_code)
                        if response.status_code == 200:
                            await self._read(response)
                except httpx.HTTPError:
                    self.close_codes.append(None)
                await asyncio.sleep(0.1)

    async def _read(self, response: httpx.Response) -> None:
        event: str | None = None
        async for line in response.aiter_lines():
            if line.startswith("event: "):
                event = line[len("event: ") :]
            elif line.startswith("data: ") and event in EVENT_TYPES:
                self.seqs.append(json.loads(line[len("data: ") :])["seq"])
            elif not line:
                event = None


async def settle_and_stop(
    subscribers: Sequence[ResumingSubscriber | ResumingSseSubscriber],
    readers: list[asyncio.Task[None]],
    heads: dict[str, int],
    timeout_s: float = 10,
) -> None:
    """Give every subscriber time to reach its account's head, then stop them all."""
    try:
        for _ in range(int(timeout_s * 10)):
            if all(s.seqs and s.seqs[-1] == heads[s.account] for s in subscribers):
                break
            await asyncio.sleep(0.1)
    finally:
        for subscriber in subscribers:
            subscriber.stopping = True
        for task in readers:
            task.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
