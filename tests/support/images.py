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
