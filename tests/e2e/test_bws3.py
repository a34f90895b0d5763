"""BWS 3 FaceRecognition over the real processes, as BioID's clients call it: REST with raw
proto3 JSON and a client-signed JWT, gRPC by full method name; and the same templates through
the classic API."""

from __future__ import annotations

import itertools
import re
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import jwt
import pytest

from bws.bws3 import bwsmessages_pb2 as messages
from bws.bws3 import facerecognition_pb2 as fr
from bws.devrun import Stack
from tests.e2e.conftest import bws3_of
from tests.support import images
from tests.support.bws3 import Bws3Client, b64, sign
from tests.support.client import BwsClient

pytestmark = pytest.mark.e2e

_ids = itertools.count(int(time.time() * 1000) % 10**9 * 1000)


@pytest.fixture
def class_id() -> int:
    return next(_ids)


@pytest.fixture(scope="module")
def bws3(stack: Stack) -> Bws3Client:
    return bws3_of(stack)


@pytest.fixture(scope="module")
def astronaut() -> bytes:
    return images.encode(images.astronaut())


@pytest.fixture(scope="module")
def hopper() -> bytes:
    return images.encode(images.grace_hopper())


@pytest.fixture(scope="module")
def cat() -> bytes:
    return images.encode(images.cat())


# -- REST: the six calls --------------------------------------------------------------------


def test_enroll_creates_then_updates_the_template(bws3: Bws3Client, class_id: int, astronaut: bytes) -> None:
    first = bws3.enroll(class_id, astronaut)
    assert first.status == 200, first.body
    body = first.json
    assert body["status"] == "SUCCEEDED" and body["errors"] == []
    assert body["performedAction"] == "NEW_TEMPLATE_CREATED" and body["enrolledImages"] == 1
    status = body["templateStatus"]
    assert status["classId"] == class_id and status["available"] is True
    assert status["featureVectors"] == 1 and status["encoderVersion"] >= 1 and status["enrolled"].endswith("Z")
    [face] = body["imageProperties"][0]["faces"]
    assert face["rightEye"]["x"] < face["leftEye"]["x"]  # BioID's convention: the right eye is the image's left one
    second = bws3.enroll(class_id, astronaut, astronaut).json
    assert second["performedAction"] == "TEMPLATE_UPDATED" and second["enrolledImages"] == 2
    assert second["templateStatus"]["featureVectors"] == 3
    assert second["templateStatus"]["enrolled"] == status["enrolled"]


def test_enroll_skips_and_reports_images_without_one_usable_face(bws3: Bws3Client, class_id: int,
                                                                 astronaut: bytes, cat: bytes) -> None:
    two = images.encode(images.two_people())
    body = bws3.enroll(class_id, cat, astronaut, two, b"not an image").json
    assert body["performedAction"] == "NEW_TEMPLATE_CREATED" and body["enrolledImages"] == 1
    codes = [e["errorCode"] for e in body["errors"]]
    assert codes == ["NoFaceFound", "MultipleFacesFound", "InvalidSampleData"], body["errors"]
    assert [m["message"].split(":")[0] for m in body["errors"]] == ["Image 1", "Image 3", "Image 4"]
    assert len(body["imageProperties"]) == 4 and body["imageProperties"][0]["faces"] == []


def test_enroll_without_a_usable_face_fails_in_band(bws3: Bws3Client, class_id: int, cat: bytes) -> None:
    reply = bws3.enroll(class_id, cat)
    assert reply.status == 200
    body = reply.json
    assert body["performedAction"] == "ENROLLMENT_FAILED" and body["enrolledImages"] == 0
    assert body["errors"][0]["errorCode"] == "NoFaceFound" and body["templateStatus"]["available"] is False
    assert bws3.status(class_id).json["available"] is False


def test_enroll_without_images_does_nothing(bws3: Bws3Client, class_id: int) -> None:
    body = bws3.enroll(class_id).json
    assert body["performedAction"] == "NONE" and body["errors"] == []


def test_verify_tells_the_same_person_from_another(bws3: Bws3Client, class_id: int, astronaut: bytes,
                                                   hopper: bytes) -> None:
    bws3.enroll(class_id, astronaut)
    same = bws3.verify(class_id, images.encode(images.astronaut(), ".jpg")).json
    assert same["verified"] is True and 0.5 < same["score"] <= 1.0 and same["errors"] == []
    other = bws3.verify(class_id, hopper).json
    assert other["verified"] is False and 0.0 < other["score"] < same["score"]


