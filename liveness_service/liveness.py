"""The liveness and challenge-response decision for one try: pure functions over face meshes.

A try is a few samples (photos) of one face, each with a BWS tag: "any" or a direction
("left", "right", "up", "down"). The first usable sample is the try's reference.

* **3D motion.** A flat photo moved, tilted or rescaled in front of a camera maps its landmarks
  onto another sample's by one homography; a real head turning does not (the nose moves
  against the cheeks). Two residuals, both normalised by the interocular distance, say which
  explains the motion better: the homography's (``planarity_residual``) and that of the best
  rigid 3D rotation of MediaPipe's landmarks (scaled orthographic camera). A live pair has a
  homography residual above the landmarks' noise that the rigid motion explains much better
  (``rigid_ratio`` small), and the head turned by ``min_turn_degrees`` as MediaPipe's pose reads
  it. Every pair of usable samples is measured, not only consecutive ones: BioID's capture page
  takes its photos as soon as the picture has moved about 11 px, a turn of 4–5°, so a slow
  user's consecutive photos are only that far apart, while the try's two most different photos
  (one turned sideways, one up or down) are 6–8° apart. One live pair makes the try live.
* **Same face.** Consecutive samples that no rigid motion explains (a different face), or a
  large jump in position or size, make the whole try not live.
* **Challenge.** With a challenge, each tagged sample's head pose must have changed the tagged
  way from the previous sample's by at least ``min_direction_degrees``, and more than
  ``min_axis_dominance`` times any turn on the other axis *away from the reference's pose*: a
  user who follows BioID's page brings the other axis back to the centre while turning the new
  way, which is not a deviation.

The face-oval contour (MediaPipe's outline points) is left out of the geometry: on a turning
print MediaPipe places it from its 3D face prior rather than from the image, which makes a
print look rigid-3D; without it the gap between live and attack rigid ratios widened from
0.03 to 0.09 on the first calibration set.

The defaults were calibrated on synthetic sequences (``tests/facegen``: renders of two real
photos turned by 4–20°, taken the way BioID's page takes them (``tests/facegen/page.py``) and in
fixed steps, and seven kinds of flat-photo attacks), not on real presentation attacks: see
``LivenessThresholds`` and ``make bench-liveness``. Limits: MediaPipe's landmarks partly follow
its 3D face prior, so a print or screen turned far between samples is now and then read as a
turning head. A replayed video, or photos of the person in the asked poses, pass a motion check
by design; the random challenge and the token lifetime limit those.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import cv2
import numpy as np

from bws.faces import FaceMesh
from bws.settings import LivenessThresholds

DIRECTIONS = ("left", "right", "up", "down")
SHIPPED_THRESHOLDS = LivenessThresholds()
MAX_3D_SAMPLES = 8  # samples of a try whose pairs are all measured for 3D motion
POOLED_PAIRS = 3  # pairs whose evidence the pooled test adds up

# MediaPipe's outline points; the geometry uses the other 432 of the 468 surface landmarks
# (468..477 are the irises, which move with the gaze, not the head).
FACE_OVAL = (10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400,
             377, 152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109)
GEOMETRY_LANDMARKS = np.setdiff1d(np.arange(468), FACE_OVAL)

# The head turn between two samples is the rotation of the best rigid fit of one sample's 3D
# landmarks to the other's (the one the 3D-motion test fits anyway). It reads about 0.88× a true
# yaw change and 0.80× a true pitch change (tests/facegen renders, 4–15°; MediaPipe's depth is
# a little flat); turns are divided by these gains so that they and the thresholds are in head
# degrees. Its error between photos taken as BioID's page takes them: 0.6° (yaw) and 0.9° (pitch)
# standard deviation, about half that of MediaPipe's own pose matrix (1.0°, 1.5°), which at the
# page's 4–5° steps read a turn on the other axis of up to 4° where there was 1–2°.
YAW_READ_GAIN = 0.88
PITCH_READ_GAIN = 0.80
# The 3D test's turn, though, is MediaPipe's own pose matrix: it fits its head model in
# perspective, so a tilted print barely turns it (a print tilted ±20° read at most 4° here),
# while the rigid fit explains the print's foreshortening as a turn. It reads about 0.67× a true
# yaw change and 0.82× a true pitch change (architecture.md), corrected by these gains.
MATRIX_YAW_GAIN = 0.67
MATRIX_PITCH_GAIN = 0.82


@dataclass(frozen=True)
class PairEvidence:
    """What one pair of usable samples shows.

    ``index`` and ``second`` are the pair's samples (upload order). Consecutive pairs (no usable
    sample between them) carry the challenge direction of ``second``; every pair carries the 3D
    evidence. Pose deltas are in the tag convention (see :func:`tag_turn`):
    ``yaw_delta > 0`` toward "left", ``pitch_delta > 0`` toward "up".
    """

    index: int
    motion: float  # RMS landmark motion / interocular distance
    planarity_residual: float  # RMS homography residual / interocular distance
    rigid_ratio: float  # rigid-3D residual / homography residual (small = 3D motion)
    yaw_delta: float  # head degrees, positive toward "left" (rigid fit)
    pitch_delta: float  # head degrees, positive toward "up" (rigid fit)
    expected_direction: str  # the second sample's challenge direction, "" when none
    direction_followed: bool | None  # None when no direction was expected
    live: bool  # this pair alone shows a real 3D head turn
    rigid_residual: float = 0.0  # rigid-3D residual / interocular distance
    face_shift: float = 0.0  # landmark centroid shift / interocular distance
    scale_change: float = 0.0  # |ln| of the interocular-distance ratio
    same_face: bool = True  # explained as one face moving (no jump, no shape change)
    score: float = 0.0  # 0..1, ≥ 0.5 exactly when ``live``
    second: int = -1  # the pair's second sample
    turn: float = 0.0  # the larger of yaw and pitch change as MediaPipe's pose matrix reads them, head degrees
    consecutive: bool = True  # no usable sample between the two


@dataclass(frozen=True)
class LivenessDecision:
    live: bool
    challenge_met: bool | None  # None when no challenge was asked
    error_code: str | None  # None, "LiveDetectionFailed", "ChallengeResponseFailed", "NotEnoughSamples"
    score: float  # 0..1: the best pair's score, 0 when not one face
    pairs: tuple[PairEvidence, ...]
    message: str  # one sentence explaining the outcome


def tag_turn(forward: np.ndarray, backward: np.ndarray, *, mirrored: bool) -> tuple[float, float]:
    """The head's turn from a first sample to a second as (yaw, pitch) head degrees in the tag
    convention: yaw > 0 is "left", pitch > 0 is "up". The only place the mirror convention lives.

    ``forward`` rotates the first sample's landmarks onto the second's, ``backward`` the second's
    onto the first's (image axes: x right, y down, z away from the camera); both are averaged.
    In image terms a positive yaw turns the face toward the image's LEFT edge. ``mirrored=True``
    (BWS web clients upload mirror images): that is "left". ``mirrored=False`` (camera-true
    images): "left" is the subject's own left, toward the image's right edge. Both name the same
    physical turn. "up" (toward the image's top edge) does not depend on mirroring.
    """
    yaw_f, pitch_f = _facing(forward)
    yaw_b, pitch_b = _facing(backward)
    yaw = (yaw_f - yaw_b) / 2 / YAW_READ_GAIN
    pitch = (pitch_f - pitch_b) / 2 / PITCH_READ_GAIN
    return (yaw if mirrored else -yaw), pitch


def matrix_turn(first: FaceMesh, second: FaceMesh) -> float:
    """The larger of the yaw and pitch change (head degrees) between two samples as MediaPipe's
    pose matrix reads them: the turn the 3D-motion test asks for."""
    return max(abs(second.yaw_degrees - first.yaw_degrees) / MATRIX_YAW_GAIN,
               abs(second.pitch_degrees - first.pitch_degrees) / MATRIX_PITCH_GAIN)


def _facing(rotation: np.ndarray) -> tuple[float, float]:
    """Where a rotation turns the face's normal (toward the camera: −z), as image-frame angles in
    degrees: yaw > 0 toward the image's left edge, pitch > 0 toward its top edge."""
    normal = -rotation[:, 2]
    return (math.degrees(math.atan2(-normal[0], -normal[2])),
            math.degrees(math.atan2(-normal[1], math.hypot(normal[0], normal[2]))))


def direction_followed(direction: str, turn: tuple[float, float], first: tuple[float, float],
                       second: tuple[float, float], thresholds: LivenessThresholds) -> bool:
    """Whether the head went ``direction``: ``turn`` is the pair's own (yaw, pitch) turn, ``first``
    and ``second`` the two samples' poses relative to the try's reference (tag convention).

    The turn on the asked axis must be at least ``min_direction_degrees`` that way and at least
    ``min_axis_dominance`` times the turn on the other axis away from the reference's pose.
    A turn on the other axis back toward the reference does not count against it.
    """
    if direction not in DIRECTIONS:
        return False
    axis = 0 if direction in ("left", "right") else 1
    signed = turn[axis] if direction in ("left", "up") else -turn[axis]
    away = abs(second[1 - axis]) - abs(first[1 - axis])
    return signed >= thresholds.min_direction_degrees and signed >= thresholds.min_axis_dominance * max(0.0, away)


def _rms(difference: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.sum(difference**2, axis=1))))


