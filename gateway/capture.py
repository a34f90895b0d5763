"""The hosted capture page (BWS "unified user interface"): ``/uui``.

A relying app sends the user's browser to
``/uui?access_token=TOKEN&return_url=URL&state=STATE``. The page itself (``static/capture.js``)
does the work in the browser: it decodes the token's claims, captures motion-triggered frames
from the camera, uploads them mirrored, runs the token's task and redirects to ``return_url``
with ``access_token``, ``state`` and, on failure, ``error``.

The server side here only does what the browser cannot be trusted with: before serving the
page it verifies the token and refuses (400 page) a ``return_url`` whose origin is not among
the ``allowed_origins`` of the app that owns the token, so the page is never an open redirect.

Routes:

- ``GET /uui`` — the capture page (or a 400 page that says what is wrong with the link);
- ``GET /uui/done`` — a small return page for ``make run`` that shows the outcome;
- ``GET /uui/static/...`` — the page's JS and CSS.

Every response under ``/uui`` carries a strict Content-Security-Policy (scripts and styles from
this origin only, nothing inline), ``X-Content-Type-Options: nosniff``, no referrer and no
framing. The page calls the API on its own origin, so it needs no CORS.
"""

from __future__ import annotations

import html
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp_cors
from aiohttp import web

from bws.settings import App
from gateway import tokens
from gateway.backends import SETTINGS

STATIC = Path(__file__).resolve().parent / "static"

HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
        "media-src 'self' mediastream: blob:; connect-src 'self'; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'; require-trusted-types-for 'script'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",  # the page's URL holds the token
    "Permissions-Policy": "camera=(self), microphone=(), geolocation=()",
    "Cross-Origin-Opener-Policy": "same-origin",
}


def origin_of(url: str) -> str | None:
    """``scheme://host[:port]`` of an absolute http(s) URL, lower-cased, default port dropped.

    None for anything a browser might read differently from Python: other schemes, user info,
    backslashes, whitespace or control characters, non-ASCII or malformed hosts and ports.
    """
    if not url or not url.isascii() or any(c in url for c in "\\\t\r\n ") or not url.isprintable():
        return None
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname or "@" in parts.netloc:
        return None
    try:
        port = parts.port
    except ValueError:
        return None
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname  # IPv6
    default = 443 if scheme == "https" else 80
    return f"{scheme}://{host}" + (f":{port}" if port not in (None, default) else "")


def allowed_return_url(app: App, return_url: str) -> bool:
    origin = origin_of(return_url)
    return origin is not None and origin in {origin_of(o.rstrip("/")) for o in app.allowed_origins}


def refused(title: str, message: str) -> web.Response:
    """A 400 page with a clear sentence (no redirect, nothing of the request echoed)."""
    page = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<title>{html.escape(title)}</title><link rel="icon" href="data:,">'
        '<link rel="stylesheet" href="uui/static/capture.css"></head>'
        f'<body><main class="card"><h1>{html.escape(title)}</h1>'
        f'<p class="problem" role="alert">{html.escape(message)}</p></main></body></html>'
    )
    return web.Response(status=400, text=page, content_type="text/html")


async def page(request: web.Request) -> web.StreamResponse:
    """``GET /uui``: check the token and the return URL, then serve the capture page."""
    settings = request.app[SETTINGS]
    query = request.query
    try:
        claims = tokens.verify(query.get("access_token", ""), secret=settings.token_secret,
                               audience=settings.public_url)
    except tokens.TokenInvalid:
        return refused("This link does not work",
                       "The link to this page is invalid or has expired. Please go back to the app and start again.")
    app = next((a for a in settings.apps if a.app_id == claims.app_id), None)
    return_url = query.get("return_url", "")
    if not return_url:
        return refused("This link is incomplete",
                       "The link to this page has no return address (return_url). The app that sent you here "
                       "must add one.")
    if app is None or not allowed_return_url(app, return_url):
        return refused("This link is not allowed",
                       "The return address (return_url) of this link is not one of the app's allowed origins, "
                       "so this page will not send you there. Please contact the app's provider.")
    return web.FileResponse(STATIC / "capture.html")


async def done(request: web.Request) -> web.StreamResponse:
    """``GET /uui/done``: a return page for the dev run; it shows the outcome from the query."""
    return web.FileResponse(STATIC / "done.html")


async def security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """Headers of every response under /uui (the pages, their assets, their error replies)."""
    if request.path == "/uui" or request.path.startswith("/uui/"):
        response.headers.update(HEADERS)
        static = request.path.startswith("/uui/static/")
        # Pages: their URL holds a token. Assets: revalidated (ETag), so an upgrade is seen at once.
        response.headers["Cache-Control"] = "no-cache" if static else "no-store"


def setup(app: web.Application, cors: aiohttp_cors.CorsConfig) -> None:
    """Add the capture page's routes (same-origin only: no CORS resources are added)."""
    app.router.add_get("/uui", page)
    app.router.add_get("/uui/done", done)
    app.router.add_static("/uui/static", STATIC)
    app.on_response_prepare.append(security_headers)