def test_verify_without_a_face_is_an_in_band_error(bws3: Bws3Client, class_id: int, astronaut: bytes,
                                                   cat: bytes) -> None:
    bws3.enroll(class_id, astronaut)
    body = bws3.verify(class_id, cat).json
    assert body["verified"] is False and body["score"] == 0.0 and body["errors"][0]["errorCode"] == "NoFaceFound"


def test_verify_of_a_class_without_template_is_404(bws3: Bws3Client, class_id: int, astronaut: bytes) -> None:
    reply = bws3.verify(class_id, astronaut)
    assert reply.status == 404 and reply.json["code"] == grpc.StatusCode.NOT_FOUND.value[0]
    assert str(class_id) in reply.json["message"]


def test_search_finds_each_image_in_order_and_filters_by_tags(bws3: Bws3Client, astronaut: bytes,
                                                               hopper: bytes, cat: bytes) -> None:
    her, him = next(_ids), next(_ids)
    tag = f"search-{her}"
    bws3.enroll(her, astronaut)
    bws3.enroll(him, hopper)
    assert bws3.set_tags(her, [tag, "staff"]).status == 200
    assert bws3.set_tags(him, [tag]).status == 200
    body = bws3.search(hopper, cat, astronaut, tags=[tag]).json
    assert body["status"] == "SUCCEEDED" and len(body["result"]) == 3 and len(body["imageProperties"]) == 3
    assert [m["classId"] for m in body["result"][0]["matches"]] == [him]
    assert body["result"][1] == {"matches": []} and body["errors"][0]["message"].startswith("Image 2")
    assert [m["classId"] for m in body["result"][2]["matches"]] == [her]
    only_staff = bws3.search(hopper, tags=[tag, "staff"], top_matches=True).json
    assert [m["classId"] for m in only_staff["result"][0]["matches"]] == [her]  # top: also a non-match
    assert 0.0 < only_staff["result"][0]["matches"][0]["score"] <= 1.0
    assert bws3.search(hopper, tags=[tag, "staff"]).json["result"][0]["matches"] == []  # no match above threshold


def test_set_template_tags_replaces_them(bws3: Bws3Client, class_id: int, astronaut: bytes) -> None:
    assert bws3.set_tags(class_id, ["a"]).status == 404  # no template yet
    bws3.enroll(class_id, astronaut)
    assert bws3.set_tags(class_id, ["b", "a", "b"]).json == {}
    assert bws3.status(class_id).json["tags"] == ["a", "b"]
    bws3.set_tags(class_id, ["c"])
    assert bws3.status(class_id).json["tags"] == ["c"]
    assert bws3.enroll(class_id, astronaut).json["templateStatus"]["tags"] == ["c"]  # kept by enroll


def test_template_status_and_delete(bws3: Bws3Client, class_id: int, astronaut: bytes) -> None:
    missing = bws3.status(class_id)
    assert missing.status == 200 and missing.json["available"] is False and missing.json["classId"] == class_id
    bws3.enroll(class_id, astronaut)
    assert bws3.status(class_id).json["available"] is True
    reply = bws3.delete(class_id)
    assert reply.status == 200 and reply.json == {}
    assert bws3.status(class_id).json["available"] is False
    assert bws3.delete(class_id).status == 200  # deleting nothing is not an error


# -- REST: headers and bad requests ----------------------------------------------------------


def test_replies_carry_jobid_version_date_and_the_reference_number(bws3: Bws3Client, class_id: int) -> None:
    reply = bws3.rest("GET", f"/api/face/v1/template/status/{class_id}", headers={"Reference-Number": "ref-42"})
    headers = {k.lower(): v for k, v in reply.headers.items()}
    assert headers["reference-number"] == "ref-42" and len(headers["jobid"]) == 36
    assert headers["bws-version"] and headers["date"].endswith("GMT")
    failed = bws3.rest("GET", "/api/face/v1/template/status/0", headers={"Reference-Number": "ref-43"})
    assert {k.lower(): v for k, v in failed.headers.items()}["reference-number"] == "ref-43"


@pytest.mark.parametrize("path", ["/api/face/v1/template/status/0", "/api/face/v1/template/status/-5",
                                  "/api/face/v1/template/status/abc",
                                  "/api/face/v1/template/status/9223372036854775808"])
