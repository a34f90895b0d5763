"""Synthetic face sequences for testing and benchmarking the liveness check, all offline.

No shipped photo set holds real head rotation, so it is generated (see "Test images" in
docs/architecture.md):

* **live** sequences: MediaPipe's 478 3D landmarks are fitted to a real photo, the photo is
  triangulated on them, and the mesh is rotated by a known yaw/pitch about the head centre and
  the photo warped piecewise-affinely with it, so the face shows true 3D parallax;
* **attack** sequences: the *flat* photo is moved, tilted in perspective, bent, blurred, shown
  on a screen (moiré) or rescaled, as a printed photo or a replay held in front of a camera is.

Both kinds go through the same simulated camera (small brightness/contrast changes, sensor
noise, JPEG), so only the geometry tells them apart.

What is synthetic, and favours the detector: renders use an orthographic camera and move
exactly as MediaPipe's own depth model says; hair, ears and neck follow a ring of anchors
rather than a real head, and the newly visible side of the face smears beyond ~15°. Passing
these sequences says the decision logic and thresholds are consistent, not that the check
stops real attacks.

Sign convention (of the rendered frames, i.e. as seen in the produced image):
``FaceRig.render(yaw_deg > 0)`` turns the face toward the image's LEFT edge and
``pitch_deg > 0`` tilts it UP (toward the image's top edge). This is the BWS "left"/"up" of
a mirrored web-capture frame; callers use the named directions of :func:`live_sequence` and
never need the signs. ``cv2.flip(frame, 1)`` of such a frame is the camera-true view in
which the same motion is the subject's own left.

Photos come only from wheels: ``skimage.data.astronaut()`` and matplotlib's
``grace_hopper.jpg``. Triangulation uses SciPy, which scikit-image depends on.
"""

from __future__ import annotations

import functools
import hashlib
import math
from collections.abc import Sequence
from typing import Literal

import cv2
import matplotlib.cbook
import numpy as np
from scipy.spatial import Delaunay
from skimage import data

from bws.faces import FaceDetector, FaceLandmarker, FaceMesh

FRAME_WIDTH, FRAME_HEIGHT = 640, 480
DIRECTIONS = ("left", "right", "up", "down")
# (yaw, pitch) step per named direction, in the render convention above.
_DIRECTION_STEP = {"left": (1, 0), "right": (-1, 0), "up": (0, 1), "down": (0, -1)}
# MediaPipe's face-oval landmarks, in order around the face: the rim that hair, ears and
# chin are anchored to.
FACE_OVAL = (10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400,
             377, 152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109)
# A webcam's focal length in pixels at 640 px width (about 60° horizontal field of view); only
# the flat-print attacks use perspective.
FOCAL_PX = 550.0
# What a camera sees around a print that no longer fills the frame: a plain grey room.
_ROOM_GREY = (96, 96, 96)

Rng = np.random.Generator | int | None


def _generator(rng: Rng) -> np.random.Generator:
    """A generator from a seed or generator; None is seed 0 so that every default is reproducible."""
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(0 if rng is None else rng)


# -- source photos ---------------------------------------------------------------------------


def _frame_from(image: np.ndarray, scale: float, centre: tuple[float, float]) -> np.ndarray:
    """``image`` scaled by ``scale`` (so that it covers 640×480) and cut to a 640×480 frame
    centred as near ``centre`` (source px) as its edges allow."""
    scaled = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
    height, width = scaled.shape[:2]
    if width < FRAME_WIDTH or height < FRAME_HEIGHT:
        raise ValueError(f"a {width}×{height} image cannot fill a {FRAME_WIDTH}×{FRAME_HEIGHT} frame")
    x0 = int(np.clip(centre[0] * scale - FRAME_WIDTH / 2, 0, width - FRAME_WIDTH))
    y0 = int(np.clip(centre[1] * scale - FRAME_HEIGHT / 2, 0, height - FRAME_HEIGHT))
    return np.ascontiguousarray(scaled[y0:y0 + FRAME_HEIGHT, x0:x0 + FRAME_WIDTH])


