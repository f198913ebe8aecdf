"""Handing a committed job to its provider, and where built-in providers call back."""

from __future__ import annotations

from starlette.requests import Request

from api.context import AppContext
from core.jobs import Job


def callback_base(ctx: AppContext, request: Request) -> str:
    """Where built-in providers call back: `CREDITSTREAM_PUBLIC_URL`, else this server's own
    listening address (the socket that accepted the request, ASGI's `server`). Never the
    request's Host header, which any caller chooses (that would let one aim our signed
    callbacks at any host)."""
    if ctx.settings.public_url:
        return ctx.settings.public_url
    host, port = request.scope.get("server") or ("127.0.0.1", None)
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}" + (f":{port}" if port else "")


def dispatch(ctx: AppContext, job: Job, base_url: str) -> None:
    """Hand a committed job to its provider; external providers were called by the client."""
    provider = ctx.providers.get(job.provider)
    if provider is not None:
        provider.submit(job, base_url)
