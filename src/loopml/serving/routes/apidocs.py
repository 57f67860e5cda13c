"""``GET /docs``: the API's Swagger UI, from the package's own files.

FastAPI's own ``/docs`` loads Swagger UI from a CDN, without integrity and without a content
security policy: whoever serves (or alters) that script runs code in the browser of the operator
who pastes the admin token into "Authorize". Here Swagger UI's files are part of the package
(``serving/static/``: ``swagger-ui-bundle.js`` and ``swagger-ui.css`` exactly as in the
swagger-ui-dist release below, with its licence files), served by ``GET /static/{name}`` like the
status page's, and the page's Content-Security-Policy lets it load and call nothing but this server.

To move to another release: ``make swagger-ui SWAGGER_UI_VERSION=x.y.z``, then put the version and
the SHA-256 sums it prints in ``SWAGGER_UI`` below (tests/api/test_docs_page.py compares them with
the files, so the served bytes cannot change unnoticed).
"""

from __future__ import annotations

import functools

import jinja2
from fastapi import APIRouter, Request
from starlette.responses import HTMLResponse

from loopml.serving.routes.page import static_url

__all__ = ["DOCS_CSP", "SWAGGER_UI", "router"]

router = APIRouter(tags=["operations"])

# Scripts, styles and API calls of this server only; Swagger UI's icons are data: URIs in its CSS.
# Its React components set styles through the DOM (allowed); no inline <script> or <style>.
DOCS_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)

# The vendored release (npm package swagger-ui-dist) and the SHA-256 of each file taken from it.
SWAGGER_UI = {
    "version": "5.35.0",
    "swagger-ui-bundle.js": "e6a898692f2d768e807c3ba4626068a69a2c5dd960dd6c76f3e4d3a3de180af2",
    "swagger-ui.css": "5ed08757e53da3e026d6cbecc61fe5d43585c9560b302d534ad56692519a273d",
}


@router.get("/docs", include_in_schema=False)
async def docs(request: Request) -> HTMLResponse:
    """Swagger UI for ``/openapi.json`` (the same gate as the schema: see ``Guard.docs``)."""
    openapi_url = request.scope.get("root_path", "") + (request.app.openapi_url or "")
    page = _template().render(title=request.app.title, openapi_url=openapi_url)
    return HTMLResponse(
        page,
        headers={
            "Content-Security-Policy": DOCS_CSP,
            "Cache-Control": "no-cache",
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
        },
    )


@functools.cache
def _template() -> jinja2.Template:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("loopml.serving", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    env.globals["static_url"] = static_url
    return env.get_template("docs.html")
