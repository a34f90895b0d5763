"""The OpenAPI document (``/openapi.json``) against the running gateway: every operation is fuzzed
from it with schemathesis (bounded: a few dozen examples each, valid and invalid), and no reply
may be a 5xx, a status or body the document does not list, or carry a traceback.

The operations are collected from the document as ``gateway/openapi.py`` makes it (collection
happens before any server runs); the first test checks that the running gateway serves exactly
that document.
"""

from __future__ import annotations

import base64
import json
import urllib.request
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from openapi_spec_validator import validate

from bws.devrun import Stack
from gateway import openapi
from tests.support.client import BwsClient

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

TASKS = {"/extension/enroll": "enroll", "/extension/verify": "verify", "/extension/identify": "identify",
         "/extension/livenessdetection": "livenessdetection", "/extension/upload": "enroll"}


@schemathesis.check
def no_traceback(ctx: Any, response: schemathesis.Response, case: schemathesis.Case) -> None:
    """A reply never shows the server's insides."""
    text = response.text if isinstance(response.text, str) else ""
    if "Traceback (most recent call last)" in text or 'File "/' in text:
        raise AssertionError("the reply carries a traceback")


@pytest.fixture(scope="module")
def document(stack: Stack) -> dict[str, Any]:
    with urllib.request.urlopen(f"{stack.url}/openapi.json", timeout=10) as reply:
        return json.load(reply)


def test_the_document_is_valid_openapi_3_1_and_lists_every_route(document: dict[str, Any], stack: Stack) -> None:
    validate(document)
    assert document == openapi.document(stack.url)  # what the fuzzing below is collected from
    assert document["openapi"] == "3.1.0"
    for path in ("/extension/token", "/extension/upload", "/extension/enroll", "/extension/verify",
                 "/extension/identify", "/extension/livenessdetection", "/extension/livedetection",
                 "/extension/isenrolled", "/extension/deleteclass", "/extension/result", "/extension/status",
                 "/livez", "/readyz", "/metrics", "/uui"):
        assert path in document["paths"], path


def credentials(case: schemathesis.Case, client: BwsClient) -> dict[str, str]:
    """What a well-meaning client sends: a token of the operation's task, or the app's Basic
    credentials (the fuzzed parameters and bodies are what varies)."""
    security = case.operation.definition.raw.get("security")
    names = {name for requirement in (security if security is not None else [{"basicAuth": []}])
             for name in requirement}
    if "bearerAuth" in names:
        task = TASKS[case.operation.path]
        bcid = {} if task == "livenessdetection" else {"bcid": "bws.1.424242"}
        return {"Authorization": f"Bearer {client.token(task=task, livedetection=False, **bcid)}"}
    if "basicAuth" in names:
        raw = f"{client.app_id}:{client.app_secret}".encode()
        return {"Authorization": "Basic " + base64.b64encode(raw).decode()}
    return {}


schema = schemathesis.openapi.from_dict(openapi.document("http://127.0.0.1"))


@schema.parametrize()
@settings(max_examples=25, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large])
def test_every_operation_keeps_to_the_document(case: schemathesis.Case, client: BwsClient, stack: Stack) -> None:
    headers = {**(case.headers or {}), **credentials(case, client)}
    case.call_and_validate(base_url=stack.url, headers=headers, timeout=30, checks=[
        schemathesis.checks.not_a_server_error,
        schemathesis.checks.status_code_conformance,
        schemathesis.checks.content_type_conformance,
        schemathesis.checks.response_schema_conformance,
        no_traceback,
    ])
