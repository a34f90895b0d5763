"""Video liveness: frames spread over a short video, judged by the same motion decision as
photos (``liveness.decide``) on the frames whose head poses differ most.

Bounded whatever the file: it is decoded by OpenCV's FFmpeg backend (MP4 with H.264 or MPEG-4,
WebM with VP8 or VP9, ...) from a temporary file; at most ``MAX_PIXELS`` per frame (larger
videos are refused before a frame is decoded), at most ``MAX_FRAMES_READ`` frames read (about
30 s at 30 fps; the rest of a longer video is not looked at), at most ``MAX_DECODE_SECONDS`` of
decoding, and ``SAMPLED_FRAMES`` of them kept, scaled to at most ``MAX_SIDE`` pixels.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from bws.faces import Face, FaceDetector, FaceLandmarker, FaceMesh
from bws.settings import LivenessThresholds
from liveness_service import inspection, liveness

MAX_PIXELS = 3840 * 2160
MAX_FRAMES_READ = 900
MAX_DECODE_SECONDS = 10.0
SAMPLED_FRAMES = 12
# The decision judges the 3 frames whose poses differ most (3 pairs, as a try of 3 photos).
# Every extra frame is another draw for an attack's noise: with 8 (28 pairs) `make bench-video`
# accepted 4 of 40 screen replays and 1 of 40 bent prints, with 3 one and none (seeds
# 2,000,001-2,000,560; 40 of 40 bona fide videos live either way).
DECIDED_FRAMES = 3
MAX_SIDE = 1280


class InvalidVideo(ValueError):
    """The data is not a video this service can read, or it is too large; the message says why."""


@dataclass(frozen=True)
class Judgement:
    """What the video showed: the frames taken, the face found in each, the ones the decision
    used, and the decision (None: fewer than two frames with a usable face)."""

    frames: list[Frame]
    faces: list[Face | None]
    used: list[int]
    decision: liveness.LivenessDecision | None


def judge(data: bytes, detector: FaceDetector, landmarker: FaceLandmarker, *, min_face_size: float,
          mirrored: bool, thresholds: LivenessThresholds) -> Judgement:
    """Sample the video, inspect each frame as an upload is inspected, and decide on the usable
    frames whose poses differ most. Raises InvalidVideo."""
    frames = sample_frames(data)
    faces: list[Face | None] = []
    meshes: list[FaceMesh | None] = []
    for frame in frames:
        found = inspection.inspect(frame.image, detector, min_face_size)
        faces.append(found.face)
        meshes.append(landmarker.mesh(frame.image, found.face) if found.accepted and found.face else None)
    used = widest_poses(meshes, DECIDED_FRAMES)
    if len(used) < 2:
        return Judgement(frames, faces, used, None)
    decision = liveness.decide([meshes[i] for i in used], ["any"] * len(used), expected_directions=None,
                               mirrored=mirrored, thresholds=thresholds)
    return Judgement(frames, faces, used, decision)


@dataclass(frozen=True)
class Frame:
    number: int  # the frame's number in the video (0-based)
    image: np.ndarray  # BGR, at most MAX_SIDE pixels on its longer side


def sample_frames(data: bytes, count: int = SAMPLED_FRAMES) -> list[Frame]:
    """``count`` frames spread evenly over (the first MAX_FRAMES_READ frames of) the video."""
    handle, path = tempfile.mkstemp(suffix=".video")
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
        capture = cv2.VideoCapture(path, cv2.CAP_FFMPEG)
        try:
            return _read(capture, count)
        finally:
            capture.release()
    finally:
        os.unlink(path)


def _read(capture: cv2.VideoCapture, count: int) -> list[Frame]:
    if not capture.isOpened():
        raise InvalidVideo("The video cannot be read; send MP4 (H.264, MPEG-4) or WebM (VP8, VP9).")
    width, height = capture.get(cv2.CAP_PROP_FRAME_WIDTH), capture.get(cv2.CAP_PROP_FRAME_HEIGHT)
    if width * height > MAX_PIXELS:
        raise InvalidVideo(f"The video's frames are {width:.0f}×{height:.0f} pixels; at most "
                           f"{MAX_PIXELS / 1e6:.1f} megapixels are read.")
    declared = capture.get(cv2.CAP_PROP_FRAME_COUNT)
    total = int(min(declared, MAX_FRAMES_READ)) if declared > 0 else MAX_FRAMES_READ
    wanted = set(np.linspace(0, max(total - 1, 0), count).round().astype(int).tolist())
    frames: list[Frame] = []
    deadline = time.monotonic() + MAX_DECODE_SECONDS
    for number in range(min(total, MAX_FRAMES_READ)):
        if time.monotonic() > deadline or not capture.grab():
            break
        if number not in wanted:
            continue
        ok, image = capture.retrieve()
        if not ok or image is None or image.ndim != 3:
            continue
        if image.shape[0] * image.shape[1] > MAX_PIXELS:  # the container lied about the size
            raise InvalidVideo("The video's frames are larger than the container says.")
        scale = MAX_SIDE / max(image.shape[:2])
        if scale < 1:
            image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        frames.append(Frame(number, image))
    if not frames:
        raise InvalidVideo("The video holds no frame that can be decoded.")
    return frames


def widest_poses(meshes: Sequence[FaceMesh | None], count: int = DECIDED_FRAMES) -> list[int]:
    """The indices (in order) of up to ``count`` usable frames whose head poses differ most:
    the two farthest apart first, then each time the frame farthest from those chosen."""
    usable = [i for i, mesh in enumerate(meshes) if mesh is not None]
    if len(usable) <= count:
        return usable
    poses = {i: (meshes[i].yaw_degrees, meshes[i].pitch_degrees) for i in usable}  # type: ignore[union-attr]

    def distance(a: int, b: int) -> float:
        return math.dist(poses[a], poses[b])

    first, second = max(((a, b) for a in usable for b in usable if a < b), key=lambda ab: distance(*ab))
    chosen = [first, second]
    while len(chosen) < count:
        chosen.append(max((i for i in usable if i not in chosen), key=lambda i: min(distance(i, c) for c in chosen)))
    return sorted(chosen)