def test_a_class_id_that_is_not_positive_is_400(bws3: Bws3Client, path: str) -> None:
    reply = bws3.rest("GET", path)
    assert reply.status == 400
    assert reply.json == {"code": 3, "message": "A positive number is required for the class ID."}


@pytest.mark.parametrize("raw", [b"{", b'{"images": 5}', b'[{"image": 5}]', b'[{"picture": "AA=="}]', b"[[[]]]"])
def test_a_body_that_is_not_the_message_is_400(bws3: Bws3Client, class_id: int, raw: bytes) -> None:
    reply = bws3.rest("POST", f"/api/face/v1/enroll/{class_id}", raw=raw)
    assert reply.status == 400 and reply.json["code"] == 3, reply.body
    assert bws3.status(class_id).json["available"] is False


def test_too_many_images_is_400(bws3: Bws3Client, stack: Stack, class_id: int, astronaut: bytes) -> None:
    reply = bws3.enroll(class_id, *[b"x"] * 33)
    assert reply.status == 400 and reply.json["code"] == 3


# -- authentication ---------------------------------------------------------------------------


def _forged(bws3: Bws3Client) -> dict[str, str]:
    other = b"k" * 64
    now = int(time.time())
    none_token = jwt.encode({"sub": bws3.client_id, "iss": bws3.client_id, "aud": "BWS", "exp": now + 60},
                            None, algorithm="none")
    return {
        "another key": sign(bws3.client_id, other),
        "alg none": none_token,
        "expired": sign(bws3.client_id, bws3.key, lifetime=-120),
        "wrong audience": sign(bws3.client_id, bws3.key, aud="BWS2"),
        "unknown client": sign("nobody", bws3.key),
        "issuer not the client": sign(bws3.client_id, bws3.key, iss="someone-else"),
        "no expiry": jwt.encode({"sub": bws3.client_id, "iss": bws3.client_id, "aud": "BWS"}, bws3.key, "HS256"),
        "lives too long": sign(bws3.client_id, bws3.key, lifetime=7 * 24 * 3600),
        "not yet valid": sign(bws3.client_id, bws3.key, nbf=now + 600),
        "garbage": "abc.def.ghi",
        "empty": "",
    }


@pytest.mark.parametrize("case", ["another key", "alg none", "expired", "wrong audience", "unknown client",
                                  "issuer not the client", "no expiry", "lives too long", "not yet valid",
                                  "garbage", "empty"])
def test_a_bad_jwt_is_401_and_nothing_is_done(bws3: Bws3Client, class_id: int, astronaut: bytes, case: str) -> None:
    token = _forged(bws3)[case]
    reply = bws3.rest("POST", f"/api/face/v1/enroll/{class_id}", [{"image": b64(astronaut)}], token=token)
    assert reply.status == 401 and reply.json["code"] == grpc.StatusCode.UNAUTHENTICATED.value[0], case
    assert reply.headers.get("WWW-Authenticate", "").startswith("Bearer")
    with pytest.raises(grpc.RpcError) as failed:
        bws3.grpc("Enroll", fr.FaceEnrollmentRequest(classId=class_id, images=[messages.ImageData(image=astronaut)]),
                  token=token)
    assert failed.value.code() == grpc.StatusCode.UNAUTHENTICATED, case
    assert bws3.status(class_id).json["available"] is False


@pytest.mark.parametrize("algorithm", ["HS256", "HS384", "HS512"])
def test_each_hmac_algorithm_is_accepted(bws3: Bws3Client, class_id: int, algorithm: str) -> None:
    token = sign(bws3.client_id, bws3.key, algorithm=algorithm)
    assert bws3.rest("GET", f"/api/face/v1/template/status/{class_id}", token=token).status == 200


def test_a_classic_token_or_basic_credentials_are_not_a_bws3_jwt(bws3: Bws3Client, client: BwsClient,
                                                                class_id: int) -> None:
    classic = client.token(bcid=f"bws.1.{class_id}", task="enroll")
    assert bws3.rest("GET", f"/api/face/v1/template/status/{class_id}", token=classic).status == 401
    basic = client.basic()["Authorization"]
    reply = client.request("GET", f"/api/face/v1/template/status/{class_id}", headers={"Authorization": basic})
    assert reply.status == 401


