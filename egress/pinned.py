"""Connect to the address that was checked, never to a second resolution of the name.

httpx resolves a URL's host itself when it connects, so a check that resolved it first could
pass a public answer while the connect gets 127.0.0.1 (DNS rebinding). This network backend
takes the addresses from the request's `Target` (a context variable the client sets around
each send; httpcore opens a connection in the task that asks for it) and refuses to connect a
host that has none: nothing reaches the network unchecked. The URL is unchanged, so the Host
header and TLS SNI (and certificate checking) still name the host."""

from __future__ import annotations

import contextvars
import select
import socket
import ssl
import typing
from dataclasses import dataclass

import httpcore
import httpx

from egress.addresses import IpAddress


@dataclass(frozen=True)
class Target:
    host: str
    port: int
    addresses: tuple[IpAddress, ...]


PINNED: contextvars.ContextVar[Target | None] = contextvars.ContextVar(
    "egress_target", default=None
)


class PinnedBackend(httpcore.AsyncNetworkBackend):
    def __init__(self) -> None:
        self._inner = httpcore.AnyIOBackend()
        self.tried: list[tuple[str, int]] = []  # the last connects tried, for tests and debugging

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        target = PINNED.get()
        if target is None or (target.host, target.port) != (host.lower(), port):
            raise httpcore.ConnectError(f"no checked address for {host[:100]}:{port}")
        failure: Exception | None = None
        for address in target.addresses:  # in the resolver's order, as a plain connect would
            self.tried = [*self.tried[-99:], (str(address), port)]
            try:
                stream = await self._inner.connect_tcp(
                    str(address), port, timeout, local_address, socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
                continue
            return _Stream(stream)
        raise failure or httpcore.ConnectError(f"{host[:100]} has no address")

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("unix sockets are not an outbound destination")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class _Stream(httpcore.AsyncNetworkStream):
    """anyio's stream, but asking whether an idle connection was dropped costs one poll():
    httpcore asks it of every pooled connection on every request, and anyio builds its
    attribute table anew for each question (a few ms per request with a pool of 16)."""

    def __init__(self, inner: httpcore.AsyncNetworkStream) -> None:
        self._inner = inner
        self._socket: socket.socket | None = inner.get_extra_info("socket")

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return await self._inner.read(max_bytes, timeout)

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        await self._inner.write(buffer, timeout)

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.AsyncNetworkStream:
        return _Stream(await self._inner.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str) -> typing.Any:
        if info == "is_readable":  # readable while idle: the server closed it (or misbehaves)
            fd = -1 if self._socket is None else self._socket.fileno()
            if fd < 0:
                return True
            poller = select.poll()
            poller.register(fd, select.POLLIN)
            return bool(poller.poll(0))
        return self._inner.get_extra_info(info)


class PinnedTransport(httpx.AsyncHTTPTransport):
    """httpx's transport over a connection pool whose connects go through `PinnedBackend`
    (httpx takes no network backend of its own, so its pool is replaced)."""

    def __init__(
        self, backend: PinnedBackend, limits: httpx.Limits, ssl_context: ssl.SSLContext
    ) -> None:
        super().__init__(verify=ssl_context, trust_env=False, limits=limits)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl_context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=backend,
        )
