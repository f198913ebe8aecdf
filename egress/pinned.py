"""Connect to the address that was checked, never to a second resolution of the name.

An HTTP client resolves a URL's host itself when it connects, so a check that resolved it
first could pass a public answer while the connect gets 127.0.0.1 (DNS rebinding). Here
aiohttp's connector asks `PinnedBackend`'s resolver, which answers with the addresses of the
request's `Target` (a context variable the client sets around each send; aiohttp connects in
the task that sends) and with nothing for a host that has none. Every socket is then made by
`PinnedBackend.socket_for`, which refuses an address that is not the target's: this also
covers literal IP hosts, which aiohttp does not resolve. Nothing reaches the network
unchecked. The URL is unchanged, so the Host header and TLS SNI (and certificate checking)
still name the host."""

from __future__ import annotations

import contextvars
import ipaddress
import socket
from dataclasses import dataclass
from typing import Any

from aiohttp.abc import AbstractResolver, ResolveResult

from egress.addresses import IpAddress


@dataclass(frozen=True)
class Target:
    host: str
    port: int
    addresses: tuple[IpAddress, ...]


PINNED: contextvars.ContextVar[Target | None] = contextvars.ContextVar(
    "egress_target", default=None
)

# aiohappyeyeballs' address tuple: family, type, proto, canonical name, socket address
AddrInfo = tuple[int, int, int, str, tuple[Any, ...]]


class Unchecked(OSError):
    """A connect to an address no check allowed (aiohttp reports it as a connect error)."""


class PinnedBackend:
    def __init__(self) -> None:
        self.resolver = _PinnedResolver()
        self.tried: list[tuple[str, int]] = []  # the last connects tried, for tests and debugging

    def socket_for(self, addr_info: AddrInfo) -> socket.socket:
        """The socket of one connect attempt, only to an address of the request's target."""
        family, type_, proto, _, sockaddr = addr_info
        address, port = str(sockaddr[0]).split("%", 1)[0], int(sockaddr[1])
        target = PINNED.get()
        if (
            target is None
            or target.port != port
            or ipaddress.ip_address(address) not in target.addresses
        ):
            raise Unchecked(f"no check allowed a connect to this address on port {port}")
        self.tried = [*self.tried[-99:], (address, port)]
        return socket.socket(family, type_, proto)


class _PinnedResolver(AbstractResolver):
    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        target = PINNED.get()
        if target is None or (target.host, target.port) != (host.lower(), port):
            raise Unchecked(f"no checked address for {host[:100]}:{port}")
        # in the resolver's order, as a plain connect would try them
        return [
            ResolveResult(
                hostname=host,
                host=str(address),
                port=port,
                family=socket.AF_INET6 if address.version == 6 else socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
            for address in target.addresses
        ]

    async def close(self) -> None:
        pass
