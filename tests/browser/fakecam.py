"""A fake webcam for headless Chromium: a Y4M video of a synthetic head following directions.

Chromium plays ``--use-file-for-fake-video-capture=FILE.y4m`` as the camera, at the header's
frame rate, looping, from frame 0 when the page opens the camera. It reads every frame as
BT.601 limited-range YUV 4:2:0, which is what OpenCV's ``COLOR_BGR2YUV_I420`` writes.

The head is rendered by ``tests.facegen`` (``FaceRig.render``; yaw > 0 turns the face toward
the rendered image's left edge, pitch > 0 up — the BWS convention of *mirrored* frames). The
capture page mirrors the camera picture before upload, so the camera must deliver the mirror
image of the render: then an uploaded frame tagged "left" shows the face turned to the left.

Each pose is held long enough for the page's motion trigger (about 1.4 s) and the poses are
joined by smooth turns; after each try's sequence the head turns back to frontal (and holds it
while the page checks the try), so the video can hold several tries and loops seamlessly.
Every frame carries its number as a small barcode in a corner (outside the area the page
measures motion on), so each upload can be traced back to the video frame it came from.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from tests import facegen

FPS = 15
FRONTAL_S = 2.0  # the first pose: the page waits for a still frontal picture
TURN_S = 0.4  # a turn from one pose to the next
HOLD_S = 1.4  # each direction's pose
RETURN_S = 0.6  # back to frontal after a try
BETWEEN_S = 6.0  # frontal between two tries: the page checks the try and pauses before the next
STEP_DEG = 12.0  # as facegen.live_sequence
SIGN = {"left": (1, 0), "right": (-1, 0), "up": (0, 1), "down": (0, -1)}  # facegen's convention
BITS, BAR_PX, BAR_Y = 10, 12, 462  # the frame-number barcode: 10 blocks of 12 px, near the bottom


@dataclass
class Video:
    path: Path
    tries: list[list[str]]  # the direction sequence the head follows, per try
    poses: list[tuple[int, float]]  # per frame: (try, pose) — pose 0 frontal, k after the k-th turn, fractions turn

    @property
    def directions(self) -> list[str]:
        return self.tries[0]

    def pose_of(self, frame_number: int) -> tuple[int, float]:
        return self.poses[frame_number % len(self.poses)]


def stamp(frame: np.ndarray, number: int) -> np.ndarray:
    for bit in range(BITS):
        x = 8 + bit * BAR_PX
        frame[BAR_Y:BAR_Y + BAR_PX, x:x + BAR_PX] = 255 if number >> bit & 1 else 0
    return frame


def frame_number(uploaded: np.ndarray) -> int:
    """The number stamped into the camera frame that an (mirrored) upload was taken from."""
    camera_true = cv2.flip(cv2.resize(uploaded, (640, 480)), 1)
    grey = cv2.cvtColor(camera_true, cv2.COLOR_BGR2GRAY)
    centre = BAR_Y + BAR_PX // 2
    return sum(1 << bit for bit in range(BITS) if grey[centre, 8 + bit * BAR_PX + BAR_PX // 2] > 128)


def to_i420(bgr: np.ndarray) -> bytes:
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV_I420).tobytes()  # BT.601 limited range


def write_y4m(path: Path, frames: Iterable[np.ndarray], fps: int = FPS) -> None:
    """Write the frames (all of one size) as they come, without holding them all in memory."""
    with open(path, "wb") as out:
        for number, frame in enumerate(frames):
            if number == 0:
                height, width = frame.shape[:2]
                out.write(f"YUV4MPEG2 W{width} H{height} F{fps}:1 Ip A1:1 C420mpeg2\n".encode())
            out.write(b"FRAME\n")
            out.write(to_i420(frame))


def head_video(path: Path, *tries: list[str], photo: np.ndarray | None = None, seed: int = 0,
               between_s: float = BETWEEN_S) -> Video:
    """Write a Y4M of the head turning through each try's directions (each STEP_DEG further),
    back to frontal after each try, holding frontal ``between_s`` before the next one."""
    rig = facegen.rig_for(facegen.source_photo("astronaut") if photo is None else photo)
    timeline: list[tuple[int, float, float, float]] = []  # (try, pose, yaw, pitch) per frame
    for number, directions in enumerate(tries):
        keys = [(0.0, 0.0)]
        for direction in directions:
            yaw_sign, pitch_sign = SIGN[direction]
            keys.append((keys[-1][0] + yaw_sign * STEP_DEG, keys[-1][1] + pitch_sign * STEP_DEG))
        timeline += [(number, 0.0, *keys[0])] * round((between_s if number else FRONTAL_S) * FPS)
        for k in range(1, len(keys)):
            timeline += [(number, k - 1 + t, yaw, pitch) for t, yaw, pitch in _turn(keys[k - 1], keys[k], TURN_S)]
            timeline += [(number, float(k), *keys[k])] * round(HOLD_S * FPS)
        # back to frontal: already the next try's (or, at the loop, the first try's) pose 0
        following = (number + 1) % len(tries)
        timeline += [(following, t - 1, yaw, pitch) for t, yaw, pitch in _turn(keys[-1], keys[0], RETURN_S)]

    rng = np.random.default_rng(seed)
    rendered: dict[tuple[float, float], np.ndarray] = {}
    frames = []
    for number, (_, _, yaw, pitch) in enumerate(timeline):
        if (yaw, pitch) not in rendered:
            rendered[(yaw, pitch)] = cv2.flip(rig.render(yaw, pitch), 1)  # the camera sees the mirror image
        noisy = rendered[(yaw, pitch)] + rng.normal(0.0, 2.0, rendered[(yaw, pitch)].shape)  # sensor noise
        frames.append(stamp(np.clip(noisy, 0, 255).astype(np.uint8), number))
    write_y4m(path, frames)
    return Video(path, [list(t) for t in tries], [(number, pose) for number, pose, _, _ in timeline])


def _turn(start: tuple[float, float], end: tuple[float, float], seconds: float) -> list[tuple[float, float, float]]:
    """(progress, yaw, pitch) of the frames of a turn that eases in and out (both ends excluded)."""
    count = round(seconds * FPS)
    out = []
    for i in range(1, count + 1):
        t = float((1 - np.cos(np.pi * i / (count + 1))) / 2)
        out.append((t, start[0] + t * (end[0] - start[0]), start[1] + t * (end[1] - start[1])))
    return out
