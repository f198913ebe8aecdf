"""The OpenAPI 3.1 document, built from the route table and the request schemas."""

from __future__ import annotations

import re
from typing import Any

from api.routing import ApiRoute

ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
        }
    },
}
QUERY_TYPES = {
    "after": "integer",
    "limit": "integer",
    "after_seq": "integer",
    "wait": "number",
    "period": "string",
    "status": "string",
    "account_id": "string",
    "token": "string",
    "ticket": "string",
}
ACCOUNT_ID_PATTERN = "^[A-Za-z0-9_.:@-]{1,128}$"
STATUS_DESCRIPTIONS = {
    400: "Bad request: malformed JSON or an impossible operation",
    401: "Missing, malformed or expired credentials",
    402: "Insufficient credits",
    403: "Not allowed for these credentials (another account, or a server key needed)",
    404: "Not found",
    409: "Conflict: the resource's state forbids it, or an Idempotency-Key reused with "
    "another body",
    413: "Request body too large",
    422: "Validation failed",
    426: "Upgrade required",
    429: "Too many requests (Retry-After says when to retry)",
    502: "The generation provider failed",
    503: "Temporarily unavailable (Retry-After says when to retry)",
}
# Routes whose success is not JSON: Prometheus text, an event stream, a WebSocket upgrade.
SUCCESS_MEDIA_TYPES = {
    "/metrics": "text/plain",
    "/v1/stream/sse": "text/event-stream",
    "/docs": "text/html",
    "/console": "text/html",
}


def build(routes: list[ApiRoute], version: str) -> dict[str, Any]:
    paths: dict[str, Any] = {}
    components: dict[str, Any] = {"Error": ERROR_SCHEMA}
    for route in routes:
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route, components)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "creditstream",
            "version": version,
            "description": "Prepaid credits with holds, pay-on-success jobs and live push.",
        },
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A server key (sk_…) or a user token (HS256 JWT)",
                }
            },
        },
    }


def _operation(route: ApiRoute, components: dict[str, Any]) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": route.summary,
        "operationId": f"{route.method.lower()}_{re.sub(r'[^a-z0-9]+', '_', route.path.lower())}".strip(
            "_"
        ),
        "parameters": [
            {
                "name": name,
                "in": "path",
                "required": True,
                "schema": {
                    "type": "string",
                    "pattern": ACCOUNT_ID_PATTERN if name == "account_id" else "^.{1,64}$",
                },
            }
            for name in re.findall(r"{(\w+)}", route.path)
        ]
        + [
            {"name": q, "in": "query", "required": False, "schema": _query_schema(q)}
            for q in route.query
        ],
        "responses": {str(route.success): _success(route)},
    }
    if route.auth == "signed":
        op["description"] = (
            "Signed: X-Signature: t=<unix>,v1=<hex HMAC-SHA256 of "
            "'t.body'> with the provider's webhook secret."
        )
        op["parameters"].append(
            {"name": "X-Signature", "in": "header", "required": True, "schema": {"type": "string"}}
        )
    elif route.auth != "none":
        op["security"] = [{"bearer": []}]
        op["description"] = (
            "Server key only."
            if route.auth == "server"
            else "Server key, or a user token of the account itself."
        )
    if route.method == "POST":
        op["parameters"].append(
            {
                "name": "Idempotency-Key",
                "in": "header",
                "required": False,
                "schema": {"type": "string", "maxLength": 255},
            }
        )
    if route.body is not None:
        schema = route.body.model_json_schema(ref_template="#/components/schemas/{model}")
        for name, definition in schema.pop("$defs", {}).items():
            components[name] = definition
        components[route.body.__name__] = schema
        op["requestBody"] = {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {"$ref": f"#/components/schemas/{route.body.__name__}"}
                }
            },
        }
    for status in route.errors:
        if status < 400:  # another success answer, e.g. 200 beside 201 for "already there"
            op["responses"][str(status)] = _success(route)
            continue
        op["responses"][str(status)] = {
            "description": STATUS_DESCRIPTIONS.get(status, "Error"),
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
        }
    return op


def _success(route: ApiRoute) -> dict[str, Any]:
    if route.success == 101:
        return {"description": "Switching Protocols: the WebSocket is open"}
    media_type = SUCCESS_MEDIA_TYPES.get(route.path)
    if media_type is not None:  # text; an event stream's events are not one JSON schema
        return {"description": "Success", "content": {media_type: {"schema": {}}}}
    return {
        "description": "Success",
        "content": {"application/json": {"schema": {"type": "object"}}},
    }


def _query_schema(name: str) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": QUERY_TYPES.get(name, "string")}
    if name == "account_id":
        schema["pattern"] = ACCOUNT_ID_PATTERN
    return schema
