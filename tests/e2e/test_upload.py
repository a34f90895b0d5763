"""POST /extension/upload over the real processes: body formats, inspection, bad input."""

from __future__ import annotations

import base64
import io

import cv2
import pytest

from bws.storage import ObjectStore
from tests.support import images
from tests.support.client import BwsClient, claims_of

pytestmark = pytest.mark.e2e


@pytest.fixture
def token(client: BwsClient, bcid: str) -> str:
    return client.token(bcid=bcid, task="enroll", livedetection=False)


@pytest.mark.parametrize("content_type", [
    "text/plain", "application/x-www-form-urlencoded; charset=UTF-8", "application/json",
])
def test_upload_of_a_face_is_accepted_and_stored(client: BwsClient, store: ObjectStore, token: str,
                                                 content_type: str) -> None:
    reply = client.upload(token, images.encode(images.astronaut()), as_type=content_type)
    assert reply.status == 200, reply.body
    assert reply.json["Accepted"] is True
    assert isinstance(reply.json["Warnings"], list)
    assert len(store.samples(claims_of(token)["jti"])) == 1


def test_upload_accepts_the_jwt_scheme(client: BwsClient, token: str) -> None:
    reply = client.upload(token, images.encode(images.grace_hopper(), ".jpg"), scheme="JWT")
    assert reply.status == 200 and reply.json["Accepted"] is True


def test_upload_of_a_cat_is_not_accepted_and_not_kept(client: BwsClient, store: ObjectStore, token: str) -> None:
    reply = client.upload(token, images.encode(images.cat()))
    assert reply.status == 200
    assert reply.json == {"Accepted": False, "Error": "NoFaceFound"}
    assert store.samples(claims_of(token)["jti"]) == []


def test_upload_of_two_people_is_multiple_faces_found(client: BwsClient, token: str) -> None:
    reply = client.upload(token, images.encode(images.two_people()))
    assert reply.json == {"Accepted": False, "Error": "MultipleFacesFound"}


@pytest.mark.parametrize("body", [
    b"",
    b"hello",
    b"data:image/png;base64,!!!not-base64!!!",
    b"data:text/html;base64," + base64.b64encode(b"<script>"),
    b"data:image/png;base64," + base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\x00" * 50),  # truncated PNG
    b"data:image/png;base64," + base64.b64encode(b"GIF89a-not-really"),
], ids=["empty", "text", "bad-base64", "html", "truncated-png", "fake-gif"])
def test_upload_of_a_corrupt_body_is_400_and_keeps_nothing(client: BwsClient, store: ObjectStore,
                                                             token: str, body: bytes) -> None:
    reply = client.request("POST", "/extension/upload?tag=any&index=0", body=body,
                           headers={"Authorization": f"Bearer {token}", "Content-Type": "text/plain"})
    assert reply.status == 400, reply.body
    assert reply.json["Message"] and "Traceback" not in reply.text
    assert store.samples(claims_of(token)["jti"]) == []


def test_upload_above_the_size_limit_is_413(client: BwsClient, token: str) -> None:
    body = b"data:image/png;base64," + b"A" * (9 * 1024 * 1024)
    reply = client.request("POST", "/extension/upload", body=body,
                           headers={"Authorization": f"Bearer {token}", "Content-Type": "text/plain"})
    assert reply.status == 413
    assert "too large" in reply.json["Message"]


def test_upload_with_an_unknown_tag_is_400(client: BwsClient, token: str) -> None:
    assert client.upload(token, images.encode(images.astronaut()), tag="sideways").status == 400


@pytest.mark.parametrize("header", [None, "Bearer", "Bearer not.a.token", "Basic dGVzdDp0ZXN0"])
def test_upload_without_a_valid_token_is_401(client: BwsClient, header: str | None) -> None:
    headers = {"Content-Type": "text/plain"} | ({"Authorization": header} if header else {})
    reply = client.request("POST", "/extension/upload", body=b"data:image/png;base64,AAAA", headers=headers)
    assert reply.status == 401 and reply.json["Message"]


def test_upload_beyond_the_samples_a_token_may_hold_is_400(client: BwsClient, store: ObjectStore,
                                                           token: str) -> None:
    limit = 32  # BWS_MAX_SAMPLES_PER_TOKEN
    face = images.encode(images.grace_hopper(), ".jpg")
    jti = claims_of(token)["jti"]
    for index in range(limit - 2):  # as if another gateway replica had stored them
        store.put_sample(jti, index, "any", face, "image/jpeg")
    # This replica counts what it stores and checks the store once its count reaches the
    # limit: a token holds at most the limit per replica, here 2 × 32.
    replies = [client.upload(token, face, index=index) for index in range(limit, 2 * limit + 1)]
    assert [r.status for r in replies] == [200] * limit + [400]
    assert "Too many samples" in replies[-1].json["Message"]
    assert len(store.samples(jti)) == 2 * limit - 2
    # Samples that a call consumed no longer count.
    store.delete([s.key for s in store.samples(jti)][:limit])
    assert [client.upload(token, face, index=index).status for index in (99, 100, 101)] == [200, 200, 400]
    assert len(store.samples(jti)) == limit


def test_a_phone_jpeg_stored_rotated_is_accepted_and_verifies(client: BwsClient, bcid: str) -> None:
    """EXIF Orientation=6, as phones store portrait photos: read upright, as every viewer shows it."""
    from PIL import Image

    upright = images.grace_hopper()
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    rotated = cv2.cvtColor(cv2.rotate(upright, cv2.ROTATE_90_COUNTERCLOCKWISE), cv2.COLOR_BGR2RGB)
    Image.fromarray(rotated).save(buffer, "JPEG", quality=92, exif=exif.tobytes())
    token = client.token(bcid=bcid, task="enroll", livedetection=False)
    assert client.upload(token, images.encode(upright)).json["Accepted"] is True
    assert client.enroll(token).json == {"Success": True}
    token = client.token(bcid=bcid, task="verify", livedetection=False)
    reply = client.upload(token, buffer.getvalue())
    assert reply.json == {"Accepted": True, "Warnings": reply.json.get("Warnings", [])}, reply.json
    assert client.call("verify", token).json == {"Success": True}


@pytest.mark.parametrize("case", sorted(images.SUBJECT_WITH))
def test_a_photo_with_a_bystander_is_accepted_for_its_subject(client: BwsClient, bcid: str, case: str) -> None:
    token = client.token(bcid=bcid, task="enroll", livedetection=False)
    assert client.upload(token, images.encode(images.grace_hopper())).json["Accepted"] is True
    assert client.enroll(token).json == {"Success": True}
    token = client.token(bcid=bcid, task="verify", livedetection=False)
    reply = client.upload(token, images.encode(images.scene(*images.SUBJECT_WITH[case]), ".jpg"))
    assert reply.json["Accepted"] is True, reply.json
    assert client.call("verify", token).json == {"Success": True}  # the subject's face was used


def test_a_photo_of_two_people_side_by_side_is_multiple_faces_found(client: BwsClient, token: str) -> None:
    reply = client.upload(token, images.encode(images.scene(*images.TWO_PEOPLE_SIDE_BY_SIDE), ".jpg"))
    assert reply.json == {"Accepted": False, "Error": "MultipleFacesFound"}
