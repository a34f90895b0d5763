"""Upload inspection and texture cues (liveness_service/inspection.py) on real and generated faces."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from bws.faces import FaceDetector, align_face
from liveness_service import inspection
from tests import facegen
from tests.support import images


@pytest.fixture(scope="module")
def detector() -> FaceDetector:
    return FaceDetector()


def aligned_second_frame(frames: list[np.ndarray], detector: FaceDetector) -> np.ndarray:
    frame = frames[1]
    return align_face(frame, detector.detect(frame)[0])


def test_a_face_is_accepted_without_warnings(detector: FaceDetector) -> None:
    result = inspection.inspect(images.grace_hopper(), detector, 40)
    assert result.accepted and result.warnings == ()


def test_no_face_and_two_faces_are_refused(detector: FaceDetector) -> None:
    assert inspection.inspect(images.cat(), detector, 40).error_code == "NoFaceFound"
    assert inspection.inspect(images.two_people(), detector, 40).error_code == "MultipleFacesFound"


def test_blur_and_darkness_are_warned_about(detector: FaceDetector) -> None:
    blurred = cv2.GaussianBlur(images.grace_hopper(), (31, 31), 0)  # 176-px face: detail gone at 112 px
    assert "ImageTooBlurry" in inspection.inspect(blurred, detector, 40).warnings
    dark = (images.grace_hopper() * 0.35).astype(np.uint8)
    assert "ImageUnderExposure" in inspection.inspect(dark, detector, 40).warnings


def test_texture_cues_see_a_screens_moire_and_a_blurred_print(detector: FaceDetector) -> None:
    photo = facegen.source_photo("astronaut")
    live = inspection.texture_cues(aligned_second_frame(facegen.live_sequence(photo, ["left"]), detector))
    replay = inspection.texture_cues(aligned_second_frame(facegen.screen_replay(photo, 2, 1), detector))
    blurred = inspection.texture_cues(aligned_second_frame(facegen.photo_blurred(photo, 2, 1), detector))
    assert replay.moire_score > 2 * live.moire_score
    assert blurred.sharpness < live.sharpness / 5


@pytest.mark.parametrize("case", sorted(images.SUBJECT_WITH))
def test_the_subjects_face_is_used_when_nobody_competes(detector: FaceDetector, case: str) -> None:
    """A bystander cut off at the edge, a smaller person behind or beside, a blurred face in the
    background: all were MultipleFacesFound under the old rule (a second face of 0.35 the size)."""
    picture = images.scene(*images.SUBJECT_WITH[case])
    faces = detector.detect(picture, 40)
    assert len(faces) == 2, case  # there really is a second face
    result = inspection.inspect(picture, detector, 40)
    assert result.accepted, (case, result)
    assert result.face is not None and result.face.size > 200  # Grace Hopper's, the subject's


def test_two_people_who_compete_are_refused(detector: FaceDetector) -> None:
    picture = images.scene(*images.TWO_PEOPLE_SIDE_BY_SIDE)
    assert inspection.inspect(picture, detector, 40).error_code == "MultipleFacesFound"
