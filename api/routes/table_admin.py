"""The operators' routes of the `/v1` table (api/routes/table.py): liveness, readiness,
metrics, the OpenAPI document and its reference page, and the console."""

from __future__ import annotations

from api.console.pages import console_page
from api.docs_page import docs_page
from api.routes import misc as misc
from api.routing import ApiRoute

ADMIN_ROUTES: list[ApiRoute] = [
    ApiRoute("GET", "/healthz", misc.healthz, "Liveness", "none"),
    ApiRoute(
        "GET", "/readyz", misc.readyz, "Readiness: database and broker", "none", errors=(503,)
    ),
    ApiRoute("GET", "/metrics", misc.prometheus_metrics, "Prometheus metrics", "none"),
    ApiRoute("GET", "/openapi.json", misc.openapi_document, "This OpenAPI document", "none"),
    ApiRoute(
        "GET",
        "/docs",
        docs_page,
        "This API reference as a page (Swagger UI, served by "
        "the app itself: no request leaves the origin)",
        "none",
    ),
    ApiRoute(
        "GET",
        "/console",
        console_page,
        "The operator console (a page; signed in by a one-time link from `creditstream "
        "console`), when CREDITSTREAM_CONSOLE=1; otherwise 404",
        "none",
        errors=(404,),
    ),
]