@functools.cache
def source_photo(name: str) -> np.ndarray:
    """A public-domain portrait as a BGR 640×480 frame with a large face (read-only, cached).

    ``astronaut``: Eileen Collins (scikit-image), interocular distance ≈ 65 px.
    ``grace_hopper``: Grace Hopper (matplotlib), interocular distance ≈ 105 px.
    """
    if name == "astronaut":
        # 512×512 with the face high up at about (223, 119); 1.5× brings the eyes ~65 px apart,
        # and the cut keeps the hair above the face.
        frame = _frame_from(cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR), 1.5, (223, 150))
    elif name == "grace_hopper":
        # 512×600 portrait, face at about (267, 226); 1.25× fills the frame's width, and the cut
        # keeps the hat.
        path = matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
        frame = _frame_from(cv2.imread(str(path)), 1.25, (256, 220))
    else:
        raise ValueError(f"unknown source photo {name!r}; use 'astronaut' or 'grace_hopper'")
    frame.setflags(write=False)
    return frame


@functools.cache
def face_engine() -> tuple[FaceDetector, FaceLandmarker]:
    """The generator's own detector and landmarker, loaded once per process."""
    return FaceDetector(), FaceLandmarker()


def meshes_of(frames: Sequence[np.ndarray], detector: FaceDetector, landmarker: FaceLandmarker,
              min_face_size: float = 40.0) -> list[FaceMesh | None]:
    """The face mesh of each frame as the liveness service computes it: the largest YuNet face of at
    least ``min_face_size`` px, then MediaPipe on a crop around it; None where there is none."""
    meshes: list[FaceMesh | None] = []
    for frame in frames:
        faces = detector.detect(frame, min_face_size=min_face_size)
        meshes.append(landmarker.mesh(frame, faces[0]) if faces else None)
    return meshes


# -- piecewise-affine warping ----------------------------------------------------------------


def _piecewise_affine(image: np.ndarray, source: np.ndarray, target: np.ndarray, triangles: np.ndarray,
                      *, outside: Literal["identity", "room"]) -> np.ndarray:
    """Warp ``image`` so that each triangle's ``source`` vertices land on its ``target`` vertices.

    ``triangles`` are drawn in the given order (later ones cover earlier ones, so callers sort
    them far to near). One dense ``cv2.remap`` built from per-triangle inverse affine maps:
    ~5× faster than a ``warpAffine`` per triangle. Pixels no triangle covers keep the image
    (``outside="identity"``) or show the grey room (``outside="room"``).
    """
    src, dst = source[triangles], target[triangles]  # T×3×2
    # Inverse affine per triangle: [x y 1] of the target vertices → source vertices.
    homogeneous = np.concatenate([dst, np.ones((len(triangles), 3, 1))], axis=2)
    det = np.linalg.det(homogeneous)
    usable = np.abs(det) > 1e-3  # triangles seen edge-on have no inverse and no area
    affine = np.zeros((len(triangles), 3, 2))
    affine[usable] = np.linalg.solve(homogeneous[usable], src[usable])
    labels = np.full(image.shape[:2], -1, np.int32)
    corners = np.round(dst * 16).astype(np.int32)  # 4 fractional bits for sub-pixel edges
    for index in np.flatnonzero(usable):
        cv2.fillConvexPoly(labels, corners[index], int(index), cv2.LINE_8, 4)
    ys, xs = np.indices(labels.shape, dtype=np.float32)
    covered = labels >= 0
    coefficients = affine.astype(np.float32)[labels[covered]]  # N×3×2
    map_x, map_y = xs.copy(), ys.copy()
    if outside == "room":
        map_x[:], map_y[:] = -1.0, -1.0
    cx, cy = xs[covered], ys[covered]
    map_x[covered] = cx * coefficients[:, 0, 0] + cy * coefficients[:, 1, 0] + coefficients[:, 2, 0]
    map_y[covered] = cx * coefficients[:, 0, 1] + cy * coefficients[:, 1, 1] + coefficients[:, 2, 1]
    return cv2.remap(image, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                     borderValue=_ROOM_GREY)


def _rotation(yaw_deg: float, pitch_deg: float) -> np.ndarray:
    """Rotation in image axes (x right, y down, z away from the camera), render convention:
    yaw > 0 turns the face normal toward −x (image left), pitch > 0 toward −y (image top)."""
    yaw, pitch = math.radians(yaw_deg), math.radians(pitch_deg)
    about_y = np.array([[math.cos(yaw), 0, math.sin(yaw)], [0, 1, 0], [-math.sin(yaw), 0, math.cos(yaw)]])
    about_x = np.array([[1, 0, 0], [0, math.cos(pitch), math.sin(pitch)], [0, -math.sin(pitch), math.cos(pitch)]])
    return about_x @ about_y


