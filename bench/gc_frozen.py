"""`asgi:app` with `gc.freeze()` once start-up is done: one of the levers the benchmark issue
names, measured (`bench push --gc-freeze`, `bench connections --gc-freeze`) without changing
asgi.py. Everything allocated during start-up (modules, routes, settings, the pools) moves to
the permanent generation, so the collector stops walking it on every full collection.
"""

from __future__ import annotations

import gc
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import asgi

Message = MutableMapping[str, Any]
_app = asgi.create_app()


async def app(
    scope: MutableMapping[str, Any],
    receive: Callable[[], Awaitable[Message]],
    send: Callable[[Message], Awaitable[None]],
) -> None:
    if scope["type"] != "lifespan":
        await _app(scope, receive, send)
        return

    async def send_then_freeze(message: Message) -> None:
        if message["type"] == "lifespan.startup.complete":
            gc.collect()
            gc.freeze()
        await send(message)

    await _app(scope, receive, send_then_freeze)
