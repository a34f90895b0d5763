"""The liveness decision (liveness_service/liveness.py) on generated sequences, all offline.

Live tries are renders of a real photo with the head turned (tests/facegen); attacks are the
flat photo moved, tilted, bent, blurred, shown on a screen or rescaled. Each attack kind has
its own test, so a change that lets one through names it. Challenge directions are checked in
both mirror conventions. Seeds are fixed; calibrate.py measures the rates over many seeds.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import cv2
import numpy as np
import pytest

from bws.faces import FaceDetector, FaceLandmarker, FaceMesh
from liveness_service.liveness import (
    DIRECTIONS,
    PITCH_READ_GAIN,
    YAW_READ_GAIN,
    LivenessDecision,
    LivenessThresholds,
    decide,
    direction_followed,
    measure_pair,
    tag_turn,
)
from tests import facegen
from tests.facegen import page

OPPOSITE = {"left": "right", "right": "left", "up": "down", "down": "up"}
PHOTOS = ("astronaut", "grace_hopper")
Engine = tuple[FaceDetector, FaceLandmarker]
Meshes = list[FaceMesh | None]


@pytest.fixture(scope="module")
def engine() -> Engine:
    """The detector and landmarker, loaded once (the generator's rigs share them)."""
    return facegen.face_engine()


def meshes(frames: list[np.ndarray], engine: Engine) -> Meshes:
    return facegen.meshes_of(frames, *engine)


@pytest.fixture(scope="module")
def turns(engine: Engine) -> dict[tuple[str, str], Meshes]:
    """Per photo and direction: a frontal sample, then one turned 12° that way (mirrored frames)."""
    return {(name, direction): meshes(facegen.live_sequence(facegen.source_photo(name), [direction], rng=3), engine)
            for name in PHOTOS for direction in DIRECTIONS}


@pytest.fixture(scope="module")
def camera_true_turns(engine: Engine) -> dict[tuple[str, str], Meshes]:
    """The same turns as ``turns``, flipped to camera-true frames (the direction names the same motion)."""
    return {(name, direction): meshes([cv2.flip(frame, 1) for frame in
                                       facegen.live_sequence(facegen.source_photo(name), [direction], rng=3)], engine)
            for name in PHOTOS for direction in DIRECTIONS}


def plain(found: Meshes) -> LivenessDecision:
    return decide(found, ["any"] * len(found), expected_directions=None)


def challenged(found: Meshes, directions: list[str], mirrored: bool = True) -> LivenessDecision:
    return decide(found, ["any", *directions], expected_directions=directions, mirrored=mirrored)


# -- the generator and the pose conventions ----------------------------------------------------


def test_the_generator_is_deterministic_for_a_seed() -> None:
    photo = facegen.source_photo("astronaut")
    first, second = (facegen.live_sequence(photo, ["up"], rng=9) for _ in range(2))
    assert all(np.array_equal(a, b) for a, b in zip(first, second, strict=True))
    assert first[0].shape == (480, 640, 3)


def test_a_render_turned_left_and_up_moves_the_nose_that_way_and_mediapipe_reads_it(engine: Engine) -> None:
    """Render convention (yaw > 0: toward the image's left edge; pitch > 0: up) and the signs of
    FaceMesh's yaw (positive toward the image's right edge) and pitch (positive looking down)."""
    rig = facegen.rig_for(facegen.source_photo("grace_hopper"))
    frontal, left, up = meshes([rig.render(0, 0), rig.render(12, 0), rig.render(0, 12)], engine)
    assert frontal is not None and left is not None and up is not None

    def nose_offset(mesh: FaceMesh) -> np.ndarray:  # nose tip relative to the mid-point of the irises
        return mesh.points[1, :2] - (mesh.points[468, :2] + mesh.points[473, :2]) / 2

    assert nose_offset(left)[0] < nose_offset(frontal)[0] - 5
    assert nose_offset(up)[1] < nose_offset(frontal)[1] - 5
    assert left.yaw_degrees < frontal.yaw_degrees - 4
    assert up.pitch_degrees < frontal.pitch_degrees - 4


def _turning(axis: str, degrees: float) -> np.ndarray:
    """A rotation about the image's x or y axis (x right, y down, z away from the camera)."""
    c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    if axis == "y":
        return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


def test_tag_convention_left_is_the_image_left_edge_when_mirrored_and_the_subjects_left_when_not() -> None:
    toward_image_right = _turning("y", -10)
    assert (toward_image_right @ [0, 0, -1])[0] > 0  # the face's normal now points to the image's right
    mirrored_yaw, _ = tag_turn(toward_image_right, toward_image_right.T, mirrored=True)
    camera_true_yaw, _ = tag_turn(toward_image_right, toward_image_right.T, mirrored=False)
    assert mirrored_yaw == pytest.approx(-10 / YAW_READ_GAIN)  # "right" in a mirrored frame
    assert camera_true_yaw == pytest.approx(10 / YAW_READ_GAIN)  # the subject's own left
    toward_top = _turning("x", -10)
    assert (toward_top @ [0, 0, -1])[1] < 0  # toward the image's top edge: "up"
    _, pitch = tag_turn(toward_top, toward_top.T, mirrored=True)
    assert pitch == pytest.approx(10 / PITCH_READ_GAIN)


def test_the_rigid_fit_reads_a_rendered_turn_in_head_degrees(engine: Engine) -> None:
    """The turn the challenge is judged on, within 2° on renders of known yaw and pitch."""
    rig = facegen.rig_for(facegen.source_photo("astronaut"))
    frontal, left, down = meshes([rig.render(0, 0), rig.render(6, 0), rig.render(0, -6)], engine)
    thresholds = LivenessThresholds()
    assert frontal is not None and left is not None and down is not None
    to_left = measure_pair(0, frontal, left, mirrored=True, thresholds=thresholds)
    to_down = measure_pair(0, frontal, down, mirrored=True, thresholds=thresholds)
    assert (to_left.yaw_delta, to_left.pitch_delta) == (pytest.approx(6, abs=2), pytest.approx(0, abs=2))
    assert (to_down.yaw_delta, to_down.pitch_delta) == (pytest.approx(0, abs=2), pytest.approx(-6, abs=2))


# -- live tries ------------------------------------------------------------------------------


@pytest.mark.parametrize("step", [8.0, 15.0])
@pytest.mark.parametrize("name", PHOTOS)
def test_a_head_turning_is_live(engine: Engine, name: str, step: float) -> None:
    frames = facegen.live_sequence(facegen.source_photo(name), ["left", "up", "right"], step_deg=step, rng=11)
    decision = plain(meshes(frames, engine))
    assert (decision.live, decision.error_code, decision.challenge_met) == (True, None, None), decision.message
    assert decision.score >= 0.5
    assert len(decision.pairs) == 6 and sum(p.consecutive for p in decision.pairs) == 3  # every pair, 3 consecutive


def test_a_sample_without_a_face_is_skipped(turns: dict[tuple[str, str], Meshes]) -> None:
    frontal, turned = turns[("astronaut", "left")]
    decision = plain([frontal, None, turned])
    assert decision.live
    assert [pair.index for pair in decision.pairs] == [0]


# -- too few samples ---------------------------------------------------------------------------


def test_one_sample_is_not_enough_samples(turns: dict[tuple[str, str], Meshes]) -> None:
    decision = plain(turns[("astronaut", "left")][:1])
    assert (decision.live, decision.error_code, decision.pairs) == (False, "NotEnoughSamples", ())


def test_samples_without_a_face_or_with_a_too_small_face_do_not_count(turns: dict[tuple[str, str], Meshes]) -> None:
    frontal, turned = turns[("astronaut", "left")]
    assert plain([frontal, None]).error_code == "NotEnoughSamples"
    too_small = LivenessThresholds(min_interocular_px=frontal.interocular_distance + 100)  # type: ignore[union-attr]
    decision = decide([frontal, turned], ["any", "any"], expected_directions=None, thresholds=too_small)
    assert decision.error_code == "NotEnoughSamples"


# -- attacks -----------------------------------------------------------------------------------


def assert_never_live(attack: Callable[[np.ndarray, int, int], list[np.ndarray]], engine: Engine) -> None:
    """Sequences of four frames from both photos, three seeds each: none may pass."""
    for name in PHOTOS:
        for seed in (1, 2, 3):
            decision = plain(meshes(attack(facegen.source_photo(name), 4, seed), engine))
            assert not decision.live, (name, seed, decision.pairs)
            assert decision.error_code == "LiveDetectionFailed"
            assert decision.score < 0.5


def test_a_photo_moved_in_front_of_the_camera_is_not_live(engine: Engine) -> None:
    assert_never_live(facegen.photo_moved, engine)


def test_a_photo_tilted_in_perspective_is_not_live(engine: Engine) -> None:
    assert_never_live(facegen.photo_tilted, engine)


def test_a_bent_photo_is_not_live(engine: Engine) -> None:
    assert_never_live(facegen.photo_bent, engine)


def test_a_blurred_print_is_not_live(engine: Engine) -> None:
    assert_never_live(facegen.photo_blurred, engine)


def test_a_photo_replayed_on_a_screen_is_not_live(engine: Engine) -> None:
    assert_never_live(facegen.screen_replay, engine)


def test_a_photo_shown_at_another_scale_is_not_live(engine: Engine) -> None:
    assert_never_live(facegen.photo_rescaled, engine)


def test_identical_frames_are_not_live(engine: Engine) -> None:
    decision = plain(meshes(facegen.static_frames(facegen.source_photo("astronaut"), 3), engine))
    assert (decision.live, decision.error_code, decision.score) == (False, "LiveDetectionFailed", 0.0)


def test_a_different_person_between_samples_is_not_live(engine: Engine) -> None:
    astronaut = facegen.live_sequence(facegen.source_photo("astronaut"), ["left"], rng=7)
    grace_hopper = facegen.live_sequence(facegen.source_photo("grace_hopper"), ["left"], rng=8)
    decision = plain(meshes([*astronaut, grace_hopper[1]], engine))
    assert decision.pairs[0].live  # the astronaut's own turn is live...
    assert not decision.pairs[1].same_face  # ...but then another face appears
    assert (decision.live, decision.error_code, decision.score) == (False, "LiveDetectionFailed", 0.0)


def test_an_attack_with_a_challenge_is_live_detection_failed_not_challenge_failed(engine: Engine) -> None:
    frames = facegen.photo_tilted(facegen.source_photo("astronaut"), 3, 4)
    decision = challenged(meshes(frames, engine), ["left", "up"])
    assert (decision.live, decision.error_code) == (False, "LiveDetectionFailed")


# -- challenges --------------------------------------------------------------------------------


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_a_followed_challenge_direction_passes(turns: dict[tuple[str, str], Meshes], direction: str) -> None:
    for name in PHOTOS:
        decision = challenged(turns[(name, direction)], [direction])
        assert (decision.live, decision.challenge_met, decision.error_code) == (True, True, None), (name, decision)
        assert decision.pairs[0].expected_direction == direction and decision.pairs[0].direction_followed


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_turning_the_opposite_way_is_challenge_response_failed(turns: dict[tuple[str, str], Meshes],
                                                               direction: str) -> None:
    for name in PHOTOS:
        decision = challenged(turns[(name, OPPOSITE[direction])], [direction])
        assert (decision.live, decision.challenge_met, decision.error_code) == (
            True, False, "ChallengeResponseFailed"), (name, decision)
        assert decision.pairs[0].direction_followed is False


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_camera_true_frames_follow_the_challenge_when_not_mirrored(
        camera_true_turns: dict[tuple[str, str], Meshes], direction: str) -> None:
    for name in PHOTOS:
        found = camera_true_turns[(name, direction)]
        assert challenged(found, [direction], mirrored=False).challenge_met, name
        assert challenged(found, [OPPOSITE[direction]], mirrored=False).error_code == "ChallengeResponseFailed"


@pytest.mark.parametrize("direction", ["left", "right"])
def test_camera_true_frames_read_as_mirrored_swap_left_and_right(
        camera_true_turns: dict[tuple[str, str], Meshes], direction: str) -> None:
    for name in PHOTOS:
        found = camera_true_turns[(name, direction)]
        assert challenged(found, [direction], mirrored=True).error_code == "ChallengeResponseFailed", name
        assert challenged(found, [OPPOSITE[direction]], mirrored=True).challenge_met, name


def test_a_challenge_of_three_directions_is_checked_sample_by_sample(engine: Engine) -> None:
    directions = ["up", "left", "down"]
    found = meshes(facegen.live_sequence(facegen.source_photo("astronaut"), directions, rng=5), engine)
    assert challenged(found, directions).challenge_met
    wrong = challenged(found, ["up", "right", "down"])
    assert wrong.error_code == "ChallengeResponseFailed"
    assert [pair.direction_followed for pair in wrong.pairs if pair.consecutive] == [True, False, True]
    untagged = decide(found, ["any"] * 4, expected_directions=directions)
    assert untagged.error_code == "ChallengeResponseFailed"


@pytest.mark.parametrize("reference_tag", ["down", "left", "up"])
def test_the_reference_samples_tag_does_not_matter(engine: Engine, reference_tag: str) -> None:
    """BioID's page tags a retry's first photo with the last direction of the try before."""
    directions = ["up", "down", "left"]
    found = meshes(facegen.live_sequence(facegen.source_photo("astronaut"), directions, rng=5), engine)
    decision = decide(found, [reference_tag, *directions], expected_directions=directions)
    assert decision.challenge_met and decision.error_code is None
    short = decide(found[:3], [reference_tag, *directions[:2]], expected_directions=directions)
    assert short.error_code == "ChallengeResponseFailed" and "asks for" in short.message


def test_a_challenge_with_a_sample_without_a_face_is_challenge_response_failed(engine: Engine) -> None:
    directions = ["left", "up"]
    found = meshes(facegen.live_sequence(facegen.source_photo("astronaut"), directions, rng=6), engine)
    decision = challenged([found[0], found[1], None], directions)
    assert (decision.live, decision.error_code) == (True, "ChallengeResponseFailed")


# -- photos taken the way BioID's capture page takes them ----------------------------------------


def page_try(engine: Engine, name: str, speed: str, challenge: list[str], seed: int,
             **options: object) -> tuple[LivenessDecision, list[tuple[float, float]]]:
    """A person following BioID's page (tests/facegen/page.py), judged as the server judges the try."""
    person = page.Follower(page.framed_photo(name), page.SPEEDS[speed], np.random.default_rng(seed),
                           **options)  # type: ignore[arg-type]
    capture = page.Page(phase=0.02).capture(person, challenge, start=1.0)
    assert capture.ended == "complete", capture.ended
    found = meshes([p.image for p in capture.photos], engine)
    return challenged(found, challenge), [p.pose for p in capture.photos]


@pytest.mark.parametrize(("name", "challenge"), [
    ("astronaut", ["right", "left", "down"]), ("grace_hopper", ["left", "right", "up"]),
    ("grace_hopper", ["down", "up", "right"]), ("astronaut", ["up", "down", "left"]),
])
def test_a_slow_follower_photographed_mid_turn_is_live_and_follows(engine: Engine, name: str,
                                                                    challenge: list[str]) -> None:
    """The page photographs a user who follows as slowly as its animation 4–6° into each turn;
    one pair of such photos is too little for 3D evidence, the try's most different two are not."""
    decision, poses = page_try(engine, name, "slow", challenge, seed=41)
    steps = [max(abs(b[0] - a[0]), abs(b[1] - a[1])) for a, b in zip(poses, poses[1:], strict=False)]
    assert max(steps) < 9.0, steps  # really taken mid-turn
    assert (decision.error_code, decision.challenge_met) == (None, True), decision.message


def test_a_flat_photo_moved_the_way_the_page_asks_is_not_live(engine: Engine) -> None:
    decision, _ = page_try(engine, "astronaut", "prompt", ["left", "right", "up"], seed=42, flat=True)
    assert decision.error_code == "LiveDetectionFailed", decision.message


@pytest.mark.parametrize(("direction", "first", "second", "followed"), [
    ("down", (-4.0, 0.0), (-0.5, -4.0), True),  # the turned axis comes back to the centre: fine
    ("down", (0.0, 0.0), (3.5, -4.0), True),  # away on the other axis, but less than 4/3 of the asked turn
    ("down", (0.0, 0.0), (6.0, -4.0), False),  # mostly on the other axis
    ("down", (0.0, 0.0), (0.0, -1.5), False),  # too little: a still head reads up to 1.7°
    ("left", (0.0, 0.0), (-3.0, 0.0), False),  # the other way
    ("left", (-5.0, 0.0), (-2.0, 0.5), True),  # back toward the centre from the right is "left"
])
def test_a_direction_is_followed_on_its_axis_relative_to_the_reference(
        direction: str, first: tuple[float, float], second: tuple[float, float], followed: bool) -> None:
    turn = (second[0] - first[0], second[1] - first[1])
    assert direction_followed(direction, turn, first, second, LivenessThresholds()) is followed
