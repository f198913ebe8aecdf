"""The console's routes: its page, sign-in and sign-out, and its JSON API."""

from __future__ import annotations

from starlette.routing import BaseRoute, Route

from api.console import actions, pages, views

A = "/console/api/accounts/{account_id}"
E = "/console/api/webhook-endpoints/{endpoint_id}"


def console_routes(enabled: bool) -> list[BaseRoute]:
    """None when the console is off, so every /console path answers 404 (`GET /console`
    itself is in the /v1 table, and says 404 when off)."""
    if not enabled:
        return []
    return [
        Route("/console/console.js", pages.console_script, methods=["GET"]),
        Route("/console/console.css", pages.console_style, methods=["GET"]),
        Route("/console/sign-in", pages.sign_in, methods=["GET"]),
        Route("/console/sign-out", pages.sign_out, methods=["POST"]),
        Route("/console/api/session", views.session_info, methods=["GET"]),
        Route(A, views.account_overview, methods=["GET"]),
        Route(A + "/entries", views.account_entries, methods=["GET"]),
        Route(A + "/grants", actions.grant, methods=["POST"]),
        Route(A + "/stream-ticket", actions.stream_ticket, methods=["POST"]),
        Route("/console/api/refunds", actions.refund, methods=["POST"]),
        Route("/console/api/holds/{hold_id}/release", actions.release, methods=["POST"]),
        Route("/console/api/webhook-endpoints", views.webhook_endpoints, methods=["GET"]),
        Route(E + "/enable", actions.enable_endpoint, methods=["POST"]),
        Route(E + "/test", actions.send_test_event, methods=["POST"]),
        Route(E + "/resend", actions.resend_events, methods=["POST"]),
    ]
