"""The gRPC services' life cycle: reflection, and a graceful stop on SIGTERM.

Runs its own stack, since it stops a service.
"""

from __future__ import annotations

import signal
import threading
import time
import urllib.request
from collections.abc import Iterator

import cv2
import grpc
import pytest
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from bws.devrun import Stack
from bws.v1 import common_pb2, enrollment_pb2, enrollment_pb2_grpc
from tests import facegen
from tests.e2e.conftest import running_stack, store_of

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def own_stack(request: pytest.FixtureRequest) -> Iterator[Stack]:
    with running_stack("lifecycle", request) as running:
        yield running


def test_services_offer_reflection(own_stack: Stack) -> None:
    for port, expected in ((own_stack.liveness_port, "bws.v1.LivenessService"),
                           (own_stack.enroll_port, "bws.v1.EnrollmentService")):
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = reflection_pb2_grpc.ServerReflectionStub(channel)
            replies = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]),
                                                timeout=5)
            names = {s.name for reply in replies for s in reply.list_services_response.service}
        assert {expected, "grpc.health.v1.Health"} <= names


def wait_until_busy(metrics_port: int, timeout: float = 30.0) -> None:
    """Wait until the service's model workers are running a call (read from its metrics)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as reply:
            for line in reply.read().decode().splitlines():
                if line.startswith("bws_engine_pending_calls ") and float(line.split()[1]) >= 1:
                    return
        time.sleep(0.02)
    raise AssertionError("the call never reached the model workers")


def test_sigterm_lets_the_call_in_flight_finish_and_refuses_new_ones(own_stack: Stack) -> None:
    store = store_of(own_stack)
    frame = cv2.imencode(".png", facegen.source_photo("astronaut"))[1].tobytes()
    # Samples without an upload inspection: the service decodes and detects each, a long call.
    refs = [common_pb2.SampleRef(key=store.put_sample("lifecycle", i, "any", frame, "image/png"), tag="any", index=i)
            for i in range(24)]
    results: dict[str, object] = {}

    with grpc.insecure_channel(f"127.0.0.1:{own_stack.enroll_port}") as channel:
        stub = enrollment_pb2_grpc.EnrollmentServiceStub(channel)

        def in_flight() -> None:
            results["reply"] = stub.Enroll(enrollment_pb2.EnrollRequest(class_id="bws/1/77", samples=refs),
                                           timeout=60)

        caller = threading.Thread(target=in_flight)
        caller.start()
        wait_until_busy(own_stack.enroll_metrics_port)
        own_stack.processes["enroll_service"].send_signal(signal.SIGTERM)
        caller.join(60)
        assert results["reply"].enrolled_images == 24  # type: ignore[attr-defined]
        with pytest.raises(grpc.RpcError) as refused:
            stub.GetTemplateStatus(enrollment_pb2.GetTemplateStatusRequest(class_id="bws/1/77"), timeout=5)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    assert own_stack.processes["enroll_service"].wait(20) == 0
