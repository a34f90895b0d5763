"""Who is calling and what they asked: Basic app credentials, BWS tokens, query parameters."""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac

from aiohttp import web

from bws.settings import App, parse_bool
from gateway import tokens
from gateway.backends import SETTINGS
from gateway.errors import ApiError, unauthorized
from gateway.replies import xml_can_carry


def basic_app(request: web.Request) -> App:
    """The app whose Basic credentials the request carries; 401 otherwise."""
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "basic" or not value:
        raise unauthorized("This call requires Basic authentication with the App ID and secret.", "Basic")
    try:
        app_id, _, secret = base64.b64decode(value.strip(), validate=True).decode("utf-8").partition(":")
    except (binascii.Error, UnicodeDecodeError):
        raise unauthorized("The Basic authorization header is malformed.", "Basic") from None
    found = None
    for app in request.app[SETTINGS].apps:
        # Compare every app's secrets (several during a rotation) in constant time, so timing
        # tells nothing about the ids.
        same_id = hmac.compare_digest(app.app_id.encode(), app_id.encode())
        if sum(hmac.compare_digest(known.encode(), secret.encode()) for known in app.secrets) & same_id:
            found = app
    if found is not None:
        return found
    raise unauthorized("The App ID or secret is wrong.", "Basic")


def bearer_token(request: web.Request) -> tokens.Token:
    """The verified BWS token of the request (schemes ``Bearer`` and ``JWT``); 401 otherwise."""
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() not in ("bearer", "jwt") or not value.strip():
        raise unauthorized("This call requires a BWS token: Authorization: Bearer <token>.")
    settings = request.app[SETTINGS]
    try:
        return tokens.verify(value.strip(), secret=settings.token_secret, audience=settings.public_url)
    except tokens.TokenInvalid as error:
        raise unauthorized(str(error)) from None


def flag(request: web.Request, name: str, default: bool | None) -> bool | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    value = parse_bool(raw)
    if value is None:
        raise ApiError(400, f"The parameter {name} must be true or false.")
    return value


def integer(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query.get(name, "")
    if raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, f"The parameter {name} must be an integer.") from None
    if not low <= value <= high:
        raise ApiError(400, f"The parameter {name} must be between {low} and {high}.")
    return value


def traits(raw: str) -> int:
    value = 0
    for name in (t.strip().lower() for t in raw.split(",")):
        if name not in tokens.TRAITS:
            raise ApiError(400, f"The trait {name!r} is not supported; use Face and/or Periocular.")
        value |= tokens.TRAITS[name]
    return value




def bcid_param(request: web.Request, app: App) -> tokens.Bcid:
    """The ``bcid`` query parameter, which the app must be allowed to use (400 / 403)."""
    bcid = tokens.Bcid.parse(request.query.get("bcid", ""))
    if bcid is None:
        raise ApiError(400, "The parameter bcid must look like storage.partition.classid.")
    if not app.may_use(bcid.storage, bcid.partition):
        raise ApiError(403, f"The app may not use the storage and partition of {bcid}.")
    return bcid


MAX_STATE_LENGTH = 2048


def state_param(request: web.Request) -> str | None:
    """The client's ``state``, echoed in the reply: text of at most 2,048 characters that XML can
    carry (400 otherwise); None when absent."""
    state = request.query.get("state")
    if state is not None and (len(state) > MAX_STATE_LENGTH or not xml_can_carry(state)):
        raise ApiError(400, f"The parameter state must be text of at most {MAX_STATE_LENGTH} characters, "
                            "without control characters.")
    return state


async def read_body(request: web.Request) -> bytes:
    """The request's whole body, which must arrive within ``BWS_BODY_TIMEOUT_SECONDS`` (408 and
    the connection closed otherwise): a client that stalls mid-body holds nothing for long."""
    timeout = request.app[SETTINGS].body_timeout_seconds
    try:
        return await asyncio.wait_for(request.read(), timeout)
    except TimeoutError:
        raise ApiError(408, f"The request body did not arrive within {timeout:g} seconds.",
                       {"Connection": "close"}) from None
