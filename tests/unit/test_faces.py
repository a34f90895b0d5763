"""The face engine on OpenVINO against the OpenCV pipeline it replaced, on the shipped files."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from bws import models
from bws.faces import FaceDetector, FaceEmbedder, align_face
from tests.support import images


@pytest.fixture(scope="module")
def detector() -> FaceDetector:
    return FaceDetector()


@pytest.fixture(scope="module")
def embedder() -> FaceEmbedder:
    return FaceEmbedder()


def opencv_faces(image: np.ndarray) -> np.ndarray:
    """OpenCV's own YuNet on the shipped file, as the previous release ran it (rows of 15)."""
    found = cv2.FaceDetectorYN.create(str(models.YUNET.path()), "", (image.shape[1], image.shape[0]), 0.7, 0.3, 50)
    rows = found.detect(image)[1]
    return np.zeros((0, 15)) if rows is None else rows


@pytest.mark.parametrize("photo", [images.astronaut, images.grace_hopper])
def test_the_detector_finds_what_opencv_finds(photo, detector: FaceDetector) -> None:
    image = photo()
    [mine], [theirs] = detector.detect(image), opencv_faces(image)
    assert np.abs(np.array(mine.box) - theirs[:4]).max() < 2.0
    assert np.abs(mine.landmarks.reshape(-1) - theirs[4:14]).max() < 2.0
    assert mine.score == pytest.approx(float(theirs[14]), abs=0.02)


def test_two_people_are_two_faces(detector: FaceDetector) -> None:
    scene = images.two_people()
    assert len(detector.detect(scene)) == len(opencv_faces(scene)) == 2


def test_small_faces_and_large_images(detector: FaceDetector) -> None:
    photo = images.astronaut()
    [face] = detector.detect(photo)
    factor = 50 / face.size
    small = cv2.resize(photo, None, fx=factor, fy=factor, interpolation=cv2.INTER_AREA)
    frame = np.full((480, 640, 3), 90, np.uint8)
    frame[100:100 + small.shape[0], 200:200 + small.shape[1]] = small
    [found] = detector.detect(frame)
    assert 40 < found.size < 60
    assert not detector.detect(frame, min_face_size=80)
    large = cv2.resize(photo, (1600, 1600), interpolation=cv2.INTER_CUBIC)  # scaled down to 640 to detect
    [big] = detector.detect(large)
    assert np.abs(np.array(big.box) - np.array(face.box) * 1600 / 512).max() < 10


def test_embeddings_agree_with_opencv_dnn_on_the_shipped_file(detector: FaceDetector, embedder: FaceEmbedder) -> None:
    network = cv2.dnn.readNet(str(models.SFACE.path()))
    for photo in (images.astronaut(), images.grace_hopper()):
        crop = align_face(photo, detector.detect(photo)[0])
        network.setInput(cv2.dnn.blobFromImage(crop, 1.0, (112, 112), (0, 0, 0), swapRB=True), "data")
        theirs = network.forward().reshape(-1)
        assert float(embedder.embed_aligned(crop) @ (theirs / np.linalg.norm(theirs))) > 0.999


def test_the_expanded_files_are_the_shipped_weights_and_checked_by_digest(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(models, "models_dir", lambda: tmp_path)
    with pytest.raises(models.ModelError, match="python -m bws.models"):
        models.YUNET_F32.path()
    assert models.YUNET_F32.write().read_bytes() == models.expand(models.YUNET.path().read_bytes())
    (tmp_path / models.YUNET_F32.name).write_bytes(b"not the model")
    with pytest.raises(models.ModelError, match="SHA-256"):
        models.YUNET_F32.path()
    models.YUNET_F32.write()  # a wrong file is written again
    assert models.YUNET_F32.path().is_file()
