"""With BWS_SHARE_ANALYSES on (several replicas per service, as in Kubernetes), what a service
computed from a sample is stored beside it, and a replica that did not compute it uses that.

Runs its own stack with the setting on; the main e2e stack runs with the default (off).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import grpc
import numpy as np
import pytest

from bws.devrun import Stack
from bws.faces import embedding_from_bytes
from bws.storage import ObjectStore, analysis_key, embedding_key
from bws.v1 import enrollment_pb2, liveness_pb2, liveness_pb2_grpc
from tests import facegen
from tests.e2e.conftest import running_stack, store_of
from tests.e2e.test_enroll import enroll_token, upload_face
from tests.e2e.test_grpc_api import prepared_samples, stored_samples
from tests.support.client import BwsClient, claims_of
from tests.support.storage import kept_for_token

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def sharing_stack(request: pytest.FixtureRequest) -> Iterator[Stack]:
    with running_stack("shared-analyses", request, BWS_SHARE_ANALYSES="true") as running:
        yield running


@pytest.fixture(scope="module")
def store(sharing_stack: Stack) -> ObjectStore:
    return store_of(sharing_stack)


def wait_for(store: ObjectStore, keys: list[str], timeout: float = 5.0) -> None:
    """Wait until the keys exist (analyses are stored just after the reply)."""
    deadline = time.monotonic() + timeout
    while not all(store.exists(key) for key in keys):
        assert time.monotonic() < deadline, f"not stored: {keys}"
        time.sleep(0.05)


def test_another_replica_decides_liveness_from_the_stored_inspections(sharing_stack: Stack,
                                                                      store: ObjectStore) -> None:
    photo = facegen.source_photo("grace_hopper")
    frames = facegen.live_sequence(photo, ["up"], rng=np.random.default_rng(5))
    with grpc.insecure_channel(f"127.0.0.1:{sharing_stack.liveness_port}") as channel:
        stub = liveness_pb2_grpc.LivenessServiceStub(channel)
        refs = stored_samples(store, frames, ["any", "up"], stub)
        wait_for(store, [analysis_key(ref.key) for ref in refs])
        request = liveness_pb2.CheckLivenessRequest(samples=refs, challenge_directions=["up"])
        first = stub.CheckLiveness(request, timeout=30)  # from memory, which the call uses up
        # Without the samples, only the stored inspections can answer (as for another replica).
        store.delete([ref.key for ref in refs])
        again = stub.CheckLiveness(request, timeout=30)
    assert first.live and again.live and again.usable_samples == 2
    assert again.liveness_score == pytest.approx(first.liveness_score, abs=1e-4)  # stored as float32
    store.delete([analysis_key(ref.key) for ref in refs])


def test_another_replica_enrolls_from_the_stored_embeddings(sharing_stack: Stack, store: ObjectStore) -> None:
    with prepared_samples(sharing_stack, store) as (stub, refs, partition):
        wait_for(store, [embedding_key(ref.key) for ref in refs])
        assert all(embedding_from_bytes(store.get(embedding_key(ref.key)) or b"") is not None for ref in refs)
        first = stub.Enroll(enrollment_pb2.EnrollRequest(class_id=f"bws/{partition}/1", samples=refs), timeout=30)
        # Without the samples and their inspections, only the stored embeddings are left to use.
        store.delete([key for ref in refs for key in (ref.key, analysis_key(ref.key))])
        again = stub.Enroll(enrollment_pb2.EnrollRequest(class_id=f"bws/{partition}/2", samples=refs), timeout=30)
        # A sample without an inspection in memory or in the store cannot be prepared; no error.
        request = enrollment_pb2.PrepareSampleRequest(sample=refs[0])
        assert not stub.PrepareSample(request, timeout=30).prepared
    assert first.enrolled_images == again.enrolled_images == 2
    store.delete([embedding_key(ref.key) for ref in refs])


def test_an_enrollment_leaves_no_analysis_behind(sharing_stack: Stack, store: ObjectStore) -> None:
    client = BwsClient(sharing_stack.url, sharing_stack.app_id, sharing_stack.app_secret)
    token = enroll_token(client, f"bws.1.{np.random.default_rng().integers(10**9)}", livedetection=False)
    upload_face(client, token, 2)
    jti = claims_of(token)["jti"]
    deadline = time.monotonic() + 10  # inspections and embeddings are stored after the uploads
    while len([k for k in store.list_keys(f"uploads/{jti}/") if k.endswith((".face", ".emb"))]) < 4:
        assert time.monotonic() < deadline, store.list_keys(f"uploads/{jti}/")
        time.sleep(0.1)
    assert client.enroll(token).json == {"Success": True}
    assert kept_for_token(store, jti) == []
