"""Which addresses outbound requests may reach: http(s) URLs whose host resolves only to public
addresses, unless the purpose allows private ones (a local set-up, `…_ALLOW_PRIVATE=1`).

IPv6 forms that carry an IPv4 address (NAT64, 6to4, Teredo, IPv4-mapped, -compatible and
-translated) are judged by the IPv4 inside: on a NAT64 network `64:ff9b::a9fe:a9fe` is the
metadata address. Other IPv6 must be global unicast (2000::/3), so reserved and site-local
ranges that Python's `is_global` still calls global are refused. A refusal never says what a
name resolved to: that would map the internal network for whoever asks."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable

from yarl import URL

SCHEMES = ("http", "https")
IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolve = Callable[[str, int], Awaitable[list[IpAddress]]]

GLOBAL_UNICAST_V6 = ipaddress.ip_network("2000::/3")
NAT64_WELL_KNOWN = ipaddress.ip_network("64:ff9b::/96")
IPV4_TRANSLATED = ipaddress.ip_network("::ffff:0:0:0/96")
IPV4_COMPATIBLE = ipaddress.ip_network("::/96")
# never public, whatever `is_global` says: local-use NAT64 (RFC 8215), whose IPv4 may sit
# anywhere in the address, and the documentation ranges
REFUSED_V6 = tuple(
    ipaddress.ip_network(n) for n in ("64:ff9b:1::/48", "2001:db8::/32", "3fff::/20")
)


class UrlRefused(ValueError):
    """The URL is malformed, does not resolve, or reaches a non-public address."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def parse(url: str) -> URL:
    """The URL as it is checked and then requested: the same parsed object both times, so
    the host that was checked is the host that is connected to."""
    try:
        parsed = URL(url)
    except (TypeError, ValueError) as exc:
        raise UrlRefused("invalid_url", f"Expected an http(s) URL, got {url[:100]!r}") from exc
    if parsed.scheme not in SCHEMES or not parsed.host:
        raise UrlRefused("invalid_url", f"Expected an http(s) URL with a host, got {url[:100]!r}")
    if parsed.raw_user is not None or parsed.raw_password is not None:
        raise UrlRefused("invalid_url", "Credentials in an outbound URL are not accepted")
    return parsed


def host_of(url: URL) -> str:
    """The host as it is resolved and connected to (IDNA-encoded, no IPv6 brackets)."""
    return (url.raw_host or "").lower()


def port_of(url: URL) -> int:
    return url.port or (443 if url.scheme == "https" else 80)


def literal(host: str) -> IpAddress | None:
    try:
        return ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None


async def system_resolve(host: str, port: int) -> list[IpAddress]:
    """The addresses the system resolver gives for `host`."""
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise UrlRefused(
            "url_unresolvable", f"Could not resolve {host[:100]!r}: {type(exc).__name__}"
        ) from exc
    return [ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos]


async def addresses_for(
    url: URL,
    allow_private: bool,
    allow_setting: str,
    resolve: Resolve,
    also_allowed: tuple[IpNetwork, ...] = (),
) -> list[IpAddress]:
    """The addresses a request to `url` may connect to, resolved once; `UrlRefused` when there
    is none, or when any is neither public nor in `also_allowed` (unless `allow_private`)."""
    host = host_of(url)
    found = literal(host)
    addresses = (
        [found] if found is not None else list(dict.fromkeys(await resolve(host, port_of(url))))
    )
    if not addresses:
        raise UrlRefused("url_unresolvable", f"{host[:100]!r} resolves to no address")
    if not allow_private and not all(
        is_public(address) or any(address in n for n in also_allowed) for address in addresses
    ):
        raise UrlRefused(
            "url_not_allowed",
            f"{host[:100]} resolves to a non-public address "
            "(loopback, private, link-local or reserved); an operator may allow it "
            f"with {allow_setting}=1",
        )
    return addresses


def embedded_ipv4(address: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address] | None:
    """The IPv4 addresses an IPv6 address stands for, or None when it carries none."""
    if address.ipv4_mapped is not None:
        return [address.ipv4_mapped]
    if address.sixtofour is not None:
        return [address.sixtofour]
    if address.teredo is not None:
        return list(address.teredo)
    low32 = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if any(address in net for net in (NAT64_WELL_KNOWN, IPV4_TRANSLATED, IPV4_COMPATIBLE)):
        return [low32]
    return None


def is_public(address: IpAddress) -> bool:
    if isinstance(address, ipaddress.IPv4Address):
        return (
            address.is_global
            and not address.is_multicast
            and not address.is_reserved
            and not address.is_unspecified
        )
    inner = embedded_ipv4(address)
    if inner is not None:
        return all(is_public(v4) for v4 in inner)
    return (
        address in GLOBAL_UNICAST_V6
        and address.is_global
        and not address.is_multicast
        and not address.is_site_local
        and not any(address in n for n in REFUSED_V6)
    )