def homography_residual(source: np.ndarray, target: np.ndarray) -> float:
    """RMS distance (px) between ``target`` and ``source`` mapped by their best homography."""
    homography, _ = cv2.findHomography(source, target, 0)
    if homography is None:  # degenerate points (all on a line): no evidence of 3D motion either
        return 0.0
    mapped = cv2.perspectiveTransform(source[None].astype(np.float64), homography)[0]
    return _rms(mapped - target)


def rigid_fit(source: np.ndarray, target: np.ndarray, iterations: int = 8) -> tuple[float, np.ndarray]:
    """The best rotation, scale and shift of the 3D ``source`` points seen through an
    orthographic camera onto the 2D ``target`` (6 degrees of freedom): the RMS distance (px)
    left, and the rotation (3×3, image axes).

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
        flat = jacobian.reshape(-1, 4)
        step = np.linalg.solve(flat.T @ flat, flat.T @ residual)  # the normal equations: 4 unknowns, well posed
        rotation = cv2.Rodrigues(step[:3])[0] @ rotation
        scale *= math.exp(step[3])
        if np.abs(step).max() < 1e-7:
            break
    return _rms(seen - scale * (points @ rotation.T)[:, :2]), rotation


def measure_pair(index: int, first: FaceMesh, second: FaceMesh, *, mirrored: bool, thresholds: LivenessThresholds,
                 second_index: int = -1, consecutive: bool = True) -> PairEvidence:
    """The 3D evidence of one pair of samples (both usable); directions are judged by :func:`decide`."""
    a, b = first.points[GEOMETRY_LANDMARKS], second.points[GEOMETRY_LANDMARKS]
    scale = (first.interocular_distance + second.interocular_distance) / 2
    # Both directions, averaged: each fit trusts the depth MediaPipe guessed for one sample.
    planar = (homography_residual(a[:, :2], b[:, :2]) + homography_residual(b[:, :2], a[:, :2])) / 2
    forward, backward = rigid_fit(a, b[:, :2]), rigid_fit(b, a[:, :2])
    rigid = (forward[0] + backward[0]) / 2
    # Nothing to explain (identical landmarks): the rigid motion is no better than a plane.
    ratio = rigid / planar if planar > 1e-9 else 1.0
    yaw, pitch = tag_turn(forward[1], backward[1], mirrored=mirrored)
    turn = matrix_turn(first, second)
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
    return PairEvidence(
        index=index,
        second=index + 1 if second_index < 0 else second_index,
        consecutive=consecutive,
        motion=_rms(b[:, :2] - a[:, :2]) / scale,
        planarity_residual=planar / scale,
        rigid_ratio=ratio,
        yaw_delta=yaw,
        pitch_delta=pitch,
        turn=turn,
        expected_direction="",
        direction_followed=None,
        live=same_face and min(margins) >= 1.0,
        rigid_residual=rigid / scale,
        face_shift=shift,
        scale_change=scale_change,
        same_face=same_face,
        score=score,
    )


def explained_depth(pair: PairEvidence) -> float:
    """How much of a pair's landmark motion a rigid 3D turn explains and no plane does: the
    homography residual less the rigid one, in interocular distances (0 when not positive)."""
    return max(0.0, pair.planarity_residual * (1.0 - pair.rigid_ratio))


def pooled_evidence(pairs: Sequence[PairEvidence], thresholds: LivenessThresholds) -> tuple[float, float, bool]:
    """The try's 3D evidence pooled over its pairs: the three largest explained depths summed,
    the largest turn, and whether both reach their thresholds.

    A slow user photographed 4–6° into each turn gives several pairs that each show a little
    depth; a flat photo gives none that a rigid turn explains. Only the three strongest pairs
    count, so more samples do not add up noise.
    """
    depth = sum(sorted((explained_depth(p) for p in pairs), reverse=True)[:POOLED_PAIRS])
    turn = max((p.turn for p in pairs), default=0.0)
    return depth, turn, depth >= thresholds.min_pooled_depth and turn >= thresholds.min_pooled_turn_degrees


def decide(meshes: Sequence[FaceMesh | None], tags: Sequence[str], *, expected_directions: Sequence[str] | None,
           mirrored: bool = True, thresholds: LivenessThresholds = SHIPPED_THRESHOLDS) -> LivenessDecision:
    """Whether the samples of one try show a live face, and follow the challenge if one was asked.

    ``meshes[i]`` and ``tags[i]`` belong to sample i (in upload order); a sample without a mesh
    or with a face under ``min_interocular_px`` does not count. ``expected_directions`` is the
    token's direction list for this try (None or empty: no challenge); the tags must then be
    those directions after the first sample, the reference, whose tag does not matter (BioID's
    page tags a retry's reference with the last direction of the try before).
    ``mirrored``: see :func:`tag_turn`.
    """
    challenge = list(expected_directions or [])
    usable = [(i, mesh) for i, mesh in enumerate(meshes)
              if mesh is not None and mesh.interocular_distance >= thresholds.min_interocular_px]
    if len(usable) < 2:
        return LivenessDecision(False, None, "NotEnoughSamples", 0.0, (),
                                f"{len(usable)} of {len(meshes)} samples show a usable face; at least 2 are needed.")
    # 3D evidence: every pair among the first samples (BioID's clients take at most 8 per try;
    # more would only give an attacker more draws of noise).
    measured = usable[:MAX_3D_SAMPLES]
    pairs = {(first, second): measure_pair(first, first_mesh, second_mesh, mirrored=mirrored, thresholds=thresholds,
                                           second_index=second, consecutive=j == k + 1)
             for k, (first, first_mesh) in enumerate(measured)
             for j, (second, second_mesh) in enumerate(measured[k + 1:], start=k + 1)}
    for (first, first_mesh), (second, second_mesh) in zip(usable[MAX_3D_SAMPLES - 1:], usable[MAX_3D_SAMPLES:],
                                                          strict=False):
        pairs[(first, second)] = measure_pair(first, first_mesh, second_mesh, mirrored=mirrored,
                                              thresholds=thresholds, second_index=second)
    # Directions: each consecutive pair's own turn; the other axis judged against the reference.
    reference = usable[0][0]
    poses = {reference: (0.0, 0.0)} | {second: (p.yaw_delta, p.pitch_delta)
                                       for (first, second), p in pairs.items() if first == reference}
    for (first, second), pair in list(pairs.items()):
        tag = tags[second] if second < len(tags) else ""
        if challenge and pair.consecutive and tag in DIRECTIONS:
            if second not in poses:  # beyond the 3D pairs: chained from the previous sample
                poses[second] = (poses[first][0] + pair.yaw_delta, poses[first][1] + pair.pitch_delta)
            followed = direction_followed(tag, (pair.yaw_delta, pair.pitch_delta), poses[first], poses[second],
                                          thresholds)
            pairs[(first, second)] = replace(pair, expected_direction=tag, direction_followed=followed)
    evidence = tuple(pairs.values())
    consecutive = [p for p in evidence if p.consecutive]
    jumps = [p.index for p in consecutive if not p.same_face]
    depth, turn, pooled_live = pooled_evidence([p for p in evidence if p.second <= measured[-1][0]], thresholds)
    pooled_score = 0.5 * min(depth / thresholds.min_pooled_depth, turn / thresholds.min_pooled_turn_degrees)
    score = 0.0 if jumps else float(np.clip(max(pooled_score, *(p.score for p in evidence)), 0.0, 1.0))
    counted = {index for index, _ in usable}
    missing = [i for i in range(len(meshes)) if i not in counted]
    challenge_met = _challenge_met(challenge, tags, missing, tuple(consecutive)) if challenge else None
    if jumps:
        return LivenessDecision(False, challenge_met, "LiveDetectionFailed", score, evidence,
                                f"Samples {jumps[0]} and the next do not show the same face moving.")
    if not pooled_live and not any(p.live for p in evidence):
        return LivenessDecision(False, challenge_met, "LiveDetectionFailed", score, evidence,
                                "No pair of samples shows a head turning in 3D (flat, still or too small a motion).")
    if challenge_met is False:
        return LivenessDecision(True, False, "ChallengeResponseFailed", score, evidence,
                                _challenge_message(challenge, tags, missing, tuple(consecutive)))
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
    return (f"Sample {wrong.second} should turn {wrong.expected_direction}; the head turned "
            f"{wrong.yaw_delta:+.1f}° toward left and {wrong.pitch_delta:+.1f}° toward up.")