# -- gRPC ---------------------------------------------------------------------------------------


def test_grpc_enroll_verify_status_tags_search_delete(bws3: Bws3Client, class_id: int, astronaut: bytes,
                                                      hopper: bytes) -> None:
    enrolled, call = bws3.grpc("Enroll", fr.FaceEnrollmentRequest(
        classId=class_id, images=[messages.ImageData(image=astronaut)]), metadata=(("reference-number", "r-1"),))
    assert enrolled.performed_action == fr.FaceEnrollmentResponse.NEW_TEMPLATE_CREATED
    initial = dict(call.initial_metadata())
    assert initial["reference-number"] == "r-1" and initial["jobid"] and initial["bws-version"] and initial["date"]
    assert int(dict(call.trailing_metadata())["response-time-ms"]) >= 0
    verified, _ = bws3.grpc("Verify", fr.FaceVerificationRequest(classId=class_id,
                                                                 image=messages.ImageData(image=astronaut)))
    assert verified.verified and 0.5 < verified.score <= 1.0
    bws3.grpc("SetTemplateTags", fr.SetTemplateTagsRequest(classId=class_id, tags=[f"g{class_id}"]))
    status, _ = bws3.grpc("GetTemplateStatus", fr.FaceTemplateStatusRequest(classId=class_id))
    assert status.available and list(status.tags) == [f"g{class_id}"] and status.feature_vectors == 1
    found, _ = bws3.grpc("Search", fr.FaceSearchRequest(images=[messages.ImageData(image=astronaut),
                                                                 messages.ImageData(image=hopper)],
                                                         tags=[f"g{class_id}"]))
    assert [m.classId for m in found.result[0].matches] == [class_id] and not found.result[1].matches
    bws3.grpc("DeleteTemplate", fr.DeleteTemplateRequest(classId=class_id))
    status, _ = bws3.grpc("GetTemplateStatus", fr.FaceTemplateStatusRequest(classId=class_id))
    assert not status.available


def test_grpc_errors_are_status_codes(bws3: Bws3Client, class_id: int, astronaut: bytes) -> None:
    for method, request, code in [
        ("GetTemplateStatus", fr.FaceTemplateStatusRequest(classId=0), grpc.StatusCode.INVALID_ARGUMENT),
        ("Verify", fr.FaceVerificationRequest(classId=class_id, image=messages.ImageData(image=astronaut)),
         grpc.StatusCode.NOT_FOUND),
        ("SetTemplateTags", fr.SetTemplateTagsRequest(classId=class_id, tags=["x"]), grpc.StatusCode.NOT_FOUND),
    ]:
        with pytest.raises(grpc.RpcError) as failed:
            bws3.grpc(method, request)
        assert failed.value.code() == code, method
        assert "Traceback" not in (failed.value.details() or "")


