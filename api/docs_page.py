"""The API reference at `GET /docs`: Swagger UI rendering `/openapi.json`, every asset served by
the app itself (`/docs/assets/…`, from the `swagger-ui-py` package), so the page works offline
and sends no request off the machine.

The page answers with its own Content-Security-Policy: scripts only from this origin (the
initialiser is a file, not an inline script), requests only to this origin (the document and
"Try it out"). Swagger UI sets element styles from script and draws some icons as `data:` images,
hence `style-src 'unsafe-inline'` and `img-src data:`; neither can run code.

Why swagger-ui-py and not swagger-ui-bundle: the latter's newest release ships Swagger UI 4.15,
which refuses an `openapi: 3.1.0` document ("does not specify a valid version field"); ours is
3.1 (pydantic's JSON Schema). swagger-ui-py ships Swagger UI 5.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

DOCS_PATH = "/docs"
ASSETS_PATH = "/docs/assets"
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self'; connect-src 'self'; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}

PAGE = f"""<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>creditstream API reference</title>
  <link rel="stylesheet" href="{ASSETS_PATH}/swagger-ui.css">
  <link rel="icon" type="image/png" href="{ASSETS_PATH}/favicon-32x32.png">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="{ASSETS_PATH}/swagger-ui-bundle.js"></script>
  <script src="{DOCS_PATH}/init.js"></script>
</body>
</html>
"""

# the document's URL is relative to the page, so the reference also works under a path prefix
INIT_JS = """window.ui = SwaggerUIBundle({
  url: new URL("../openapi.json", window.location.href.replace(/\\/?$/, "/")).href,
  dom_id: "#swagger-ui",
  deepLinking: true,
  presets: [SwaggerUIBundle.presets.apis],
  layout: "BaseLayout",
  validatorUrl: null
});
"""


def swagger_ui_dir() -> Path:
    """The dist files of the installed `swagger-ui-py`, found without importing the package
    (its `__init__` imports every web framework adapter it ships)."""
    spec = importlib.util.find_spec("swagger_ui")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the swagger-ui-py package is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "static"


async def docs_page(request: Request) -> Response:
    return HTMLResponse(PAGE, headers=HEADERS)


async def docs_init(request: Request) -> Response:
    return Response(INIT_JS, media_type="text/javascript", headers=HEADERS)


def docs_routes() -> list[BaseRoute]:
    """The initialiser and the assets (the page itself is in the /v1 route table, so the
    document lists it)."""
    return [
        Route(DOCS_PATH + "/init.js", docs_init, methods=["GET"]),
        Mount(ASSETS_PATH, StaticFiles(directory=swagger_ui_dir()), name="docs-assets"),
    ]
