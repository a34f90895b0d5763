"""BWS 3 BioIDWebService over the real processes: LivenessDetection and PhotoVerify as BioID's
clients call them (REST with raw proto3 JSON and a client-signed JWT, gRPC by full method name),
on head turns rendered from real photos and on flat-photo attacks."""

from __future__ import annotations

import tempfile
from pathlib import Path

import cv2
import grpc
import numpy as np
import pytest

from bws.bws3 import bws_pb2
from bws.bws3 import bwsmessages_pb2 as messages
from bws.devrun import Stack
from tests import facegen
from tests.e2e.conftest import bws3_of
from tests.support import images
from tests.support.bws3 import Bws3Client, b64

pytestmark = pytest.mark.e2e

LIVE = "/api/v1/livenessdetection"
PHOTO = "/api/v1/photoverify"


@pytest.fixture(scope="module")
def bws3(stack: Stack) -> Bws3Client:
    return bws3_of(stack)


@pytest.fixture(scope="module")
def turn() -> dict[str, list[bytes]]:
    """A head turning each way from the front: [front, turned] per direction (rendered)."""
    photo = facegen.source_photo("astronaut")
    return {d: [images.encode(f) for f in facegen.live_sequence(photo, [d], rng=np.random.default_rng(7))]
            for d in ("left", "up")}


def live_body(frames: list[bytes], tag: str | None = None) -> dict:
    return {"liveImages": [{"image": b64(frames[0])}, {"image": b64(frames[1]), "tags": [tag] if tag else []}]}


def test_two_images_of_a_turning_head_are_live(bws3: Bws3Client, turn: dict[str, list[bytes]]) -> None:
    reply = bws3.rest("POST", LIVE, live_body(turn["left"]))
    assert reply.status == 200, reply.body
    body = reply.json
    assert body["status"] == "SUCCEEDED" and body["live"] is True and body["errors"] == []
    assert 0.5 <= body["livenessScore"] <= 1.0 and len(body["imageProperties"]) == 2
    second = body["imageProperties"][1]["faces"][0]
    assert second["motionLivenessScore"] == body["livenessScore"] and 0 < second["movementDirection"] <= 360
    assert body["imageProperties"][0]["faces"][0]["movementDirection"] == 0


def test_the_movement_direction_follows_the_turn(bws3: Bws3Client, turn: dict[str, list[bytes]]) -> None:
    left = bws3.rest("POST", LIVE, live_body(turn["left"])).json["imageProperties"][1]["faces"][0]
    up = bws3.rest("POST", LIVE, live_body(turn["up"])).json["imageProperties"][1]["faces"][0]
    assert 135 <= left["movementDirection"] <= 225 and 45 <= up["movementDirection"] <= 135


def test_a_challenge_tag_is_checked(bws3: Bws3Client, turn: dict[str, list[bytes]]) -> None:
    assert bws3.rest("POST", LIVE, live_body(turn["left"], "left")).json["live"] is True
    refused = bws3.rest("POST", LIVE, live_body(turn["left"], "right")).json
    assert refused["live"] is False and refused["errors"][0]["errorCode"] == "RejectedByChallengeResponse"


def test_a_flat_photo_moved_is_not_live(bws3: Bws3Client) -> None:
    frames = [images.encode(f) for f in facegen.photo_moved(facegen.source_photo("astronaut"), 2,
                                                              np.random.default_rng(3))]
    body = bws3.rest("POST", LIVE, live_body(frames)).json
    assert body["live"] is False and body["errors"][0]["errorCode"] == "RejectedByActiveLiveDetection"
    assert body["livenessScore"] < 0.5


def test_one_image_is_never_passed_as_live(bws3: Bws3Client, turn: dict[str, list[bytes]]) -> None:
    body = bws3.rest("POST", LIVE, {"liveImages": [{"image": b64(turn["left"][0])}]}).json
    assert body["live"] is False and body["livenessScore"] == 0.0
    assert body["errors"][0]["errorCode"] == "PassiveLiveDetectionNotAvailable"
    assert len(body["imageProperties"][0]["faces"]) == 1


