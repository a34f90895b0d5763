"""The face engine: YuNet detection, SFace embeddings, MediaPipe landmarks and head pose.

The model files, their digests and their runtime are in ``bws.models``. Each class loads its
model once; a process keeps one instance per model and worker for its lifetime.
"""

from __future__ import annotations

import io
import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from bws.models import FACE_LANDMARKER, SFACE_F32, YUNET_F32, compiled


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


# YuNet's input: the longer side of an image is scaled to at most this many px. Faces of the
# photos this service takes are their subject; smaller sides align turned faces worse
# (``make bench-engine``).
DETECTION_SIDE = 640
NETWORKS_KEPT = 4  # compiled YuNet input shapes a detector keeps (the least recently used goes)


class FaceDetector:
    """YuNet on OpenVINO, decoded and filtered (non-maximum suppression) as OpenCV's
    ``FaceDetectorYN`` does.

    YuNet is made for faces of about 10–300 px. An image is scaled down to at most ``side``
    pixels on its longer side and placed in the top-left corner of a canvas of zeros ``side``
    wide and as high as the image (rounded up to 32 px); results are scaled back.
    """

    STRIDES = (8, 16, 32)

    def __init__(self, score_threshold: float = 0.7, side: int = DETECTION_SIDE,
                 nms_threshold: float = 0.3, top_k: int = 50) -> None:
        self.side = -(-side // 32) * 32  # the network needs multiples of 32
        self._score_threshold, self._nms_threshold, self._top_k = score_threshold, nms_threshold, top_k
        # One network per input height (a multiple of 32; the width is the side): the few
        # aspect ratios clients send each get theirs, compiled at first use (~0.1 s).
        self._networks: OrderedDict[int, tuple[Any, np.ndarray]] = OrderedDict()
        self._network(round(self.side * 3 / 4))  # 4:3, what webcams send

    def _network(self, rows: int) -> tuple[Any, np.ndarray]:
        height = -(-rows // 32) * 32
        found = self._networks.pop(height, None)
        if found is None:
            found = (compiled(YUNET_F32, "input", height, self.side).create_infer_request(),
                     np.zeros((1, height, self.side, 3), np.uint8))
        self._networks[height] = found
        while len(self._networks) > NETWORKS_KEPT:
            self._networks.popitem(last=False)
        return found

    def detect(self, image: np.ndarray, min_face_size: float = 0.0) -> list[Face]:
        """Faces in a BGR image, the most prominent first (see ``Face.prominence``: the photo's
        subject, not a larger bystander cut off at the edge); faces smaller than
        ``min_face_size`` px are dropped."""
        height, width = image.shape[:2]
        scale = min(1.0, self.side / max(height, width))
        scaled = image
        if scale < 1.0:
            scaled = cv2.resize(image, (min(self.side, round(width * scale)), min(self.side, round(height * scale))),
                                interpolation=cv2.INTER_AREA)
        rows, columns = scaled.shape[:2]
        request, canvas = self._network(rows)
        canvas[0, :rows, :columns] = scaled  # the rest stays zero, as OpenCV pads
        result = request.infer({"input": canvas}, share_inputs=True, share_outputs=True)
        canvas[0, :rows, :columns] = 0
        boxes, scores, points = self._decode([result[i] for i in range(12)])
        keep = cv2.dnn.NMSBoxes(boxes.tolist(), scores.tolist(), self._score_threshold, self._nms_threshold,
                                top_k=self._top_k) if len(scores) else []
        faces = []
        margin = EDGE_MARGIN * max(height, width)
        for i in np.asarray(keep, dtype=np.int64).reshape(-1):
            x, y, w, h = (float(v) / scale for v in boxes[i])
            face = Face(
                box=(x, y, w, h),
                landmarks=points[i].reshape(5, 2).astype(np.float64) / scale,
                score=float(scores[i]),
                at_edge=x <= margin or y <= margin or x + w >= width - margin or y + h >= height - margin,
            )
            if face.size >= min_face_size:
                faces.append(face)
        faces.sort(key=lambda f: f.prominence, reverse=True)
        return faces

    def _decode(self, outputs: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Boxes (x, y, w, h), scores and 5 landmarks of the anchors scoring above the threshold.
        The outputs are, per stride, class and objectness scores, box offsets and landmarks."""
        boxes, scores, points = [], [], []
        for level, stride in enumerate(self.STRIDES):
            columns = self.side // stride
            score = np.sqrt(np.clip(outputs[level].reshape(-1), 0, 1) * np.clip(outputs[3 + level].reshape(-1), 0, 1))
            found = np.nonzero(score >= self._score_threshold)[0]
            row, column = (found // columns).astype(np.float32), (found % columns).astype(np.float32)
            offsets = outputs[6 + level].reshape(-1, 4)[found]
            size = np.exp(offsets[:, 2:4]) * stride
            centre = (np.stack([column, row], axis=1) + offsets[:, :2]) * stride
            boxes.append(np.concatenate([centre - size / 2, size], axis=1))
            marks = outputs[9 + level].reshape(-1, 5, 2)[found]
            points.append(((marks + np.stack([column, row], axis=1)[:, None, :]) * stride).reshape(-1, 10))
            scores.append(score[found])
        return np.concatenate(boxes), np.concatenate(scores), np.concatenate(points)


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
    """SFace on OpenVINO: a 128-d unit vector per aligned face."""

    def __init__(self, encoder: Encoder = DEFAULT_ENCODER) -> None:
        self.encoder = encoder
        self._request = compiled(SFACE_F32, "data", 112, 112, to_rgb=True).create_infer_request()

    def embed(self, image: np.ndarray, face: Face) -> np.ndarray:
        return self.embed_aligned(align_face(image, face))

    def embed_aligned(self, crop: np.ndarray) -> np.ndarray:
        vector = self._forward(crop)
        if self.encoder.flip_average:
            vector = vector + self._forward(crop[:, ::-1])
        return vector / max(float(np.linalg.norm(vector)), 1e-12)

    def _forward(self, crop: np.ndarray) -> np.ndarray:
        found = self._request.infer({"data": np.ascontiguousarray(crop)[None]}, share_inputs=True, share_outputs=True)
        vector = found[0].reshape(-1).astype(np.float32)  # a copy: the request's buffer is reused
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
    mesh: FaceMesh | None  # None: MediaPipe found none, or it was not looked for
    landmarked: bool = True  # False: the mesh was skipped (the call checks no liveness)

    def to_bytes(self) -> bytes:
        arrays: dict[str, Any] = {
            "box": np.asarray(self.face.box, np.float64),
            "landmarks": self.face.landmarks,
            "score": np.asarray([self.face.score]),
            "aligned": self.aligned,
            "landmarked": np.asarray([self.landmarked]),
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
            landmarked = bool(arrays["landmarked"][0]) if "landmarked" in arrays else True
            return cls(face=face, aligned=arrays["aligned"], mesh=mesh, landmarked=landmarked)


def embedding_to_bytes(embedding: np.ndarray, encoder: Encoder = DEFAULT_ENCODER) -> bytes:
    """An embedding as stored beside a sample (``{key}.emb``), tagged with its encoder."""
    return f"{encoder.name}/{encoder.version}\n".encode() + np.asarray(embedding, np.float32).tobytes()


def embedding_from_bytes(data: bytes, encoder: Encoder = DEFAULT_ENCODER) -> np.ndarray | None:
    """The stored embedding; None when another encoder (or version) made it, or it is damaged."""
    header, _, payload = data.partition(b"\n")
    if header != f"{encoder.name}/{encoder.version}".encode() or len(payload) != 128 * 4:
        return None
    return np.frombuffer(payload, np.float32).copy()
