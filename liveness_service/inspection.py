"""Upload-time inspection of one sample: is there exactly one usable face, and how good is it.

BWS answers an upload with ``Accepted`` plus quality ``Warnings``; a warning does not reject
the sample, it tells the client what to improve.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from bws.faces import Face, FaceDetector

# Another face competes with the photo's subject when its prominence (size × detector score,
# halved when cut off at the border; ``Face.prominence``) is at least this share of the
# subject's: then the photo is refused (MultipleFacesFound). A bystander half the subject's
# size, one cut off at the edge, a face on a poster or a blur in a crowd behind does not compete:
# the subject's face is used.
COMPETING_FACE_RATIO = 0.6
# Quality limits, measured on the face region scaled to 112×112 grey pixels: a sharp
# 90-px face scores ~370 on the Laplacian variance, a 9-px Gaussian blur of it ~17.
MIN_FACE_SIZE_WARNING_PX = 80
MIN_IMAGE_SIDE_WARNING_PX = 240
MIN_SHARPNESS = 25.0
MAX_MEAN_BRIGHTNESS = 200.0
MIN_MEAN_BRIGHTNESS = 60.0


@dataclass(frozen=True)
class Inspection:
    accepted: bool
    error_code: str | None  # "NoFaceFound" or "MultipleFacesFound" when not accepted
    warnings: tuple[str, ...]
    face: Face | None


def face_region(image: np.ndarray, face: Face) -> np.ndarray:
    """The face box as a 112×112 grey crop (clipped to the image)."""
    x, y, w, h = (int(round(v)) for v in face.box)
    height, width = image.shape[:2]
    crop = image[max(0, y):min(height, y + h), max(0, x):min(width, x + w)]
    grey = cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY)
    return cv2.resize(grey, (112, 112), interpolation=cv2.INTER_AREA)


def quality_warnings(image: np.ndarray, face: Face) -> tuple[str, ...]:
    warnings = []
    if face.size < MIN_FACE_SIZE_WARNING_PX or min(image.shape[:2]) < MIN_IMAGE_SIDE_WARNING_PX:
        warnings.append("ImageTooSmall")
    region = face_region(image, face)
    if cv2.Laplacian(region, cv2.CV_64F).var() < MIN_SHARPNESS:
        warnings.append("ImageTooBlurry")
    brightness = float(region.mean())
    if brightness > MAX_MEAN_BRIGHTNESS:
        warnings.append("ImageOverExposure")
    elif brightness < MIN_MEAN_BRIGHTNESS:
        warnings.append("ImageUnderExposure")
    return tuple(warnings)


@dataclass(frozen=True)
class TextureCues:
    sharpness: float
    moire_score: float
    brightness: float


def texture_cues(aligned: np.ndarray) -> TextureCues:
    """Blur, moiré and exposure of an aligned 112×112 face crop (evidence for the reply)."""
    grey = cv2.cvtColor(aligned, cv2.COLOR_BGR2GRAY).astype(np.float32)
    spectrum = np.abs(np.fft.fftshift(np.fft.fft2(grey - grey.mean())))
    size = grey.shape[0]
    y, x = np.ogrid[:size, :size]
    radius = np.hypot(y - size / 2, x - size / 2)
    band = spectrum[(radius > size / 6) & (radius < size / 2)]  # above the face's own structure
    return TextureCues(
        sharpness=float(cv2.Laplacian(grey, cv2.CV_32F).var()),
        moire_score=float(band.max() / max(float(np.median(band)), 1e-6)),
        brightness=float(grey.mean()),
    )


def inspect(image: np.ndarray, detector: FaceDetector, min_face_size: float) -> Inspection:
    faces = detector.detect(image, min_face_size=min_face_size)
    if not faces:
        return Inspection(False, "NoFaceFound", (), None)
    subject = faces[0]  # the most prominent
    if any(f.prominence >= COMPETING_FACE_RATIO * subject.prominence for f in faces[1:]):
        return Inspection(False, "MultipleFacesFound", (), subject)
    return Inspection(True, None, quality_warnings(image, subject), subject)