def test_an_image_without_a_face_says_so(bws3: Bws3Client, turn: dict[str, list[bytes]]) -> None:
    body = bws3.rest("POST", LIVE, live_body([turn["left"][0], images.encode(images.cat())])).json
    assert body["live"] is False and body["errors"][0]["errorCode"] == "NoFaceFound"
    assert body["errors"][0]["message"].startswith("Image 2")


@pytest.mark.parametrize("count", [0, 3])
def test_not_one_or_two_images_is_400(bws3: Bws3Client, turn: dict[str, list[bytes]], count: int) -> None:
    reply = bws3.rest("POST", LIVE, {"liveImages": [{"image": b64(turn["left"][0])}] * count})
    assert reply.status == 400 and reply.json["code"] == 3


def test_grpc_liveness_detection(bws3: Bws3Client, turn: dict[str, list[bytes]]) -> None:
    request = bws_pb2.LivenessDetectionRequest(live_images=[messages.ImageData(image=turn["up"][0]),
                                                            messages.ImageData(image=turn["up"][1], tags=["up"])])
    reply, call = bws3.grpc("LivenessDetection", request, service="BioIDWebService")
    assert reply.live and reply.status == messages.SUCCEEDED and dict(call.initial_metadata())["jobid"]
    with pytest.raises(grpc.RpcError) as failed:
        bws3.grpc("LivenessDetection", request, service="BioIDWebService", token=bws3.jwt()[:-4] + "AAAA")
    assert failed.value.code() == grpc.StatusCode.UNAUTHENTICATED


# -- VideoLivenessDetection --------------------------------------------------------------------

VIDEO = "/api/v1/videolivenessdetection"


def video_of(frames: list[np.ndarray], fourcc: str = "mp4v", suffix: str = ".mp4", fps: int = 8) -> bytes:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"video{suffix}"
        height, width = frames[0].shape[:2]
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (width, height))
        assert writer.isOpened(), fourcc
        for frame in frames:
            writer.write(frame)
        writer.release()
        return path.read_bytes()


def h264_of(frames: list[np.ndarray], fps: int = 8) -> bytes:
    """An MP4 with H.264 (libx264 through PyAV: OpenCV's wheel decodes H.264 but cannot encode it)."""
    import av

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "video.mp4"
        with av.open(str(path), "w") as container:
            stream = container.add_stream("libx264", rate=fps)
            stream.height, stream.width = frames[0].shape[:2]
            stream.pix_fmt = "yuv420p"
            for frame in frames:
                container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="bgr24")))
            container.mux(stream.encode())
        return path.read_bytes()


@pytest.fixture(scope="module")
def turning_head() -> list[np.ndarray]:
    """A head turning from one side to the other and nodding, rendered from a real photo."""
    rng = np.random.default_rng(5)
    rig = facegen.rig_for(facegen.source_photo("astronaut"))
    return [facegen.camera(rig.render(yaw, pitch), rng)
            for yaw, pitch in zip(np.linspace(-14, 14, 16), 4 * np.sin(np.linspace(0, np.pi, 16)), strict=True)]


@pytest.mark.parametrize(("fourcc", "suffix"), [("mp4v", ".mp4"), ("VP80", ".webm"), ("VP90", ".webm")])
def test_a_video_of_a_turning_head_is_live(bws3: Bws3Client, turning_head: list[np.ndarray], fourcc: str,
                                           suffix: str) -> None:
    reply = bws3.rest("POST", VIDEO, {"video": b64(video_of(turning_head, fourcc, suffix))})
    assert reply.status == 200, reply.body
    body = reply.json
    assert body["live"] is True and body["errors"] == [] and body["livenessScore"] >= 0.5
    numbers = [p["frameNumber"] for p in body["imageProperties"]]
    assert len(numbers) == 12 and numbers == sorted(numbers) and numbers[-1] == 15
    assert sum(1 for p in body["imageProperties"] if p["faces"] and p["faces"][0]["motionLivenessScore"] > 0) >= 2


def test_an_h264_mp4_of_a_turning_head_is_live(bws3: Bws3Client, turning_head: list[np.ndarray]) -> None:
    data = h264_of(turning_head)
    assert data[4:8] == b"ftyp" and b"avc1" in data[:4096]
    body = bws3.rest("POST", VIDEO, {"video": b64(data)}).json
    assert body["live"] is True and body["errors"] == [], body


