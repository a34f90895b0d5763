"""The OpenAPI 3.1 document of the gateway's REST API, served at ``/openapi.json``.

Every endpoint, parameter, body, reply and error body, as the handlers implement them
(``gateway/handlers.py``, ``gateway/biometric.py``, ``gateway/capture.py``). It is the contract
the tests hold the running gateway to: ``tests/e2e/test_openapi.py`` fuzzes every operation
from it and fails on a 5xx, a status or body it does not list, or a traceback.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from bws import __version__

JSON = "application/json"
XML = "application/xml"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": _ref("Error")}}}


def _json(description: str, schema: dict[str, Any], *, xml: bool = False) -> dict[str, Any]:
    content: dict[str, Any] = {JSON: {"schema": schema}}
    if xml:  # .NET data-contract XML when the client's Accept asks for it
        content[XML] = {"schema": {"type": "string"}}
    return {"description": description, "content": content}


def _query(name: str, schema: dict[str, Any], description: str, required: bool = False) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": required, "schema": schema, "description": description}


BOOLEAN_FLAG = {"type": "boolean"}
BCID = {"type": "string", "pattern": r"^[A-Za-z0-9_]{1,64}[./][0-9]{1,19}[./][0-9]{1,19}$",
        "examples": ["bws.1.4711"]}
TRAIT = {"type": "string", "examples": ["Face"]}
UNAUTHORIZED = _error("No, malformed or wrong credentials (the WWW-Authenticate header names the scheme).")
UNAVAILABLE = _error("A backend service or the object store is unavailable, or the server is too busy "
                     "(Retry-After may say when to come back).")
TOO_LARGE = _error("The body is larger than BWS_MAX_UPLOAD_BYTES.")
SLOW_BODY = _error("The body did not arrive within BWS_BODY_TIMEOUT_SECONDS.")
LIVEDETECTION = _query("livedetection", BOOLEAN_FLAG, "Require liveness for this call; it can switch liveness "
                       "on when the token does not ask for it, never off.")


def _biometric(summary: str, description: str, matches: bool = False) -> dict[str, Any]:
    result = _ref("IdentifyResult") if matches else _ref("Result")
    return {"get": {
        "summary": summary,
        "description": description,
        "security": [{"bearerAuth": []}],
        "parameters": [LIVEDETECTION],
        "responses": {
            "200": _json("The outcome: Success, and on failure a BWS error code (none when simply not "
                         "recognized). JSON, or XML with Accept: application/xml.", result, xml=True),
            "400": _error("No samples were uploaded with the token, or a parameter is malformed."),
            "401": UNAUTHORIZED,
            "403": _error("The token's task is another one, or its tries are used up."),
            "503": UNAVAILABLE,
        },
    }}


def _basic(operation: dict[str, Any]) -> dict[str, Any]:
    operation.setdefault("security", [{"basicAuth": []}])
    operation["responses"].setdefault("401", UNAUTHORIZED)
    return operation


SCHEMAS: dict[str, Any] = {
    "Error": {"type": "object", "required": ["Message"], "additionalProperties": False,
              "properties": {"Message": {"type": "string", "description": "A sentence; never a traceback."}}},
    "Result": {"type": "object", "required": ["Success"], "additionalProperties": False, "properties": {
        "Success": {"type": "boolean"},
        "Error": {"type": "string", "description": "LiveDetectionFailed, ChallengeResponseFailed, NotEnoughSamples, "
                                                   "NoTemplateAvailable, NoFaceFound, ExecutionOfJobTimedOut, ..."},
    }},
    "Match": {"type": "object", "required": ["BCID", "Score"], "additionalProperties": False, "properties": {
        "BCID": {"type": "string", "examples": ["bws/1/4711"]},
        "Score": {"type": "number", "minimum": -1, "maximum": 1},
    }},
    "IdentifyResult": {"type": "object", "required": ["Success"], "additionalProperties": False, "properties": {
        "Success": {"type": "boolean"},
        "Error": {"type": "string"},
        "Matches": {"type": "array", "maxItems": 10, "items": _ref("Match")},
    }},
    "UploadResult": {"oneOf": [
        {"type": "object", "required": ["Accepted", "Warnings"], "additionalProperties": False, "properties": {
            "Accepted": {"const": True},
            "Warnings": {"type": "array", "items": {"type": "string", "enum": [
                "ImageTooSmall", "ImageTooBlurry", "ImageOverExposure", "ImageUnderExposure"]}},
        }},
        {"type": "object", "required": ["Accepted", "Error"], "additionalProperties": False, "properties": {
            "Accepted": {"const": False},
            "Error": {"type": "string", "enum": ["NoFaceFound", "MultipleFacesFound"]},
        }},
    ]},
    "LiveDetectionResult": {"type": "object", "required": ["Success", "State"], "additionalProperties": False,
                            "properties": {"Success": {"type": "boolean"}, "State": {"type": "string"},
                                           "Error": {"type": "string"}}},
    "OperationResult": {"type": "object", "required": ["Action", "Success"], "additionalProperties": False,
                        "properties": {
                            "Action": {"type": "string", "enum": ["enrollment", "verification", "identification",
                                                                  "livenessdetection"]},
                            "BCID": {"type": ["string", "null"]},
                            "Success": {"type": "boolean"},
                            "Error": {"type": "string"},
                            "Matches": {"type": "array", "items": _ref("Match")},
                        }},
    "LiveImages": {"type": "object", "required": ["liveimage1", "liveimage2"], "properties": {
        "liveimage1": {"type": "string", "description": "A data URL (data:image/png;base64,...)."},
        "liveimage2": {"type": "string", "description": "A data URL, taken after the first."},
    }},
}

PATHS: dict[str, Any] = {
    "/extension/token": {"get": _basic({
        "summary": "Issue a BWS token for one BCID and task",
        "parameters": [
            _query("id", {"type": "string", "minLength": 1}, "The App ID (must be the Basic user).", True),
            _query("bcid", BCID, "The Biometric Class ID, storage.partition.classid (not needed for "
                   "livenessdetection); the app must be allowed its storage and partition."),
            _query("task", {"type": "string", "enum": ["verify", "identify", "enroll", "livenessdetection"]},
                   "What the token is for (default verify)."),
            _query("livedetection", BOOLEAN_FLAG, "Require liveness (default true)."),
            _query("challenge", BOOLEAN_FLAG, "Require a head-movement challenge (implies liveness)."),
            _query("challenges", {"type": "integer", "minimum": 2, "maximum": 7}, "Directions per challenge (3)."),
            _query("maxtries", {"type": "integer", "minimum": 1, "maximum": 15}, "Tries the token allows (3)."),
            _query("autoenroll", BOOLEAN_FLAG, "A successful verification also adds to the template."),
            _query("traits", TRAIT, "Face (and/or Periocular, accepted and ignored)."),
        ],
        "responses": {
            "200": {"description": "The token (a JWT).", "content": {"text/plain": {"schema": {"type": "string"}}}},
            "400": _error("A parameter is missing or malformed."),
            "403": _error("The app may not use the BCID's storage and partition."),
        },
    })},
    "/extension/upload": {"post": {
        "summary": "Upload a sample for the token's next biometric call",
        "description": "The body is the sample as a data URL, sent raw: text/plain, jQuery's form content "
                       "type (still raw), a JSON string, percent-encoded, or the one form field image=.",
        "security": [{"bearerAuth": []}],
        "parameters": [
            _query("tag", {"type": "string", "enum": ["any", "up", "down", "left", "right"]},
                   "The head direction the photo shows (challenge)."),
            _query("index", {"type": "integer", "minimum": 0, "maximum": 999999}, "The photo's running number."),
            _query("trait", TRAIT, "Face."),
        ],
        "requestBody": {"required": True, "content": {
            "text/plain": {"schema": {"type": "string", "examples": ["data:image/png;base64,iVBORw0KGgo..."]}},
            JSON: {"schema": {"type": "string"}},
        }},
        "responses": {
            "200": _json("Accepted (with quality warnings), or not (no face, more than one).", _ref("UploadResult")),
            "400": _error("Not an image of an allowed format, corrupt, too large in pixels, or too many samples."),
            "401": UNAUTHORIZED,
            "408": SLOW_BODY,
            "413": TOO_LARGE,
            "503": UNAVAILABLE,
        },
    }},
    "/extension/enroll": _biometric("Enroll the token's samples for its BCID",
                                    "Liveness and the challenge first when the token asks for them."),
    "/extension/verify": _biometric("Verify the token's samples against its BCID (1:1)",
                                    "Not recognized: Success false without an Error."),
    "/extension/identify": _biometric("Identify the samples within the token's storage and partition (1:N)",
                                      "The best matches first, at most 10.", matches=True),
    "/extension/livenessdetection": _biometric("Liveness (and the challenge) only", "No BCID needed."),
    "/extension/livedetection": {"post": _basic({
        "summary": "Are two images of a live person?",
        "parameters": [_query("state", {"type": "string", "maxLength": 2048},
                              "Echoed in the reply; with it the reply is an object (JSON or XML).")],
        "requestBody": {"required": True, "content": {
            JSON: {"schema": _ref("LiveImages")},
            "application/x-www-form-urlencoded": {"schema": _ref("LiveImages")},
        }},
        "responses": {
            "200": {"description": "Without state: true or false. With state: an object.", "content": {
                JSON: {"schema": {"oneOf": [{"type": "boolean"}, _ref("LiveDetectionResult")]}},
                XML: {"schema": {"type": "string"}},
            }},
            "400": _error("The images are missing or not images, or state is not text XML can carry."),
            "408": SLOW_BODY,
            "413": TOO_LARGE,
            "503": UNAVAILABLE,
        },
    })},
    "/extension/isenrolled": {"get": _basic({
        "summary": "Whether a BCID has a template",
        "parameters": [_query("bcid", BCID, "The class.", True), _query("trait", TRAIT, "Face.")],
        "responses": {
            "200": _json("Enrolled.", {"type": "object", "required": ["BCID", "Trait", "EnrolledImages", "Encoder"],
                                       "additionalProperties": False, "properties": {
                                           "BCID": {"type": "string"}, "Trait": {"const": "Face"},
                                           "EnrolledImages": {"type": "integer", "minimum": 1},
                                           "Encoder": {"type": "string"}}}),
            "400": _error("The bcid or trait is malformed or not supported."),
            "403": _error("The app may not use the BCID's storage and partition."),
            "404": _error("Not enrolled."),
            "503": UNAVAILABLE,
        },
    })},
    "/extension/deleteclass": {"delete": _basic({
        "summary": "Remove a BCID's template (the only biometric data kept past a call)",
        "parameters": [_query("bcid", BCID, "The class.", True)],
        "responses": {
            "200": {"description": "Deleted, or there was nothing to delete."},
            "400": _error("The bcid is malformed."),
            "403": _error("The app may not use the BCID's storage and partition."),
            "503": UNAVAILABLE,
        },
    })},
    "/extension/result": {"get": _basic({
        "summary": "The outcome of a token's last biometric call",
        "parameters": [_query("access_token", {"type": "string"}, "The token (issued to the calling app).", True)],
        "responses": {
            "200": _json("The last outcome.", _ref("OperationResult"), xml=True),
            "204": {"description": "The token has made no call yet."},
            "400": _error("The access_token is invalid or expired."),
            "403": _error("The token was issued to another app."),
            "503": UNAVAILABLE,
        },
    })},
    "/extension/status": {"get": _basic({
        "summary": "Version and features",
        "responses": {"200": _json("The service.", {
            "type": "object", "required": ["Version", "Label", "Features"], "additionalProperties": False,
            "properties": {"Version": {"type": "string"}, "Label": {"type": "string"},
                           "Features": {"type": "array", "items": {"type": "string"}}}})},
    })},
    "/livez": {"get": {"summary": "The gateway process is alive", "security": [], "responses": {
        "200": _json("Alive.", {"type": "object", "required": ["Status"],
                                "properties": {"Status": {"const": "alive"}}}),
    }}},
    "/readyz": {"get": {"summary": "Both services and the object store answer", "security": [], "responses": {
        "200": _json("Ready.", {"type": "object", "required": ["Status"],
                                "properties": {"Status": {"const": "ready"}}}),
        "503": _error("Not ready: what is not."),
    }}},
    "/metrics": {"get": {"summary": "Prometheus metrics", "security": [], "responses": {
        "200": {"description": "The text exposition format.",
                "content": {"text/plain": {"schema": {"type": "string"}}}},
    }}},
    "/uui": {"get": {
        "summary": "The hosted capture page",
        "security": [],
        "parameters": [
            _query("access_token", {"type": "string"}, "The token of the task to run.", True),
            _query("return_url", {"type": "string"}, "Where to go afterwards; its origin must be one of the "
                   "token's app's allowed origins.", True),
            _query("state", {"type": "string"}, "Handed back to return_url."),
        ],
        "responses": {
            "200": {"description": "The page.", "content": {"text/html": {"schema": {"type": "string"}}}},
            "400": {"description": "The token is invalid or the return_url is not allowed (a page saying so).",
                    "content": {"text/html": {"schema": {"type": "string"}}}},
        },
    }},
    "/openapi.json": {"get": {"summary": "This document", "security": [], "responses": {
        "200": _json("The OpenAPI 3.1 document of this API.", {"type": "object"}),
    }}},
}


def document(public_url: str) -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "BWS server: the BioID Web Service (BWS) Web API",
            "version": __version__,
            "description": "An open, self-hosted server for the classic BWS Web API. Every error body is "
                           '{"Message": "..."}; every reply carries X-Request-Id.',
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
        },
        "servers": [{"url": public_url}],
        "security": [{"basicAuth": []}],
        "paths": PATHS,
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {
                "basicAuth": {"type": "http", "scheme": "basic", "description": "App ID and secret."},
                "bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                               "description": "A token from /extension/token (the scheme JWT is accepted too)."},
            },
        },
    }


OPENAPI = web.AppKey("openapi", dict)


async def openapi(request: web.Request) -> web.Response:
    """``GET /openapi.json``."""
    return web.json_response(request.app[OPENAPI])
