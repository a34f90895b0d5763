"""The liveness and challenge-response decision for one try: pure functions over face meshes.

A try is a few samples (photos) of one face, each with a BWS tag: "any" or a direction
("left", "right", "up", "down"). The decision looks at each pair of consecutive usable samples:

* **3D motion.** A flat photo moved, tilted or rescaled in front of a camera maps its landmarks
  onto the next sample's by one homography; a real head turning does not (the nose moves
  against the cheeks). Two residuals, both normalised by the interocular distance, say which
  explains the motion better: the homography's (``planarity_residual``) and that of the best
  rigid 3D rotation of MediaPipe's landmarks (scaled orthographic camera). A live pair has a
  large homography residual that the rigid motion explains much better (``rigid_ratio`` small);
  it must also turn the head by ``min_turn_degrees`` as MediaPipe's pose reads it.
* **Same face.** A pair that no rigid motion explains (a different face), or a large jump in
  position or size, makes the whole try not live.
* **Challenge.** With a challenge, each tagged sample's head pose must have changed the tagged
  way from the previous sample's, by at least ``min_turn_degrees`` and mostly about that axis.

The face-oval contour (MediaPipe's outline points) is left out of the geometry: on a turning
print MediaPipe places it from its 3D face prior rather than from the image, which makes a
print look rigid-3D; without it the gap between live and attack rigid ratios widened from
0.03 to 0.09 on the first calibration set.

The defaults were calibrated on synthetic sequences (``tests/facegen``: renders of two real
photos turned by 8–20° per step, and six kinds of flat-photo attacks), not on real
presentation attacks: see ``LivenessThresholds``; ``python -m tests.facegen.calibrate``
measures them again. Limits: MediaPipe's landmarks partly follow its 3D face prior, so a print
or screen turned far (±25°) between samples is now and then read as a turning head: of 1,399
generated attack tries one passed (a screen replay), and of 548 live tries one failed (8°
steps). A replayed video, or photos of the person in the asked poses, pass a motion check by
design; the random challenge and the token lifetime limit those.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from bws.faces import FaceMesh
from bws.settings import LivenessThresholds

DIRECTIONS = ("left", "right", "up", "down")
SHIPPED_THRESHOLDS = LivenessThresholds()

# MediaPipe's outline points; the geometry uses the other 432 of the 468 surface landmarks
# (468..477 are the irises, which move with the gaze, not the head).
FACE_OVAL = (10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400,
             377, 152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109)
GEOMETRY_LANDMARKS = np.setdiff1d(np.arange(468), FACE_OVAL)

# MediaPipe's pose matrix reads about 0.67× a true yaw change and 0.82× a true pitch change
# (architecture.md; the renders of tests/facegen agree). Pose deltas are divided by these
# gains so that they, ``min_turn_degrees`` and the dominant-axis test are in head degrees.
YAW_READ_GAIN = 0.67
PITCH_READ_GAIN = 0.82


@dataclass(frozen=True)
class PairEvidence:
    """What one pair of consecutive usable samples shows.

    ``index`` is the pair's first sample; the second is the next usable sample (``index + 1``
    unless that one had no usable face). Pose deltas are in the tag convention (see
    :func:`tag_pose_change`): ``yaw_delta > 0`` toward "left", ``pitch_delta > 0`` toward "up".
    """

    index: int
    motion: float  # RMS landmark motion / interocular distance
    planarity_residual: float  # RMS homography residual / interocular distance
    rigid_ratio: float  # rigid-3D residual / homography residual (small = 3D motion)
    yaw_delta: float  # head degrees, positive toward "left"
    pitch_delta: float  # head degrees, positive toward "up"
    expected_direction: str  # the second sample's challenge direction, "" when none
    direction_followed: bool | None  # None when no direction was expected
    live: bool  # this pair alone shows a real 3D head turn
    rigid_residual: float = 0.0  # rigid-3D residual / interocular distance
    face_shift: float = 0.0  # landmark centroid shift / interocular distance
    scale_change: float = 0.0  # |ln| of the interocular-distance ratio
    same_face: bool = True  # explained as one face moving (no jump, no shape change)
    score: float = 0.0  # 0..1, ≥ 0.5 exactly when ``live``


@dataclass(frozen=True)
class LivenessDecision:
    live: bool
    challenge_met: bool | None  # None when no challenge was asked
    error_code: str | None  # None, "LiveDetectionFailed", "ChallengeResponseFailed", "NotEnoughSamples"
    score: float  # 0..1: the best pair's score, 0 when not one face
    pairs: tuple[PairEvidence, ...]
    message: str  # one sentence explaining the outcome


def tag_pose_change(first: FaceMesh, second: FaceMesh, *, mirrored: bool) -> tuple[float, float]:
    """The head's turn from ``first`` to ``second`` as (yaw, pitch) head degrees in the tag
    convention: yaw > 0 is "left", pitch > 0 is "up". The only place the mirror convention lives.

    MediaPipe's yaw is positive toward the subject's own left *as if the image were camera-true*,
    i.e. toward the image's right edge. ``mirrored=True`` (BWS web clients upload mirror images):
    "left" is toward the uploaded image's LEFT edge, so a falling yaw. ``mirrored=False``
    (camera-true images): "left" is the subject's own left, a rising yaw. Both name the same
    physical turn. "up" does not depend on mirroring; MediaPipe's pitch is positive looking down.
    """
    yaw = (second.yaw_degrees - first.yaw_degrees) / YAW_READ_GAIN
    pitch = (second.pitch_degrees - first.pitch_degrees) / PITCH_READ_GAIN
    return (-yaw if mirrored else yaw), -pitch


def direction_followed(direction: str, yaw_delta: float, pitch_delta: float, min_turn: float) -> bool:
    """Whether a turn (tag convention) goes ``direction`` by ``min_turn`` degrees, mostly on its axis."""
    if direction not in DIRECTIONS:
        return False
    along, across = (yaw_delta, pitch_delta) if direction in ("left", "right") else (pitch_delta, yaw_delta)
    signed = along if direction in ("left", "up") else -along
    return signed >= min_turn and abs(along) > abs(across)


def _rms(difference: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.sum(difference**2, axis=1))))


def homography_residual(source: np.ndarray, target: np.ndarray) -> float:
    """RMS distance (px) between ``target`` and ``source`` mapped by their best homography."""
    homography, _ = cv2.findHomography(source, target, 0)
    if homography is None:  # degenerate points (all on a line): no evidence of 3D motion either
        return 0.0
    mapped = cv2.perspectiveTransform(source[None].astype(np.float64), homography)[0]
    return _rms(mapped - target)


def rigid_residual(source: np.ndarray, target: np.ndarray, iterations: int = 8) -> float:
    """RMS distance (px) between 2D ``target`` and the 3D ``source`` points after the best
    rotation, scale and shift seen through an orthographic camera (6 degrees of freedom).

    Started from the nearest scaled rotation to the best affine camera, refined by Gauss–Newton
    on a small-rotation update; a few iterations converge for head-sized turns.
    """
    points = source - source.mean(axis=0)
    seen = target - target.mean(axis=0)
    affine = np.linalg.lstsq(points, seen, rcond=None)[0].T  # 2×3
    u, singular, vt = np.linalg.svd(affine, full_matrices=False)
    scale = float(singular.mean())
    rows = u @ vt
    rotation = np.vstack([rows, np.cross(rows[0], rows[1])])
    zeros = np.zeros(len(points))
    for _ in range(iterations):
        turned = points @ rotation.T
        residual = (seen - scale * turned[:, :2]).ravel()
        # d(projection)/d(rotation vector) for R ← (I + [ω]×) R, and d/d(ln scale).
        jacobian = np.empty((len(points), 2, 4))
        jacobian[:, 0, :3] = scale * np.column_stack([zeros, turned[:, 2], -turned[:, 1]])
        jacobian[:, 1, :3] = scale * np.column_stack([-turned[:, 2], zeros, turned[:, 0]])
        jacobian[:, :, 3] = scale * turned[:, :2]
        step = np.linalg.lstsq(jacobian.reshape(-1, 4), residual, rcond=None)[0]
        rotation = cv2.Rodrigues(step[:3])[0] @ rotation
        scale *= math.exp(step[3])
        if np.abs(step).max() < 1e-7:
            break
    return _rms(seen - scale * (points @ rotation.T)[:, :2])


def measure_pair(index: int, first: FaceMesh, second: FaceMesh, expected_direction: str, *, mirrored: bool,
                 thresholds: LivenessThresholds) -> PairEvidence:
    """The evidence of one pair of samples (both usable)."""
    a, b = first.points[GEOMETRY_LANDMARKS], second.points[GEOMETRY_LANDMARKS]
    scale = (first.interocular_distance + second.interocular_distance) / 2
    # Both directions, averaged: each fit trusts the depth MediaPipe guessed for one sample.
    planar = (homography_residual(a[:, :2], b[:, :2]) + homography_residual(b[:, :2], a[:, :2])) / 2
    rigid = (rigid_residual(a, b[:, :2]) + rigid_residual(b, a[:, :2])) / 2
    # Nothing to explain (identical landmarks): the rigid motion is no better than a plane.
    ratio = rigid / planar if planar > 1e-9 else 1.0
    yaw, pitch = tag_pose_change(first, second, mirrored=mirrored)
    turn = max(abs(yaw), abs(pitch))
    shift = float(np.linalg.norm(b[:, :2].mean(axis=0) - a[:, :2].mean(axis=0))) / scale
    scale_change = abs(math.log(second.interocular_distance / first.interocular_distance))
    same_face = (shift <= thresholds.max_face_shift and scale_change <= thresholds.max_scale_change
                 and rigid / scale <= thresholds.max_rigid_residual)
    # Each test's margin as a multiple of its threshold; the weakest one decides. Score 0.5 is
    # "exactly at the thresholds", 1.0 "twice the evidence every test asks for".
    margins = (planar / scale / thresholds.min_planarity_residual,
               (1.0 - ratio) / thresholds.min_rigid_ratio_score,
               turn / thresholds.min_turn_degrees)
    score = float(np.clip(0.5 * min(margins), 0.0, 1.0)) if same_face else 0.0
    followed = (direction_followed(expected_direction, yaw, pitch, thresholds.min_turn_degrees)
                if expected_direction else None)
    return PairEvidence(
        index=index,
        motion=_rms(b[:, :2] - a[:, :2]) / scale,
        planarity_residual=planar / scale,
        rigid_ratio=ratio,
        yaw_delta=yaw,
        pitch_delta=pitch,
        expected_direction=expected_direction,
        direction_followed=followed,
        live=same_face and min(margins) >= 1.0,
        rigid_residual=rigid / scale,
        face_shift=shift,
        scale_change=scale_change,
        same_face=same_face,
        score=score,
    )


def decide(meshes: Sequence[FaceMesh | None], tags: Sequence[str], *, expected_directions: Sequence[str] | None,
           mirrored: bool = True, thresholds: LivenessThresholds = SHIPPED_THRESHOLDS) -> LivenessDecision:
    """Whether the samples of one try show a live face, and follow the challenge if one was asked.

    ``meshes[i]`` and ``tags[i]`` belong to sample i (in upload order); a sample without a mesh
    or with a face under ``min_interocular_px`` does not count. ``expected_directions`` is the
    token's direction list for this try (None or empty: no challenge); the tags must then be
    those directions after the first sample, the reference, whose tag does not matter (BioID's
    page tags a retry's reference with the last direction of the try before).
    ``mirrored``: see :func:`tag_pose_change`.
    """
    challenge = list(expected_directions or [])
    usable = [(i, mesh) for i, mesh in enumerate(meshes)
              if mesh is not None and mesh.interocular_distance >= thresholds.min_interocular_px]
    if len(usable) < 2:
        return LivenessDecision(False, None, "NotEnoughSamples", 0.0, (),
                                f"{len(usable)} of {len(meshes)} samples show a usable face; at least 2 are needed.")
    pairs = []
    for (first, first_mesh), (second, second_mesh) in zip(usable, usable[1:], strict=False):
        tag = tags[second] if second < len(tags) else ""
        expected = tag if challenge and tag in DIRECTIONS else ""
        pairs.append(measure_pair(first, first_mesh, second_mesh, expected, mirrored=mirrored, thresholds=thresholds))
    evidence = tuple(pairs)
    jumps = [p.index for p in evidence if not p.same_face]
    score = 0.0 if jumps else max(p.score for p in evidence)
    counted = {index for index, _ in usable}
    missing = [i for i in range(len(meshes)) if i not in counted]
    challenge_met = _challenge_met(challenge, tags, missing, evidence) if challenge else None
    if jumps:
        return LivenessDecision(False, challenge_met, "LiveDetectionFailed", score, evidence,
                                f"Samples {jumps[0]} and the next do not show the same face moving.")
    if not any(p.live for p in evidence):
        return LivenessDecision(False, challenge_met, "LiveDetectionFailed", score, evidence,
                                "No pair of samples shows a head turning in 3D (flat, still or too small a motion).")
    if challenge_met is False:
        return LivenessDecision(True, False, "ChallengeResponseFailed", score, evidence,
                                _challenge_message(challenge, tags, missing, evidence))
    return LivenessDecision(True, challenge_met, None, score, evidence,
                            "The head turned as asked." if challenge else "The head turned in 3D.")


def _challenge_met(challenge: list[str], tags: Sequence[str], missing: list[int],
                   evidence: tuple[PairEvidence, ...]) -> bool:
    """The reference sample (any tag) then the challenge's directions, every sample usable,
    every direction followed."""
    return list(tags[1:]) == challenge and not missing and all(p.direction_followed for p in evidence)


def _challenge_message(challenge: list[str], tags: Sequence[str], missing: list[int],
                       evidence: tuple[PairEvidence, ...]) -> str:
    """Why a live try did not meet its challenge."""
    if list(tags[1:]) != challenge:
        return (f"After the reference sample, the samples are tagged {list(tags[1:])}; the challenge "
                f"asks for {challenge}.")
    if missing:
        return f"Sample {missing[0]} shows no usable face, so its direction cannot be checked."
    wrong = next(p for p in evidence if not p.direction_followed)
    return (f"Sample {wrong.index + 1} should turn {wrong.expected_direction}; the head turned "
            f"{wrong.yaw_delta:+.1f}° toward left and {wrong.pitch_delta:+.1f}° toward up.")