def test_a_video_of_a_flat_photo_moved_is_not_live(bws3: Bws3Client) -> None:
    frames = facegen.photo_moved(facegen.source_photo("astronaut"), 16, np.random.default_rng(4))
    body = bws3.rest("POST", VIDEO, {"video": b64(video_of(frames))}).json
    assert body["live"] is False and body["errors"][0]["errorCode"] == "RejectedByActiveLiveDetection"


def test_a_video_without_faces_fails_to_acquire(bws3: Bws3Client) -> None:
    body = bws3.rest("POST", VIDEO, {"video": b64(video_of([images.cat()] * 10))}).json
    assert body["live"] is False and body["errors"][0]["errorCode"] == "FailureToAcquire"


@pytest.mark.parametrize("data", [b"", b"\x00" * 4096, b"RIFF....WEBPVP8 not a video at all"])
def test_what_is_not_a_video_is_400(bws3: Bws3Client, data: bytes) -> None:
    reply = bws3.rest("POST", VIDEO, {"video": b64(data)})
    assert reply.status == 400 and reply.json["code"] == 3, reply.body


def test_grpc_video_liveness(bws3: Bws3Client, turning_head: list[np.ndarray]) -> None:
    reply, _ = bws3.grpc("VideoLivenessDetection", bws_pb2.VideoLivenessDetectionRequest(
        video=video_of(turning_head)), service="BioIDWebService")
    assert reply.live and reply.status == messages.SUCCEEDED


# -- PhotoVerify ------------------------------------------------------------------------------


def test_photo_verify_matches_the_live_images_with_the_photo(bws3: Bws3Client, turn: dict[str, list[bytes]]) -> None:
    photo = images.encode(images.astronaut(), ".jpg")
    body = bws3.rest("POST", PHOTO, {**live_body(turn["left"]), "photo": b64(photo)}).json
    assert body["status"] == "SUCCEEDED" and body["errors"] == [], body["errors"]
    assert body["live"] is True and body["livenessScore"] >= 0.5
    assert body["verificationLevel"] in ("LEVEL_4", "LEVEL_5") and 0.5 < body["verificationScore"] <= 1.0
    assert len(body["photoProperties"]["faces"]) == 1 and len(body["imageProperties"]) == 2


def test_photo_verify_of_another_person_is_not_recognized(bws3: Bws3Client, turn: dict[str, list[bytes]]) -> None:
    photo = images.encode(images.grace_hopper())
    body = bws3.rest("POST", PHOTO, {**live_body(turn["left"]), "photo": b64(photo)}).json
    assert body["verificationLevel"] == "NOT_RECOGNIZED" and 0 < body["verificationScore"] < 0.7


def test_photo_verify_without_liveness_takes_one_image(bws3: Bws3Client, turn: dict[str, list[bytes]]) -> None:
    request = bws_pb2.PhotoVerifyRequest(live_images=[messages.ImageData(image=turn["left"][0])],
                                         photo=images.encode(images.astronaut()), disable_liveness_detection=True)
    reply, _ = bws3.grpc("PhotoVerify", request, service="BioIDWebService")
    assert not reply.errors and not reply.live and reply.liveness_score == 0
    assert reply.verification_level >= bws_pb2.PhotoVerifyResponse.LEVEL_4
    with_liveness = bws_pb2.PhotoVerifyRequest(live_images=request.live_images, photo=request.photo)
    reply, _ = bws3.grpc("PhotoVerify", with_liveness, service="BioIDWebService")
    assert not reply.live and reply.errors[0].error_code == "PassiveLiveDetectionNotAvailable"
    assert reply.verification_level >= bws_pb2.PhotoVerifyResponse.LEVEL_4  # still verified, not live


def test_photo_verify_without_a_usable_photo(bws3: Bws3Client, turn: dict[str, list[bytes]]) -> None:
    assert bws3.rest("POST", PHOTO, live_body(turn["left"])).status == 400  # no photo
    body = bws3.rest("POST", PHOTO, {**live_body(turn["left"]), "photo": b64(images.encode(images.cat()))}).json
    assert body["verificationLevel"] == "NOT_RECOGNIZED" and body["verificationScore"] == 0.0
    assert any(e["errorCode"] == "NoFaceFound" and e["message"].startswith("Photo") for e in body["errors"])
