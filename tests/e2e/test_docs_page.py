"""The API reference at `/docs` in a real Chromium: Swagger UI renders the app's own OpenAPI
document, with every asset from the app (nothing fetched from a CDN), under the page's CSP."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx

from tests.e2e.test_browser import browser, context  # noqa: F401 - fixtures

if TYPE_CHECKING:
    from playwright.sync_api import BrowserContext, ConsoleMessage

RENDER_MS = 20_000


def test_docs_renders_every_operation_from_this_origin_only(
    context: BrowserContext,  # noqa: F811 - the fixture imported above
    sqlite_url: str,
    live_server_factory: Any,
) -> None:
    from playwright.sync_api import expect

    server = live_server_factory(sqlite_url)
    origin = urlsplit(server.url).netloc
    requested: list[str] = []
    problems: list[str] = []
    context.on("request", lambda request: requested.append(request.url))

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":  # CSP violations are reported here
            problems.append(message.text)

    page = context.new_page()
    page.on("console", on_console)
    page.on("pageerror", lambda exc: problems.append(str(exc)))
    page.goto(server.url + "/docs")

    hold = page.locator(".opblock-post .opblock-summary-path[data-path='/v1/holds']")
    expect(hold).to_be_visible(timeout=RENDER_MS)
    expect(page.locator(".opblock-summary").first).to_be_visible()
    document = httpx.get(server.url + "/openapi.json", timeout=10).json()
    operations = sum(len(methods) for methods in document["paths"].values())
    expect(page.locator(".opblock-summary")).to_have_count(operations, timeout=RENDER_MS)
    assert page.get_by_text("Unable to render this definition").count() == 0
    # opening an operation shows its schemas and error answers
    hold.click()
    expect(page.locator(".opblock-post.is-open .responses-table")).to_be_visible()
    expect(page.locator(".opblock-post.is-open").get_by_text("402").first).to_be_visible()

    offsite = [
        url
        for url in requested
        if urlsplit(url).scheme not in ("data", "blob") and urlsplit(url).netloc != origin
    ]
    assert offsite == [], offsite
    assert any(url.endswith("/openapi.json") for url in requested)
    assert problems == [], problems


def test_docs_page_headers_and_assets(sqlite_url: str, live_server_factory: Any) -> None:
    server = live_server_factory(sqlite_url)
    with httpx.Client(base_url=server.url, timeout=10) as http:
        page = http.get("/docs")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        csp = page.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "connect-src 'self'" in csp
        assert "<script>" not in page.text  # no inline script: the CSP would block it
        for asset in (
            "/docs/assets/swagger-ui-bundle.js",
            "/docs/assets/swagger-ui.css",
            "/docs/init.js",
        ):
            answer = http.get(asset)
            assert answer.status_code == 200, asset
        assert http.get("/docs/assets/../../asgi.py").status_code == 404
        document = http.get("/openapi.json").json()
        assert document["paths"]["/docs"]["get"]["responses"]["200"]["content"]["text/html"]


def test_every_operation_documents_its_body_answers_and_errors() -> None:
    from api import openapi
    from asgi import API_ROUTES

    document = openapi.build(API_ROUTES, "test")
    for route in API_ROUTES:
        operation = document["paths"][route.path][route.method.lower()]
        responses = operation["responses"]
        success = responses[str(route.success)]
        if "application/json" in success.get("content", {}):
            schema = success["content"]["application/json"]["schema"]
            assert schema.get("type") or schema.get("$ref"), route.path
        for status in route.errors:
            if status >= 400:
                answer = responses[str(status)]
                assert answer["description"] != "Error", (route.path, status)
                assert answer["content"]["application/json"]["schema"] == {
                    "$ref": "#/components/schemas/Error"
                }
        if route.body is not None:
            assert operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
