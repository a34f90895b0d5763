"""Test images, all offline: public-domain photos shipped in wheels, or generated."""

from __future__ import annotations

import functools

import cv2
import matplotlib.cbook
import numpy as np
from skimage import data


def encode(image: np.ndarray, ext: str = ".png") -> bytes:
    ok, buffer = cv2.imencode(ext, image)
    assert ok
    return buffer.tobytes()


@functools.cache
def astronaut() -> np.ndarray:
    """Eileen Collins (NASA, public domain), BGR 512×512."""
    return cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)


@functools.cache
def grace_hopper() -> np.ndarray:
    """Grace Hopper (public domain), BGR, from matplotlib's sample data."""
    path = matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    return cv2.imread(str(path))


@functools.cache
def cat() -> np.ndarray:
    """A cat, no human face."""
    return cv2.cvtColor(data.chelsea(), cv2.COLOR_RGB2BGR)


@functools.cache
def two_people() -> np.ndarray:
    """The astronaut and Grace Hopper side by side, both faces large."""
    left = cv2.resize(astronaut()[0:300, 80:380], (400, 400))
    right = cv2.resize(grace_hopper(), (400, 480))[40:440]
    return np.hstack([left, right])


# -- scenes with more than one face: the subject, and someone else -------------------------------

_HEADS = {"astronaut": (slice(10, 270), slice(110, 340)), "grace_hopper": (slice(60, 440), slice(110, 430))}


def _head(name: str) -> np.ndarray:
    rows, columns = _HEADS[name]
    return (astronaut() if name == "astronaut" else grace_hopper())[rows, columns]


def scene(*placements: tuple[str, int, int, int, float], size: tuple[int, int] = (960, 720)) -> np.ndarray:
    """Heads pasted onto a plain grey backdrop (``size`` = width, height): each placement is
    (photo, head height px, centre x, centre y, blur sigma), the first one drawn first. A head
    may reach beyond the border: only what is inside is drawn."""
    width, height = size
    canvas = np.repeat(np.linspace(80, 150, width).astype(np.uint8)[None, :, None], height, axis=0)
    canvas = np.ascontiguousarray(np.repeat(canvas, 3, axis=2))
    for name, head_height, cx, cy, blur in placements:
        head = _head(name)
        head = cv2.resize(head, None, fx=head_height / head.shape[0], fy=head_height / head.shape[0],
                          interpolation=cv2.INTER_AREA)
        if blur:
            head = cv2.GaussianBlur(head, (0, 0), blur)
        y0, x0 = cy - head.shape[0] // 2, cx - head.shape[1] // 2
        top, left = max(0, y0), max(0, x0)
        bottom, right = min(height, y0 + head.shape[0]), min(width, x0 + head.shape[1])
        canvas[top:bottom, left:right] = head[top - y0:bottom - y0, left - x0:right - x0]
    return canvas


# The subject (Grace Hopper, a ~230 px face) with someone else in the picture. Measured with
# YuNet: the face cut off at the right edge is 99 px wide in a box clipped to the border, the
# one behind 76 px, the blurred one 107 px, the close one 111 px (all of them at least 0.35 of
# the subject, the old MultipleFacesFound rule); the "pair" face 149 px, which competes.
SUBJECT_WITH = {
    "bystander_at_edge": (("grace_hopper", 520, 440, 360, 0.0), ("astronaut", 560, 960, 330, 0.0)),
    "person_behind": (("grace_hopper", 520, 480, 380, 0.0), ("astronaut", 220, 140, 160, 0.0)),
    "blurred_face_behind": (("grace_hopper", 520, 520, 380, 0.0), ("astronaut", 330, 150, 200, 6.0)),
    "smaller_person_beside": (("grace_hopper", 480, 260, 360, 0.0), ("astronaut", 330, 720, 330, 0.0)),
}
TWO_PEOPLE_SIDE_BY_SIDE = (("grace_hopper", 500, 250, 360, 0.0), ("astronaut", 420, 720, 330, 0.0))
