"""The catalogue routes of the `/v1` table (api/routes/table.py): prices, plans and quotes."""

from __future__ import annotations

from api import schemas
from api.routes import misc as misc
from api.routing import ApiRoute

CATALOGUE_ROUTES: list[ApiRoute] = [
    ApiRoute("GET", "/v1/pricing", misc.pricing, "The price catalogue", "none"),
    ApiRoute(
        "GET",
        "/v1/plans",
        misc.plans,
        "Plans (name, price, credits, how long their credits last) and each plan's feature limits",
        "none",
    ),
    ApiRoute(
        "POST",
        "/v1/quote",
        misc.quote,
        "Price of a generation, whether the account can "
        "afford it, and what its plan's feature limit leaves",
        "owner",
        schemas.QuoteBody,
        200,
        (400, 401, 403, 413, 422),
    ),
]
