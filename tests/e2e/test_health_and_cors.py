"""Probes, CORS and error bodies of the running gateway."""

from __future__ import annotations

import urllib.request

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.support.client import BwsClient

pytestmark = pytest.mark.e2e


def test_livez_and_readyz_answer_200_when_everything_runs(client: BwsClient) -> None:
    assert client.request("GET", "/livez").status == 200
    assert client.request("GET", "/readyz").json == {"Status": "ready"}


@pytest.mark.parametrize("service", ["liveness", "readiness"])
def test_both_services_report_grpc_health(stack, service: str) -> None:
    for port in (stack.liveness_port, stack.enroll_port):
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_cors_preflight_allows_the_authorization_header(client: BwsClient) -> None:
    reply = client.request("OPTIONS", "/extension/enroll", headers={
        "Origin": "https://app.example", "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "authorization",
    })
    assert reply.status == 200
    assert reply.headers["Access-Control-Allow-Origin"] in ("*", "https://app.example")
    assert "authorization" in reply.headers["Access-Control-Allow-Headers"].lower()


def test_cross_origin_replies_carry_cors_headers(client: BwsClient) -> None:
    reply = client.request("GET", "/extension/enroll", headers={"Origin": "https://app.example"})
    assert reply.status == 401
    assert "Access-Control-Allow-Origin" in reply.headers


def test_unknown_path_is_404_with_a_message(client: BwsClient) -> None:
    reply = client.request("GET", "/extension/nothing-here")
    assert reply.status == 404 and reply.json["Message"]


def test_request_id_is_echoed(client: BwsClient) -> None:
    reply = client.request("GET", "/livez", headers={"X-Request-Id": "abc-123"})
    assert reply.headers["X-Request-Id"] == "abc-123"


def test_gateway_and_services_export_prometheus_metrics(client: BwsClient, stack) -> None:
    client.request("GET", "/livez")
    gateway = client.request("GET", "/metrics").text
    assert 'bws_http_requests_total{endpoint="/livez",method="GET",status="200"}' in gateway
    for port in (stack.liveness_metrics_port, stack.enroll_metrics_port):
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
            text = reply.read().decode()
        assert "bws_grpc_server_handled_total" in text and "bws_engine_pending_calls" in text
