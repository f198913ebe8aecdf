"""The one way out: every HTTP request the server makes goes through an `Egress`.

Each request names the `Rules` of its purpose (webhook deliveries, result fetches, the
built-in provider's callbacks): whether private addresses are allowed, a deadline for the
whole exchange (resolving, connecting, every redirect hop, and the body the caller reads
inside the block; httpx's own timeout bounds each read, not the whole), and how many
redirects are followed, each hop checked again. Each purpose has its own connection pools, so
a connection one purpose opened to an allowed address is never reused by another.

A caller with many requests in flight spreads them over `shard`s, each its own small pool:
httpcore's pool looks at every connection it holds (some checks at every pair) on every
request, which costs more than the request itself past a dozen connections."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass

import httpx

from egress.addresses import (
    IpNetwork,
    Resolve,
    UrlRefused,
    addresses_for,
    host_of,
    parse,
    port_of,
    system_resolve,
)
from egress.pinned import PINNED, PinnedBackend, PinnedTransport, Target

LIMITS = httpx.Limits(max_connections=1000, max_keepalive_connections=200, keepalive_expiry=30.0)


class Failed(Exception):
    """The request went out but did not complete: a transport error, the deadline, too many
    redirects."""


@dataclass(frozen=True)
class Rules:
    purpose: str  # names the connection pool, and the requests in messages
    allow_private: bool
    allow_setting: str  # the environment variable an operator sets to allow private addresses
    deadline_s: float
    max_redirects: int = 0  # 0: a 3xx is the answer
    also_allowed: tuple[IpNetwork, ...] = ()  # non-public networks allowed all the same


class Egress:
    def __init__(
        self, webhooks: Rules, results: Rules, callbacks: Rules, resolve: Resolve = system_resolve
    ) -> None:
        self.webhooks, self.results, self.callbacks = webhooks, results, callbacks
        self.resolve = resolve
        self.backend = PinnedBackend()
        self._clients: dict[tuple[str, int], httpx.AsyncClient] = {}
        self._ssl_context: ssl.SSLContext | None = None

    async def aclose(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            await client.aclose()

    async def check(self, url: str, rules: Rules) -> Target:
        """Where a request to `url` would connect; `UrlRefused` when it may not."""
        parsed = parse(url)
        try:
            async with asyncio.timeout(rules.deadline_s):
                addresses = await addresses_for(
                    parsed,
                    rules.allow_private,
                    rules.allow_setting,
                    self.resolve,
                    rules.also_allowed,
                )
        except TimeoutError as exc:
            raise UrlRefused(
                "url_unresolvable",
                f"Could not resolve {parsed.host[:100]!r} within {rules.deadline_s:g} s",
            ) from exc
        return Target(host_of(parsed), port_of(parsed), tuple(addresses))

    @asynccontextmanager
    async def open(
        self,
        method: str,
        url: str,
        rules: Rules,
        *,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        shard: int = 0,
    ) -> AsyncIterator[httpx.Response]:
        """The response, its body unread; the deadline covers what the block reads of it.
        Raises `UrlRefused` (before anything is sent to that hop) or `Failed`."""
        try:
            async with asyncio.timeout(rules.deadline_s):
                response = await self._send(method, url, rules, content, headers, shard)
                try:
                    yield response
                finally:
                    await response.aclose()
        except TimeoutError as exc:
            raise Failed(f"no complete answer within the {rules.deadline_s:g} s deadline") from exc
        except httpx.HTTPError as exc:
            raise Failed(
                f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            ) from exc

    async def _send(
        self,
        method: str,
        url: str,
        rules: Rules,
        content: bytes | None,
        headers: Mapping[str, str] | None,
        shard: int,
    ) -> httpx.Response:
        client = self._client(rules, shard)
        for hop in range(rules.max_redirects + 1):
            target = await self.check(url, rules)
            request = client.build_request(
                method, url, content=content, headers=headers, timeout=rules.deadline_s
            )
            pinned = PINNED.set(target)
            try:
                response = await client.send(request, stream=True)
            finally:
                PINNED.reset(pinned)
            location = response.headers.get("location")
            if not response.is_redirect or not location or rules.max_redirects == 0:
                return response
            await response.aclose()
            if hop == rules.max_redirects:
                break
            url = str(response.url.join(location))
            if response.status_code == 303 or (
                response.status_code in (301, 302) and method == "POST"
            ):
                method, content = "GET", None
        raise Failed(f"more than {rules.max_redirects} redirects")

    def _client(self, rules: Rules, shard: int) -> httpx.AsyncClient:
        client = self._clients.get((rules.purpose, shard))
        if client is None:
            if self._ssl_context is None:  # loading the CA bundle takes ~70 ms: once
                self._ssl_context = httpx.create_ssl_context(trust_env=False)
            transport = PinnedTransport(self.backend, LIMITS, self._ssl_context)
            client = httpx.AsyncClient(transport=transport, trust_env=False, follow_redirects=False)
            self._clients[(rules.purpose, shard)] = client
        return client
