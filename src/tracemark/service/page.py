"""The verification page: a static HTML page, one script and one stylesheet, served at ``/``.

The page is a client of the JSON API only (``/v1/collections``, ``/v1/collections/{name}``,
``/v1/collections/{name}/verify`` and ``/search``): it holds no state on the server and
every asset comes from this package (``tracemark/service/static/``), never a CDN. The API
key the user types is kept in a JavaScript variable for the life of the tab (never in
``localStorage``, ``sessionStorage`` or a cookie).

Every answer of :data:`router` carries a strict ``Content-Security-Policy``
(:data:`CSP`: scripts and styles from this origin only, no inline code; images also from
``blob:`` URLs, the page's previews of the chosen file), ``X-Content-Type-Options:
nosniff`` and ``Referrer-Policy: no-referrer``. The routes are left out of the OpenAPI
schema: they are not part of the versioned API.
"""

from __future__ import annotations

from importlib.resources import files

from fastapi import APIRouter
from fastapi.responses import Response

__all__ = ["router", "ASSETS", "CSP"]

CSP = ("default-src 'self'; img-src 'self' blob:; script-src 'self'; style-src 'self'; "
       "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; "
       "frame-ancestors 'none'")
"""The page's Content-Security-Policy (W3C CSP Level 3)."""

ASSETS = {
    "index.html": "text/html; charset=utf-8",
    "page.js": "text/javascript; charset=utf-8",
    "page.css": "text/css; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}
"""The files of ``tracemark/service/static/`` served, with their media types: ``/`` is
``index.html``, the others are at ``/static/<name>``; any other name is 404."""

_HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer", "Cache-Control": "no-cache"}

router = APIRouter(include_in_schema=False)


def _asset(name: str) -> Response:
    body = files("tracemark.service").joinpath("static", name).read_bytes()
    return Response(body, media_type=ASSETS[name], headers=_HEADERS)


@router.get("/")
def page() -> Response:
    """The verification page."""
    return _asset("index.html")


@router.get("/static/{name}")
def static_asset(name: str) -> Response:
    """One of :data:`ASSETS` (404 ``{"error": ...}`` for any other name)."""
    from starlette.exceptions import HTTPException

    if name not in ASSETS or name == "index.html":
        raise HTTPException(404, f"no static file {name!r}")
    return _asset(name)