# -- live renders ----------------------------------------------------------------------------


class FaceRig:
    """A photo rigged on its MediaPipe face mesh, re-rendered with the head turned.

    Three kinds of vertices: the 478 landmarks (rotate with their own depth), a ring 1.35× the
    face oval (hair, ears, chin: rotates, placed behind the oval) and a ring 2.2× the oval plus
    the frame border (background: fixed). The triangles between the two rings stretch, which
    is where the background meets the turned head.
    """

    MOVING_RING_SCALE = 1.35
    FIXED_RING_SCALE = 2.2
    BORDER_STEP_PX = 80

    def __init__(self, photo: np.ndarray, detector: FaceDetector | None = None,
                 landmarker: FaceLandmarker | None = None) -> None:
        if detector is None or landmarker is None:
            detector, landmarker = face_engine()
        faces = detector.detect(photo)
        mesh = landmarker.mesh(photo, faces[0]) if faces else None
        if mesh is None:
            raise ValueError("no face mesh found in the photo")
        self.photo = photo
        self.mesh = mesh
        height, width = photo.shape[:2]
        oval = mesh.points[list(FACE_OVAL)]
        face_width = float(np.ptp(oval[:, 0]))
        # The head turns about a point between the ears: the oval's centre in the image plane,
        # at the oval's mean depth (behind the face surface, so a turn also shifts the face).
        self.centre = np.array([*oval[:, :2].mean(axis=0), oval[:, 2].mean()])
        moving_ring = self._ring(oval, self.MOVING_RING_SCALE)
        moving_ring[:, 2] = oval[:, 2] + 0.25 * face_width
        fixed = np.vstack([self._ring(oval, self.FIXED_RING_SCALE), self._border(width, height)])
        moving_ring = moving_ring[self._inside(moving_ring, width, height)]
        fixed = fixed[self._inside(fixed, width, height, margin=-0.5)]
        self.vertices = np.vstack([mesh.points, moving_ring, fixed])
        self.moving = np.arange(len(self.vertices)) < len(mesh.points) + len(moving_ring)
        self.triangles = Delaunay(self.vertices[:, :2]).simplices.astype(np.int32)
        # Triangles with a fixed vertex are background: drawn first, under the head.
        self.background = ~self.moving[self.triangles].all(axis=1)

    def _ring(self, oval: np.ndarray, scale: float) -> np.ndarray:
        ring = oval.copy()
        ring[:, :2] = self.centre[:2] + scale * (oval[:, :2] - self.centre[:2])
        return ring

    def _border(self, width: int, height: int) -> np.ndarray:
        xs = np.linspace(0, width - 1, max(2, round(width / self.BORDER_STEP_PX) + 1))
        ys = np.linspace(0, height - 1, max(2, round(height / self.BORDER_STEP_PX) + 1))
        edge = [(x, y) for x in xs for y in (0, height - 1)] + [(x, y) for y in ys[1:-1] for x in (0, width - 1)]
        return np.array([(x, y, 0.0) for x, y in edge])

    @staticmethod
    def _inside(points: np.ndarray, width: int, height: int, margin: float = 2.0) -> np.ndarray:
        return ((points[:, 0] >= margin) & (points[:, 0] <= width - 1 - margin)
                & (points[:, 1] >= margin) & (points[:, 1] <= height - 1 - margin))

    @property
    def neck_pivot(self) -> np.ndarray:
        """Where a head turning on its neck turns about, relative to :attr:`centre` (px): below
        the face centre by 0.45 face heights and behind it by 0.35 face widths (the upper cervical
        spine, roughly at the level of the mouth and behind the ears)."""
        oval = self.mesh.points[list(FACE_OVAL)]
        return np.array([0.0, 0.45 * float(np.ptp(oval[:, 1])), 0.35 * float(np.ptp(oval[:, 0]))])

    def render(self, yaw_deg: float, pitch_deg: float, *, shift: tuple[float, float] = (0.0, 0.0),
               scale: float = 1.0, pivot: np.ndarray | None = None) -> np.ndarray:
        """The photo with the head turned: ``yaw_deg > 0`` toward the image's left edge,
        ``pitch_deg > 0`` up, about :attr:`centre` plus ``pivot`` (px; e.g. :attr:`neck_pivot`);
        then the whole frame moved by ``shift`` px and scaled about the face centre by ``scale``
        (camera jitter)."""
        rotated = self.vertices.copy()
        moving = self.moving
        about = self.centre if pivot is None else self.centre + pivot
        rotated[moving] = (rotated[moving] - about) @ _rotation(yaw_deg, pitch_deg).T + about
        target = self.centre[:2] + scale * (rotated[:, :2] - self.centre[:2]) + np.asarray(shift, float)
        source = self.vertices[:, :2]
        # Far to near, background first; triangles turned away from the camera (their winding
        # flipped) are hidden behind the near side and not drawn.
        depth = rotated[self.triangles, 2].mean(axis=1)
        facing = np.sign(self._winding(target)) == np.sign(self._winding(source))
        order = np.lexsort((-depth, ~self.background))
        order = order[facing[order]]
        return _piecewise_affine(self.photo, source, target, self.triangles[order], outside="identity")

    def _winding(self, points: np.ndarray) -> np.ndarray:
        a, b, c = (points[self.triangles[:, k]] for k in range(3))
        return (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])


