"""BWS 3 "full templates": thumbnails stored with the template, and the upgrade to another
encoder. Runs its own stack and switches its enrollment service from encoder version 1 (SFace)
to version 2 (SFace averaged with the mirrored face: other vectors for the same face)."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import cv2
import numpy as np
import pytest

from bws.devrun import Stack
from tests.e2e.conftest import bws3_of, running_stack
from tests.support import images
from tests.support.bws3 import Bws3Client

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def stack(request: pytest.FixtureRequest) -> Iterator[Stack]:
    with running_stack("bws3-upgrade", request, BWS_ENCODER_VERSION="1") as running:
        yield running


@pytest.fixture(scope="module")
def bws3(stack: Stack) -> Bws3Client:
    return bws3_of(stack)


def switch_encoder(stack: Stack, version: int, thumbnails: bool = True) -> None:
    stack.extra_env.update(BWS_ENCODER_VERSION=str(version), BWS_STORE_THUMBNAILS=str(thumbnails).lower())
    stack.restart("enroll_service")


def test_templates_keep_thumbnails_and_are_upgraded_to_a_new_encoder(stack: Stack, bws3: Bws3Client) -> None:
    astronaut, hopper = images.encode(images.astronaut()), images.encode(images.grace_hopper())
    jpeg = images.encode(images.astronaut(), ".jpg")
    switch_encoder(stack, 1)
    body = bws3.enroll(101, astronaut, jpeg).json
    assert body["templateStatus"]["thumbnailsStored"] == 2 and body["templateStatus"]["encoderVersion"] == 1
    bws3.enroll(102, hopper)
    assert bws3.set_tags(101, ["kept"]).status == 200
    status = bws3.status(101, thumbnails=True).json
    assert status["thumbnailsStored"] == 2 and len(status["thumbnails"]) == 2
    thumbnail = base64.b64decode(status["thumbnails"][0]["image"])
    assert thumbnail.startswith(b"\x89PNG")
    assert cv2.imdecode(np.frombuffer(thumbnail, np.uint8), cv2.IMREAD_COLOR).shape == (112, 112, 3)
    assert bws3.status(101).json["thumbnails"] == []  # only when asked for
    switch_encoder(stack, 1, thumbnails=False)
    assert bws3.enroll(103, hopper).json["templateStatus"]["thumbnailsStored"] == 0

    switch_encoder(stack, 2)
    assert bws3.status(101).json["encoderVersion"] == 1  # not upgraded behind the client's back
    refused = bws3.verify(101, astronaut).json
    assert refused["verified"] is False and refused["errors"][0]["errorCode"] == "DifferentFeatureVersions"
    found = bws3.search(astronaut, top_matches=True).json
    assert found["result"][0]["matches"] == []
    assert found["errors"][0]["errorCode"] == "DifferentFeatureVersions" and found["errors"][0]["message"][0] == "3"

    upgraded = bws3.enroll(101).json  # no images: re-computed from the thumbnails
    assert upgraded["performedAction"] == "TEMPLATE_UPGRADED" and upgraded["enrolledImages"] == 0
    status = upgraded["templateStatus"]
    assert status["encoderVersion"] == 2 and status["featureVectors"] == 2 and status["tags"] == ["kept"]
    verified = bws3.verify(101, astronaut).json
    assert verified["verified"] is True and verified["errors"] == []
    with_images = bws3.enroll(102, hopper).json  # upgraded from its thumbnail and the new image
    assert with_images["performedAction"] == "TEMPLATE_UPGRADED"
    assert with_images["templateStatus"]["featureVectors"] == 2
    assert with_images["templateStatus"]["thumbnailsStored"] == 2
    matches = bws3.search(astronaut).json["result"][0]["matches"]
    assert [m["classId"] for m in matches] == [101]

    assert bws3.enroll(103).json["performedAction"] == "NONE"  # no thumbnails: nothing to upgrade from
    assert bws3.verify(103, hopper).json["errors"][0]["errorCode"] == "DifferentFeatureVersions"
    remade = bws3.enroll(103, hopper).json
    assert remade["performedAction"] == "NEW_TEMPLATE_CREATED" and remade["templateStatus"]["encoderVersion"] == 2
    assert bws3.verify(103, hopper).json["verified"] is True


def test_classic_verify_of_an_old_template_is_no_template_available(stack: Stack, bws3: Bws3Client) -> None:
    from tests.e2e.conftest import client_of

    switch_encoder(stack, 1)
    face = images.encode(images.astronaut())
    bws3.enroll(201, face)
    switch_encoder(stack, 2)
    client = client_of(stack)
    token = client.token(bcid="bws.1.201", task="verify", livedetection=False)
    assert client.upload(token, face).json["Accepted"]
    assert client.call("verify", token).json == {"Success": False, "Error": "NoTemplateAvailable"}
    assert client.basic_call("DELETE", "/extension/deleteclass?bcid=bws.1.201").status == 200
    assert bws3.status(201).json["available"] is False and bws3.status(201).json["thumbnailsStored"] == 0
