"""The services' gRPC APIs, as internal callers use them directly (no gateway)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import cv2
import grpc
import numpy as np
import pytest

from bws.devrun import Stack
from bws.storage import ObjectStore, analysis_key, embedding_key
from bws.v1 import common_pb2, enrollment_pb2, enrollment_pb2_grpc, liveness_pb2, liveness_pb2_grpc
from tests import facegen

pytestmark = pytest.mark.e2e


@dataclass(frozen=True)
class Inspected:
    """A sample stored and inspected as the gateway does at upload (bytes sent along)."""

    ref: common_pb2.SampleRef
    reply: liveness_pb2.InspectSampleReply


def inspected_samples(store: ObjectStore, frames: list[np.ndarray], tags: list[str],
                      stub: liveness_pb2_grpc.LivenessServiceStub) -> list[Inspected]:
    token_id = "grpc-" + np.random.default_rng().bytes(6).hex()
    samples = []
    for index, (frame, tag) in enumerate(zip(frames, tags, strict=True)):
        data = cv2.imencode(".png", frame)[1].tobytes()
        ref = common_pb2.SampleRef(key=store.put_sample(token_id, index, tag, data, "image/png"), tag=tag, index=index)
        reply = stub.InspectSample(liveness_pb2.InspectSampleRequest(sample=ref, data=data), timeout=30)
        assert reply.accepted
        samples.append(Inspected(ref, reply))
    return samples


def prepare(stub: enrollment_pb2_grpc.EnrollmentServiceStub,
            samples: list[Inspected]) -> list[common_pb2.SampleRef]:
    """Have the enrollment service embed inspected samples ahead, as the gateway does."""
    for sample in samples:
        request = enrollment_pb2.PrepareSampleRequest(sample=sample.ref, aligned_face=sample.reply.aligned_face)
        assert stub.PrepareSample(request, timeout=30).prepared
    return [sample.ref for sample in samples]


@contextmanager
def prepared_samples(stack: Stack, store: ObjectStore) -> Iterator[
        tuple[enrollment_pb2_grpc.EnrollmentServiceStub, list[common_pb2.SampleRef], int]]:
    """Two samples of a head turning right, inspected and embedded ahead as the gateway has them
    at upload; with a stub of the enrollment service and a partition of their own."""
    frames = facegen.live_sequence(facegen.source_photo("astronaut"), ["right"], rng=np.random.default_rng(8))
    partition = int(np.random.default_rng().integers(10**6, 10**7))
    with grpc.insecure_channel(f"127.0.0.1:{stack.liveness_port}") as liveness_channel, \
            grpc.insecure_channel(f"127.0.0.1:{stack.enroll_port}") as channel:
        samples = inspected_samples(store, frames, ["any", "right"],
                                    liveness_pb2_grpc.LivenessServiceStub(liveness_channel))
        stub = enrollment_pb2_grpc.EnrollmentServiceStub(channel)
        yield stub, prepare(stub, samples), partition


def stored_samples(store: ObjectStore, frames: list[np.ndarray], tags: list[str],
                   stub: liveness_pb2_grpc.LivenessServiceStub) -> list[common_pb2.SampleRef]:
    return [sample.ref for sample in inspected_samples(store, frames, tags, stub)]


def test_check_liveness_returns_its_evidence(stack, store: ObjectStore) -> None:
    photo = facegen.source_photo("grace_hopper")
    frames = facegen.live_sequence(photo, ["up", "left"], rng=np.random.default_rng(5))
    with grpc.insecure_channel(f"127.0.0.1:{stack.liveness_port}") as channel:
        stub = liveness_pb2_grpc.LivenessServiceStub(channel)
        refs = stored_samples(store, frames, ["any", "up", "left"], stub)
        request = liveness_pb2.CheckLivenessRequest(samples=refs, challenge_directions=["up", "left"])
        reply = stub.CheckLiveness(request, timeout=30)
        # The service answered from its memory of the inspections, which the call used up;
        # asked again (as another replica would be), it inspects the samples again and
        # decides the same. By default nothing but the samples went to the store.
        again = stub.CheckLiveness(request, timeout=30)
        assert again.live and len(again.samples) == 3
        assert again.liveness_score == pytest.approx(reply.liveness_score, abs=1e-4)
        assert not any(store.exists(analysis_key(ref.key)) for ref in refs)
    assert reply.live and reply.challenge_met and reply.usable_samples == 3
    # every pair of samples is measured; the consecutive ones carry the challenge's directions
    assert [(p.index, p.second_index, p.expected_direction) for p in reply.pairs] == [
        (0, 1, "up"), (0, 2, ""), (1, 2, "left")]
    assert all(p.planarity_residual > 0 and p.turn > 0 for p in reply.pairs)
    consecutive = [p for p in reply.pairs if p.expected_direction]
    assert all(p.direction_followed for p in consecutive)
    assert consecutive[0].pitch_delta > 5 and consecutive[1].yaw_delta > 5
    assert len(reply.samples) == 3 and all(s.sharpness > 0 for s in reply.samples)


def test_enrollment_service_verify_and_search_with_top_k(stack, store: ObjectStore) -> None:
    photo = facegen.source_photo("astronaut")
    frames = facegen.live_sequence(photo, ["left"], rng=np.random.default_rng(6))
    partition = int(np.random.default_rng().integers(10**6, 10**7))
    with grpc.insecure_channel(f"127.0.0.1:{stack.liveness_port}") as liveness_channel, \
            grpc.insecure_channel(f"127.0.0.1:{stack.enroll_port}") as channel:
        refs = stored_samples(store, frames, ["any", "left"], liveness_pb2_grpc.LivenessServiceStub(liveness_channel))
        stub = enrollment_pb2_grpc.EnrollmentServiceStub(channel)
        for number in (1, 2, 3):
            enrolled = stub.Enroll(enrollment_pb2.EnrollRequest(class_id=f"bws/{partition}/{number}",
                                                                samples=refs), timeout=30)
            assert enrolled.performed_action == enrollment_pb2.ENROLLMENT_ACTION_NEW_TEMPLATE_CREATED
        verified = stub.Verify(enrollment_pb2.VerifyRequest(class_id=f"bws/{partition}/1", samples=refs[:1]),
                               timeout=30)
        assert verified.verified and verified.score >= verified.threshold
        found = stub.Search(enrollment_pb2.SearchRequest(storage="bws", partition=partition, samples=refs[:1],
                                                         top_k=2), timeout=30)
        assert len(found.matches) == 2 and found.searched_templates == 3
        assert found.matches[0].score >= found.matches[1].score
        status = stub.GetTemplateStatus(enrollment_pb2.GetTemplateStatusRequest(class_id=f"bws/{partition}/1"),
                                        timeout=30).template_status
        assert status.available and status.enrolled_images == 2 and status.encoder_name.startswith("sface")
        with pytest.raises(grpc.RpcError) as error:
            stub.Verify(enrollment_pb2.VerifyRequest(class_id="not a class", samples=refs), timeout=30)
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_prepared_embeddings_serve_the_enrollment(stack, store: ObjectStore) -> None:
    with prepared_samples(stack, store) as (stub, refs, partition):
        # With the samples gone, only the embeddings kept in the service's memory are left to use.
        store.delete([ref.key for ref in refs])
        enrolled = stub.Enroll(enrollment_pb2.EnrollRequest(class_id=f"bws/{partition}/1", samples=refs), timeout=30)
        assert enrolled.enrolled_images == 2
        # They were used up: a second enrollment of the same (deleted) samples finds no face.
        again = stub.Enroll(enrollment_pb2.EnrollRequest(class_id=f"bws/{partition}/2", samples=refs), timeout=30)
        assert again.errors[0].error_code == "NotEnoughSamples"
        # By default nothing is stored beside a sample, and a sample that was neither sent
        # along nor inspected cannot be prepared; the reply says so, it is no error.
        assert not any(store.exists(embedding_key(ref.key)) for ref in refs)
        missing = common_pb2.SampleRef(key=refs[0].key + "-gone", tag="any", index=0)
        assert not stub.PrepareSample(enrollment_pb2.PrepareSampleRequest(sample=missing), timeout=30).prepared


def test_inspection_uses_the_bytes_sent_along(stack, store: ObjectStore) -> None:
    frame = cv2.imencode(".png", facegen.source_photo("grace_hopper"))[1].tobytes()
    ref = common_pb2.SampleRef(key=store.new_sample_key("grpc-bytes", 0, "any"), tag="any", index=0)
    with grpc.insecure_channel(f"127.0.0.1:{stack.liveness_port}") as channel:
        stub = liveness_pb2_grpc.LivenessServiceStub(channel)
        reply = stub.InspectSample(liveness_pb2.InspectSampleRequest(sample=ref, data=frame), timeout=30)
        assert reply.accepted and len(reply.aligned_face) == 112 * 112 * 3  # the sample was never stored
        corrupt = stub.InspectSample(liveness_pb2.InspectSampleRequest(sample=ref, data=frame[:500]), timeout=30)
        assert not corrupt.accepted and corrupt.errors[0].error_code == "InvalidSampleData"