_RIGS: dict[tuple[tuple[int, ...], bytes], FaceRig] = {}


def rig_for(photo: np.ndarray) -> FaceRig:
    """The rig of a photo, cached by content, so that sequences of one photo fit its mesh once."""
    contiguous = np.ascontiguousarray(photo)
    key = (contiguous.shape, hashlib.blake2b(contiguous.data, digest_size=16).digest())
    if key not in _RIGS:
        _RIGS[key] = FaceRig(contiguous.copy())
    return _RIGS[key]


# -- the simulated camera --------------------------------------------------------------------


def camera(frame: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """What a webcam adds to each frame: exposure and contrast drift, sensor noise, JPEG."""
    alpha = 1.0 + rng.uniform(-0.08, 0.08)
    beta = rng.uniform(-10.0, 10.0)
    sigma = rng.uniform(1.5, 3.0)
    noise = np.empty(frame.shape, np.float32)
    # OpenCV's generator, seeded from ``rng``: 4× faster than NumPy's for a 640×480×3 field.
    cv2.setRNGSeed(int(rng.integers(2**31)))
    cv2.randn(noise, (0.0, 0.0, 0.0), (sigma, sigma, sigma))
    exposed = frame.astype(np.float32) * alpha + beta + noise
    quality = int(rng.integers(80, 96))
    ok, encoded = cv2.imencode(".jpg", np.clip(exposed, 0, 255).astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return cv2.imdecode(encoded, cv2.IMREAD_COLOR)


def live_sequence(photo: np.ndarray, directions: Sequence[str], *, step_deg: float = 12.0, rng: Rng = None,
                  noise: bool = True) -> list[np.ndarray]:
    """A head turning: frame 0 frontal (BWS tag "any"), then one frame per direction, each turned
    ``step_deg`` further that way from the previous pose (the pose accumulates).

    "left" turns the face toward the image's left edge of the produced frame (the BWS
    convention for mirrored web-capture frames), "up" tilts the head up. With ``noise``, each
    frame also gets camera jitter (±3 px, ±2 % scale) and :func:`camera`. Deterministic for a
    given seed; ``rng=None`` is seed 0.
    """
    generator = _generator(rng)
    rig = rig_for(photo)
    yaw = pitch = 0.0
    frames = []
    for direction in ["", *directions]:
        if direction:
            if direction not in _DIRECTION_STEP:
                raise ValueError(f"unknown direction {direction!r}; use one of {DIRECTIONS}")
            yaw_sign, pitch_sign = _DIRECTION_STEP[direction]
            yaw += yaw_sign * step_deg
            pitch += pitch_sign * step_deg
        if noise:
            shift = tuple(generator.uniform(-3.0, 3.0, 2))
            frame = rig.render(yaw, pitch, shift=shift, scale=1.0 + generator.uniform(-0.02, 0.02))
            frames.append(camera(frame, generator))
        else:
            frames.append(rig.render(yaw, pitch))
    return frames


# -- attacks: the flat photo in front of a camera ---------------------------------------------


def _face_centre(photo: np.ndarray) -> tuple[float, float]:
    oval = rig_for(photo).mesh.points[list(FACE_OVAL), :2]
    x, y = oval.mean(axis=0)
    return float(x), float(y)


def _project_print(points: np.ndarray, depth: np.ndarray, pivot: tuple[float, float], yaw_deg: float,
                   pitch_deg: float, scale: float, shift: tuple[float, float]) -> np.ndarray:
    """Image positions of print points (image px, with ``depth`` px toward the back) after the
    print turns about ``pivot`` by yaw/pitch, seen through a pinhole camera of ``FOCAL_PX``.

    The print starts where it fills the frame as the photo does: at distance ``FOCAL_PX`` (so
    that one print pixel is one image pixel) relative to the principal point (frame centre).
    """
    principal = np.array([FRAME_WIDTH / 2, FRAME_HEIGHT / 2])
    centre = np.array([*pivot, 0.0])
    local = np.column_stack([points - centre[:2], depth])
    turned = local @ _rotation(yaw_deg, pitch_deg).T
    turned[:, :2] = turned[:, :2] * scale + (np.asarray(pivot) - principal) + np.asarray(shift)
    distance = FOCAL_PX + turned[:, 2]
    return turned[:, :2] * (FOCAL_PX / distance)[:, None] + principal


def _tilt(rng: np.random.Generator, low: float = 10.0, high: float = 25.0) -> tuple[float, float]:
    """A random turn of a print: ±(low..high)° about its vertical or horizontal axis."""
    angle = rng.uniform(low, high) * rng.choice([-1.0, 1.0])
    return (angle, 0.0) if rng.random() < 0.5 else (0.0, angle)


def _flat_view(photo: np.ndarray, pivot: tuple[float, float], yaw: float, pitch: float, scale: float,
               shift: tuple[float, float]) -> np.ndarray:
    """The flat photo as a camera sees the print: one homography of its corners."""
    corners = np.array([[0, 0], [FRAME_WIDTH - 1, 0], [FRAME_WIDTH - 1, FRAME_HEIGHT - 1], [0, FRAME_HEIGHT - 1]],
                       np.float64)
    seen = _project_print(corners, np.zeros(4), pivot, yaw, pitch, scale, shift)
    homography = cv2.getPerspectiveTransform(corners.astype(np.float32), seen.astype(np.float32))
    return cv2.warpPerspective(photo, homography, (FRAME_WIDTH, FRAME_HEIGHT), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_CONSTANT, borderValue=_ROOM_GREY)


def _jitter(rng: np.random.Generator, pixels: float) -> tuple[float, float]:
    return float(rng.uniform(-pixels, pixels)), float(rng.uniform(-pixels, pixels))


def photo_moved(photo: np.ndarray, n: int, rng: Rng = None) -> list[np.ndarray]:
    """A print moved around in front of the camera: translation (±25 px) and small scale (±8 %)."""
    generator = _generator(rng)
    pivot = _face_centre(photo)
    return [camera(_flat_view(photo, pivot, 0.0, 0.0, 1.0 + generator.uniform(-0.08, 0.08),
                              _jitter(generator, 25.0)), generator) for _ in range(n)]


def photo_tilted(photo: np.ndarray, n: int, rng: Rng = None) -> list[np.ndarray]:
    """A print turned ±10–25° about its vertical or horizontal axis (perspective homography)."""
    generator = _generator(rng)
    pivot = _face_centre(photo)
    return [camera(_flat_view(photo, pivot, *_tilt(generator), 1.0, _jitter(generator, 8.0)), generator)
            for _ in range(n)]


def photo_rescaled(photo: np.ndarray, n: int, rng: Rng = None) -> list[np.ndarray]:
    """A print brought closer and moved away: each frame at 0.7–1.3× scale, slightly shifted."""
    generator = _generator(rng)
    pivot = _face_centre(photo)
    return [camera(_flat_view(photo, pivot, 0.0, 0.0, generator.uniform(0.7, 1.3), _jitter(generator, 10.0)),
                   generator) for _ in range(n)]


def photo_blurred(photo: np.ndarray, n: int, rng: Rng = None) -> list[np.ndarray]:
    """A low-quality print (blurred, paler) turned like :func:`photo_tilted`."""
    generator = _generator(rng)
    pivot = _face_centre(photo)
    sigma = generator.uniform(1.5, 3.0)
    # Printing loses sharpness and contrast once; the camera then sees the same print each frame.
    printed = cv2.GaussianBlur(photo, (0, 0), sigma)
    printed = cv2.convertScaleAbs(printed, alpha=0.8, beta=30)
    return [camera(_flat_view(printed, pivot, *_tilt(generator), 1.0, _jitter(generator, 8.0)), generator)
            for _ in range(n)]


def screen_replay(photo: np.ndarray, n: int, rng: Rng = None) -> list[np.ndarray]:
    """The photo shown on a phone or monitor: a moiré pattern (pixel grid beating against the
    camera's sensor) and a colder, brighter image, the screen turned like :func:`photo_tilted`."""
    generator = _generator(rng)
    pivot = _face_centre(photo)
    ys, xs = np.indices((FRAME_HEIGHT, FRAME_WIDTH), dtype=np.float32)
    angle = generator.uniform(0, math.pi)
    period = generator.uniform(4.0, 9.0)
    phase = xs * math.cos(angle) + ys * math.sin(angle)
    pattern = 1.0 + 0.12 * np.sin(2 * math.pi * phase / period)
    screen = photo.astype(np.float32) * pattern[:, :, None] * np.float32([1.08, 1.0, 0.94]) + 12.0
    shown = np.clip(screen, 0, 255).astype(np.uint8)
    return [camera(_flat_view(shown, pivot, *_tilt(generator), 1.0, _jitter(generator, 8.0)), generator)
            for _ in range(n)]


class _PrintGrid:
    """The photo as a grid of small triangles, to draw a print that is not flat."""

    STEP_PX = 20

    def __init__(self) -> None:
        xs = np.linspace(0, FRAME_WIDTH - 1, FRAME_WIDTH // self.STEP_PX + 1)
        ys = np.linspace(0, FRAME_HEIGHT - 1, FRAME_HEIGHT // self.STEP_PX + 1)
        grid_x, grid_y = np.meshgrid(xs, ys)
        self.points = np.column_stack([grid_x.ravel(), grid_y.ravel()])
        columns = len(xs)
        cells = [(r * columns + c) for r in range(len(ys) - 1) for c in range(columns - 1)]
        quads = np.array([[i, i + 1, i + columns + 1, i + columns] for i in cells])
        self.triangles = np.vstack([quads[:, [0, 1, 2]], quads[:, [0, 2, 3]]]).astype(np.int32)


_PRINT_GRID = _PrintGrid()


def photo_bent(photo: np.ndarray, n: int, rng: Rng = None) -> list[np.ndarray]:
    """A print held slightly bent (a cylinder about its vertical or horizontal axis through the face,
    the edges 20–40° around it) and turned like :func:`photo_tilted`: not flat, so not one
    homography, yet without a face's relief."""
    generator = _generator(rng)
    pivot = _face_centre(photo)
    points = _PRINT_GRID.points
    vertical_axis = generator.random() < 0.5
    half_span = (FRAME_WIDTH if vertical_axis else FRAME_HEIGHT) / 2
    radius = half_span / math.radians(generator.uniform(20.0, 40.0))
    # Convex toward the camera or away from it: the bent print's depth relative to the pivot.
    sign = generator.choice([-1.0, 1.0])
    across = points[:, 0] - pivot[0] if vertical_axis else points[:, 1] - pivot[1]
    angle = across / radius
    bent = points.copy()
    bent[:, 0 if vertical_axis else 1] = np.asarray(pivot)[0 if vertical_axis else 1] + radius * np.sin(angle)
    depth = sign * radius * (1.0 - np.cos(angle))
    frames = []
    for _ in range(n):
        yaw, pitch = _tilt(generator)
        seen = _project_print(bent, depth, pivot, yaw, pitch, 1.0, _jitter(generator, 8.0))
        frames.append(camera(_piecewise_affine(photo, points, seen, _PRINT_GRID.triangles, outside="room"),
                             generator))
    return frames


def static_frames(photo: np.ndarray, n: int) -> list[np.ndarray]:
    """``n`` identical copies of the photo: no motion, no camera noise."""
    return [np.array(photo) for _ in range(n)]


ATTACKS = {
    "photo_moved": photo_moved,
    "photo_tilted": photo_tilted,
    "photo_bent": photo_bent,
    "photo_blurred": photo_blurred,
    "screen_replay": screen_replay,
    "photo_rescaled": photo_rescaled,
}
