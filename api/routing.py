"""What a route table is made of: each route with its OpenAPI description, so the document
cannot drift. A leaf: the tables (api/routes/table.py, api/routes/seeds/) import it, and the
composition root (asgi.py) joins them."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

Endpoint = Callable[[Request], Awaitable[Response]]

# the errors every mutating route may answer
MUTATING = (400, 401, 402, 403, 409, 413, 422, 429, 503)


@dataclass(frozen=True)
class ApiRoute:
    method: str
    path: str
    endpoint: Endpoint | None
    summary: str
    auth: str  # "none" | "server" | "owner" (server key or the account's own user token)
    body: type[BaseModel] | None = None
    success: int = 200
    errors: tuple[int, ...] = ()
    query: tuple[str, ...] = ()
    routed: bool = True  # False: served elsewhere (realtime/), listed here for the document


def starlette_routes(table: Iterable[ApiRoute]) -> list[Route]:
    """One Starlette route per path, dispatching on the method."""
    by_path: dict[str, dict[str, Endpoint]] = {}
    for route in table:
        if route.routed and route.endpoint is not None:
            by_path.setdefault(route.path, {})[route.method] = route.endpoint
    return [
        Route(path, _dispatch(methods), methods=list(methods)) for path, methods in by_path.items()
    ]


def _dispatch(methods: dict[str, Endpoint]) -> Endpoint:
    if len(methods) == 1:
        return next(iter(methods.values()))

    async def endpoint(request: Request) -> Response:
        return await methods[request.method](request)

    return endpoint
