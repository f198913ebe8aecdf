"""Where outbound webhooks may go: http(s) URLs whose host resolves only to public addresses,
unless the operator allows private ones (`CREDITSTREAM_WEBHOOK_ALLOW_PRIVATE=1`). Checked at
registration and again before every delivery, since a name may resolve elsewhere later (DNS
rebinding)."""

from __future__ import annotations

import asyncio
import ipaddress
import socket

import httpx

SCHEMES = ("http", "https")
IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class UrlRefused(ValueError):
    """The URL is malformed, does not resolve, or reaches a non-public address."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def parse(url: str) -> httpx.URL:
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError) as exc:
        raise UrlRefused("invalid_url", f"Expected an http(s) URL, got {url[:100]!r}") from exc
    if parsed.scheme not in SCHEMES or not parsed.host:
        raise UrlRefused("invalid_url", f"Expected an http(s) URL with a host, got {url[:100]!r}")
    if parsed.userinfo:
        raise UrlRefused("invalid_url", "Credentials in a webhook URL are not accepted")
    return parsed


async def check(url: str, allow_private: bool, timeout_s: float) -> None:
    """Raise `UrlRefused` unless a delivery to `url` may be attempted now."""
    parsed = parse(url)
    if allow_private:
        return
    for address in await resolve(parsed.host, parsed.port or (443 if parsed.scheme == "https"
                                                                else 80), timeout_s):
        if not is_public(address):
            raise UrlRefused("url_not_allowed", f"{parsed.host} resolves to {address}, which is "
                             "not a public address (loopback, private, link-local or reserved); "
                             "an operator may allow it with CREDITSTREAM_WEBHOOK_ALLOW_PRIVATE=1")


async def resolve(host: str, port: int, timeout_s: float) -> list[IpAddress]:
    loop = asyncio.get_running_loop()
    try:
        infos = await asyncio.wait_for(
            loop.getaddrinfo(host, port, type=socket.SOCK_STREAM), timeout_s)
    except (OSError, TimeoutError, UnicodeError) as exc:
        raise UrlRefused("url_unresolvable", f"Could not resolve {host[:100]!r}: "
                         f"{type(exc).__name__}") from exc
    addresses = {ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos}
    if not addresses:
        raise UrlRefused("url_unresolvable", f"{host[:100]!r} resolves to no address")
    return sorted(addresses, key=str)


def is_public(address: IpAddress) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_global and not address.is_multicast
