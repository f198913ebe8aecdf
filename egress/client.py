"""The one way out: every HTTP request the server makes goes through an `Egress`.

Each request names the `Rules` of its purpose (webhook deliveries, result fetches, the
built-in provider's callbacks): whether private addresses are allowed, a deadline for the
whole exchange (resolving, connecting, every redirect hop, and the body the caller reads
inside the block), and how many redirects are followed, each hop checked again. Each purpose
has its own aiohttp session and connection pool, so a connection one purpose opened to an
allowed address is never reused by another.

aiohttp rather than httpx: a delivery through httpx/httpcore cost ~1.4 ms of CPU (60% of the
deliverer's), through aiohttp a fraction of that (docs/PERFORMANCE.md, "webhooks"); its pool
finds a kept-alive connection by a dictionary look-up, where httpcore's looked at every
connection it held on every request."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass

import aiohttp
from yarl import URL

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
from egress.pinned import PINNED, PinnedBackend, Target

MAX_CONNECTIONS = 1000  # per purpose
KEEPALIVE_S = 30.0
REDIRECTS = (301, 302, 303, 307, 308)
# aiohttp's own timeouts are off: the deadline of `Rules` bounds the whole exchange
NO_TIMEOUT = aiohttp.ClientTimeout(total=None, connect=None, sock_read=None, sock_connect=None)


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


@dataclass(frozen=True)
class Answer:
    """A response whose body is read inside the `Egress.open` block."""

    status_code: int
    headers: Mapping[str, str]  # case-insensitive
    url: str  # of the last hop
    _response: aiohttp.ClientResponse

    def chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives (decoded from its content-encoding)."""
        return self._response.content.iter_any()


class Egress:
    def __init__(
        self, webhooks: Rules, results: Rules, callbacks: Rules, resolve: Resolve = system_resolve
    ) -> None:
        self.webhooks, self.results, self.callbacks = webhooks, results, callbacks
        self.resolve = resolve
        self.backend = PinnedBackend()
        self._sessions: dict[str, aiohttp.ClientSession] = {}
        self._ssl_context: ssl.SSLContext | None = None

    async def aclose(self) -> None:
        sessions, self._sessions = list(self._sessions.values()), {}
        for session in sessions:
            await session.close()

    async def check(self, url: str | URL, rules: Rules) -> Target:
        """Where a request to `url` would connect; `UrlRefused` when it may not."""
        return await self._check(parse(str(url)), rules)

    async def _check(self, parsed: URL, rules: Rules) -> Target:
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
                f"Could not resolve {(parsed.host or '')[:100]!r} within {rules.deadline_s:g} s",
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
    ) -> AsyncIterator[Answer]:
        """The response, its body unread; the deadline covers what the block reads of it.
        Raises `UrlRefused` (before anything is sent to that hop) or `Failed`."""
        try:
            async with asyncio.timeout(rules.deadline_s):
                response = await self._send(method, url, rules, content, headers)
                try:
                    yield Answer(response.status, response.headers, str(response.url), response)
                finally:
                    response.release()
        except TimeoutError as exc:
            raise Failed(f"no complete answer within the {rules.deadline_s:g} s deadline") from exc
        except aiohttp.ClientError as exc:
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
    ) -> aiohttp.ClientResponse:
        session = self._session(rules)
        parsed = parse(url)
        for hop in range(rules.max_redirects + 1):
            # the URL object that was checked is the one requested: one parse, one host
            target = await self._check(parsed, rules)
            pinned = PINNED.set(target)
            try:
                response = await session.request(
                    method, parsed, data=content, headers=headers, allow_redirects=False
                )
            finally:
                PINNED.reset(pinned)
            location = response.headers.get("location")
            if response.status not in REDIRECTS or not location or rules.max_redirects == 0:
                return response
            response.release()
            if hop == rules.max_redirects:
                break
            try:
                parsed = parse(str(response.url.join(URL(location))))
            except ValueError as exc:
                raise UrlRefused("invalid_url", f"Invalid redirect to {location[:100]!r}") from exc
            if response.status == 303 or (response.status in (301, 302) and method == "POST"):
                method, content = "GET", None
        raise Failed(f"more than {rules.max_redirects} redirects")

    def _session(self, rules: Rules) -> aiohttp.ClientSession:
        session = self._sessions.get(rules.purpose)
        if session is None:
            if self._ssl_context is None:  # loading the CA bundle takes ~70 ms: once
                self._ssl_context = ssl.create_default_context()
            connector = aiohttp.TCPConnector(
                limit=MAX_CONNECTIONS,
                limit_per_host=0,
                ssl=self._ssl_context,
                use_dns_cache=False,  # the resolver only answers with the checked addresses
                resolver=self.backend.resolver,
                socket_factory=self.backend.socket_for,
                keepalive_timeout=KEEPALIVE_S,
            )
            session = aiohttp.ClientSession(
                connector=connector,
                timeout=NO_TIMEOUT,
                cookie_jar=aiohttp.DummyCookieJar(),  # nothing carries over between requests
                trust_env=False,  # no proxy from the environment: it would connect unchecked
                auto_decompress=True,
            )
            self._sessions[rules.purpose] = session
        return session
