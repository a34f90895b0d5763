"""The hosted capture page (BWS "unified user interface"): ``/uui``.

Placeholder: being written. ``setup(app, cors)`` adds the page's routes to the gateway.
"""

from __future__ import annotations

import aiohttp_cors
from aiohttp import web


def setup(app: web.Application, cors: aiohttp_cors.CorsConfig) -> None:
    """Add the capture page's routes."""
