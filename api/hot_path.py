"""The write routes a product calls for every generation — open a hold, capture it, release it,
charge — served in one pass: matched by their own patterns, handed to their endpoint, errors
answered from the same table (api/errors.py), without the walk through Starlette's middleware
layers and its router's list of every route.

What a client sees is what the full stack answers: the same endpoints, bodies, status codes and
headers. A request this path does not take (another method or route, a `root_path`, a CORS
request while CORS is configured) goes through the full stack."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

# the paths taken here, all POST (the route table's own templates)
HOT_PATHS = (
    "/v1/holds",
    "/v1/holds/{hold_id}/capture",
    "/v1/holds/{hold_id}/release",
    "/v1/accounts/{account_id}/charges",
)
# the last segment of a path with parameters: a quick refusal before any pattern is tried
_SUFFIXES = ("/capture", "/release", "/charges")


class HotRoutes:
    """`match` says whether a request is one of `HOT_PATHS` (and puts what the router would
    into its scope); `serve` answers it."""

    def __init__(
        self,
        routes: Iterable[BaseRoute],
        exception_handlers: dict[Any, Any],
        skip_origin: bool,
    ) -> None:
        """`routes`: the app's own, in order; `skip_origin`: leave requests with an `Origin`
        header to the full stack (its CORS middleware answers them)."""
        self._exact: dict[str, Route] = {}
        self._patterned: list[Route] = []
        for route in routes:
            if not isinstance(route, Route) or route.path not in HOT_PATHS:
                continue
            if route.methods is None or "POST" not in route.methods:
                continue
            if "{" in route.path:
                self._patterned.append(route)
            else:
                self._exact.setdefault(route.path, route)
        self._handlers = exception_handlers
        self._skip_origin = skip_origin

    def match(self, scope: Scope) -> bool:
        if scope["method"] != "POST" or scope.get("root_path"):
            return False
        path: str = scope["path"]
        route = self._exact.get(path)
        params: dict[str, Any] = {}
        if route is None:
            if not path.endswith(_SUFFIXES):
                return False
            for candidate in self._patterned:
                found = candidate.path_regex.match(path)
                if found is not None:
                    route, params = candidate, found.groupdict()
                    break
            else:
                return False
        if self._skip_origin and any(name == b"origin" for name, _ in scope["headers"]):
            return False
        scope["route"] = route
        scope["endpoint"] = route.endpoint
        scope["path_params"] = params
        return True

    async def serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive, send)
        try:
            response: Response = await scope["endpoint"](request)
        except Exception as exc:
            handler = self._handler_for(exc)
            if handler is None:
                raise
            await (await handler(request, exc))(scope, receive, send)
            if handler is self._handlers.get(Exception):
                raise  # as Starlette's outermost layer does: the server logs it too
            return
        await response(scope, receive, send)

    def _handler_for(self, exc: Exception) -> Any:
        for cls in type(exc).__mro__:
            if cls in self._handlers:
                return self._handlers[cls]
        return None
