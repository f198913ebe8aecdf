"""The `/v1` route table, assembled from its resource groups in the order the routes are matched
and documented (the seed-compatible one is api/routes/seeds/; asgi.py joins them)."""

from __future__ import annotations

from api.routes.table_accounts import ACCOUNT_ROUTES
from api.routes.table_admin import ADMIN_ROUTES
from api.routes.table_catalogue import CATALOGUE_ROUTES
from api.routes.table_holds_jobs import HOLD_ROUTES, JOB_ROUTES
from api.routes.table_streams import STREAM_ROUTES, TOKEN_ROUTES
from api.routes.table_webhooks import PROVIDER_WEBHOOK_ROUTES, WEBHOOK_ENDPOINT_ROUTES
from api.routing import ApiRoute

V1_ROUTES: list[ApiRoute] = [
    *ACCOUNT_ROUTES,
    *HOLD_ROUTES,
    *JOB_ROUTES,
    *PROVIDER_WEBHOOK_ROUTES,
    *CATALOGUE_ROUTES,
    *TOKEN_ROUTES,
    *WEBHOOK_ENDPOINT_ROUTES,
    *STREAM_ROUTES,
    *ADMIN_ROUTES,
]