def test_grpc_health_answers_liveness_and_readiness(bws3: Bws3Client) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(bws3.grpc_target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for service in ("liveness", "readiness"):
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING


# -- one set of templates for both APIs ---------------------------------------------------------


def _classic_enroll(client: BwsClient, bcid: str, image: bytes) -> None:
    token = client.token(bcid=bcid, task="enroll", livedetection=False)
    assert client.upload(token, image).json["Accepted"]
    assert client.enroll(token).json == {"Success": True}


def _classic(client: BwsClient, task: str, bcid: str, image: bytes) -> dict:
    token = client.token(bcid=bcid, task=task, livedetection=False)
    assert client.upload(token, image).json["Accepted"]
    return client.call(task, token).json


def test_classic_enrollment_is_seen_by_bws3(bws3: Bws3Client, client: BwsClient, class_id: int,
                                            astronaut: bytes) -> None:
    _classic_enroll(client, f"bws.1.{class_id}", astronaut)
    assert bws3.status(class_id).json["available"] is True
    assert bws3.verify(class_id, astronaut).json["verified"] is True
    matches = bws3.search(astronaut, top_matches=True).json["result"][0]["matches"]
    assert class_id in [m["classId"] for m in matches]
    assert client.basic_call("DELETE", f"/extension/deleteclass?bcid=bws.1.{class_id}").status == 200
    assert bws3.status(class_id).json["available"] is False


def test_bws3_enrollment_is_seen_by_the_classic_api(bws3: Bws3Client, client: BwsClient, class_id: int,
                                                    astronaut: bytes) -> None:
    assert bws3.enroll(class_id, astronaut).json["performedAction"] == "NEW_TEMPLATE_CREATED"
    bcid = f"bws.1.{class_id}"
    assert client.basic_call("GET", f"/extension/isenrolled?bcid={bcid}&trait=Face").status == 200
    assert _classic(client, "verify", bcid, astronaut) == {"Success": True}
    identified = _classic(client, "identify", "bws.1.0", astronaut)
    assert f"bws/1/{class_id}" in [m["BCID"] for m in identified["Matches"]]
    assert bws3.delete(class_id).status == 200
    assert client.basic_call("GET", f"/extension/isenrolled?bcid={bcid}&trait=Face").status == 404


def test_concurrent_enrolls_of_one_class_lose_no_update(bws3: Bws3Client, class_id: int, astronaut: bytes) -> None:
    with ThreadPoolExecutor(6) as pool:
        replies = list(pool.map(lambda _: bws3.enroll(class_id, astronaut), range(6)))
    assert all(r.status == 200 and r.json["enrolledImages"] == 1 for r in replies), [r.body for r in replies]
    status = bws3.status(class_id).json
    assert status["featureVectors"] == 6 and status["thumbnailsStored"] == 6


def test_a_rotated_key_and_the_new_one_both_work(stack: Stack, class_id: int) -> None:
    from tests.e2e.conftest import BWS3_ROTATING_APP, BWS3_ROTATING_KEYS

    for key in BWS3_ROTATING_KEYS:
        client = Bws3Client(stack.url, f"127.0.0.1:{stack.grpc_port}", str(BWS3_ROTATING_APP["id"]), key)
        token = sign(client.client_id, key, algorithm="HS256")
        reply = client.rest("GET", f"/api/face/v1/template/status/{class_id}", token=token)
        assert reply.status == 200 and reply.json["available"] is False


# -- hostile input ----------------------------------------------------------------------------


def test_an_image_bomb_is_skipped_from_its_header(bws3: Bws3Client, class_id: int) -> None:
    from tests.unit.test_images import png_bomb

    began = time.monotonic()
    body = bws3.enroll(class_id, png_bomb(20_000, 20_000)).json
    assert body["performedAction"] == "ENROLLMENT_FAILED" and body["errors"][0]["errorCode"] == "InvalidSampleData"
    assert time.monotonic() - began < 5


def test_json_nested_deep_and_bodies_over_the_limit_are_refused(bws3: Bws3Client, class_id: int) -> None:
    deep = bws3.rest("POST", "/api/face/v1/search", raw=b"[" * 100_000 + b"]" * 100_000)
    assert deep.status == 400 and deep.json["code"] == 3
    huge = bws3.rest("POST", f"/api/face/v1/enroll/{class_id}", raw=b"[" + b" " * (17 * 1024 * 1024) + b"]")
    assert huge.status == 413 and huge.json["code"] == 3


def test_no_jwt_score_or_class_id_in_the_logs(bws3: Bws3Client, stack: Stack, astronaut: bytes) -> None:
    class_id = 10**12 + next(_ids) % 10**9  # thirteen digits: not a number the logs hold otherwise
    token = bws3.jwt()
    bws3.rest("POST", f"/api/face/v1/enroll/{class_id}", [{"image": b64(astronaut)}], token=token)
    bws3.rest("POST", f"/api/face/v1/verify/{class_id}", {"image": b64(astronaut)}, token=token)
    found = bws3.rest("POST", "/api/face/v1/search", {"images": [{"image": b64(astronaut)}]}, token=token).json
    assert class_id in [m["classId"] for m in found["result"][0]["matches"]]
    bws3.grpc("Verify", fr.FaceVerificationRequest(classId=class_id, image=messages.ImageData(image=astronaut)),
              token=token)
    bws3.delete(class_id)
    time.sleep(0.2)
    for name in ("liveness_service", "enroll_service", "gateway"):
        lines = [line for line in stack.log_path(name).read_text().splitlines() if ": settings: " not in line]
        assert not [line for line in lines if token.split(".")[2] in line], name
        leaks = [line for line in lines if re.search(r"score\W{1,3}\d", line, re.IGNORECASE) or
                 (str(class_id) in line and '"POST /api/face/v1/' not in line and '"DELETE /api/face/v1/' not in line)]
        assert leaks == [], (name, leaks[:3])
