"""Outbound HTTP, in one place: the address policy, connects pinned to the checked address,
deadlines and redirects. Nothing else in the server opens outbound connections."""

from egress.addresses import IpAddress, Resolve, UrlRefused, is_public, parse, system_resolve
from egress.client import Answer, Egress, Failed, Rules
from egress.pinned import Target

__all__ = [
    "Answer",
    "Egress",
    "Failed",
    "IpAddress",
    "Resolve",
    "Rules",
    "Target",
    "UrlRefused",
    "is_public",
    "parse",
    "system_resolve",
]
