"""`/results/…`: generation results of the local store, served so that none can act in our
origin. A provider chooses a result's type, and an SVG, HTML or XML file would otherwise run
its scripts with the API's origin: every result goes out with `X-Content-Type-Options:
nosniff` and a CSP that allows no script (`sandbox`), and active types as downloads."""

from __future__ import annotations

import os
from typing import Any

from starlette.responses import Response
from starlette.staticfiles import StaticFiles

from storage.objects import disposition_for

RESULT_CSP = (
    "default-src 'none'; img-src 'self'; media-src 'self'; style-src 'unsafe-inline'; sandbox"
)


class ResultFiles(StaticFiles):
    async def check_config(self) -> None:
        """No results directory yet (nothing stored so far) is a 404 per file, not a 500."""

    def file_response(
        self, full_path: Any, stat_result: os.stat_result, scope: Any, status_code: int = 200
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Content-Security-Policy"] = RESULT_CSP
        disposition = disposition_for(
            response.headers.get("content-type", ""), os.path.basename(str(full_path))
        )
        if disposition is not None:
            response.headers["Content-Disposition"] = disposition
        return response
