"""BioID's hosted capture page with a head-movement challenge, and people who follow it, replayed
offline: which photos the page takes, when, and with which tags.

The page's capture logic is reproduced from ``shared/docs/bioid-capture-page.md`` (BioID's
``bws.capture.js`` and ``uui.php``, read line by line there); the browser tests run the same logic
as JavaScript (``tests/browser/bioidpage/``), and both take the same photos from the same frames
up to the phase of the page's 50 ms timer:

* every 50 ms the page copies the camera's mirrored 3:4 centre crop (360×480 of 640×480); the
  first tick after START uploads at once; later ticks compare a 120×160 green-plane picture of
  the crop's centre 3/4 with a template (the centre ¼ × ⅜) of the last uploaded one, by a
  cross-correlation without mean removal, and upload when the best match moved more than
  ``threshold`` % (25 on desktop) of the largest shift it can measure: about 11 px of the video;
* after each upload it shows the next direction and pauses 1 s; it never resets its tag, so a
  retry's first photo carries the previous try's last direction; a refused first photo starts
  the next try (with the next challenge) without a server call; a try is given up 30 s after START.

The people are rendered heads (``FaceRig``) turning about a neck-like pivot (``neck_pivot``):

* **prompt**: reacts in 0.25 s and turns in 0.5 s to where the page's blue head is going
  (14.3° sideways, 11.5° up or down, or back to the centre);
* **slow**: reacts in 0.35 s and then turns exactly as slowly as the blue head does (it
  accelerates: 8.6° after 1 s), which is what the page's failure text asks for ("Slowly follow
  the head's movement"); on a change of axis the turned axis comes back to the centre in 0.8 s.

When the page asks "Please move your head" (5 s without a photo), either turns 5° further the
way the blue head last went: a slow person photographed mid-turn who then comes back to the
centre may not have moved far enough from that photo for the page's trigger.

A flat photo moved the same way by an attacker (turned about its own axes, 20° sideways) is the
control. Angles are head degrees in the render convention: yaw > 0 turns the face toward the
upload's left edge (BWS "left" of a mirrored upload), pitch > 0 up.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import cv2
import numpy as np
from skimage import data

from tests.facegen.render import (
    FRAME_HEIGHT,
    FRAME_WIDTH,
    _face_centre,
    _flat_view,
    _frame_from,
    camera,
    rig_for,
    source_photo,
)

OPPOSITE = {"left": "right", "right": "left", "up": "down", "down": "up"}
AXIS = {"left": 0, "right": 0, "up": 1, "down": 1}  # 0: yaw, 1: pitch
SIGN = {"left": 1.0, "right": -1.0, "up": 1.0, "down": -1.0}

# -- the page (bws.capture.js, uui.php) -------------------------------------------------------
TICK_S = 0.05  # processFrame every 50 ms
PAUSE_S = 1.0  # no capture for 1 s after each upload (setTag)
TRY_LIMIT_S = 30.0  # the activity timer: a try is given up 30 s after START
DESKTOP_THRESHOLD = 25.0  # % of the largest measurable shift; 50 when the user agent says "mobi"
CROP_X = ((FRAME_WIDTH - FRAME_HEIGHT * 3 // 4) // 2, (FRAME_WIDTH + FRAME_HEIGHT * 3 // 4) // 2)  # 140..500
MOTION_SIZE = (120, 160)  # width, height of the motion picture
# The blue head: up to 0.25 rad sideways and 0.20 rad up/down; each 60 Hz frame adds 5e-6 rad per
# ms since the cue, so the angle grows as 1.5e-7 rad/ms² × t² (8.6° after 1 s).
YAW_LIMIT = math.degrees(0.25)
PITCH_LIMIT = math.degrees(0.20)
ANIMATION_DEG_PER_S2 = math.degrees(1.5e-7) * 1e6
FPS = 15  # the fake camera's frame rate (tests/browser)
NO_MOVEMENT_S = 5.0  # "Please move your head" after 5 s without a photo, and every 5 s after
NUDGE_DEG = 5.0  # how much further a person then turns
PRINT_PIVOT_PX = 150.0  # an attacker turns a print about a point this far behind it


def motion_picture(upload: np.ndarray) -> np.ndarray:
    """The page's motion picture of an upload: the centre 3/4 scaled to 120×160, green plane."""
    height, width = upload.shape[:2]
    inner = upload[height // 8:height - height // 8, width // 8:width - width // 8]
    return cv2.resize(inner, MOTION_SIZE, interpolation=cv2.INTER_AREA)[:, :, 1].astype(np.float32)


class MotionTemplate:
    """The centre of the last uploaded motion picture, and the page's movement measure against it."""

    def __init__(self, picture: np.ndarray) -> None:
        height, width = picture.shape
        self.width, self.height = width // 4, height // 4 + height // 8  # 30 × 60
        self.x, self.y = width // 2 - self.width // 2, height // 2 - self.height // 2  # 45, 50
        self.search = (width // 4, height // 4)  # ±30, ±40 around the centre
        self.patch = picture[self.y:self.y + self.height, self.x:self.x + self.width].copy()
        self.ones = np.ones_like(self.patch)
        largest = (self.search[0] - self.width / 2, self.search[1] - self.height / 2)
        self.largest_shift = math.hypot(*largest)

    def movement(self, picture: np.ndarray) -> float:
        """How far the template moved, in % of the largest shift: (Σ T·I)² / Σ I² is maximised over
        the search window, first maximum in row order, as the page's loops find it."""
        height, width = picture.shape
        left, top = width // 2 - self.search[0], height // 2 - self.search[1]
        region = picture[top:height // 2 + self.search[1], left:width // 2 + self.search[0]]
        product = cv2.matchTemplate(region, self.patch, cv2.TM_CCORR).astype(np.float64)
        energy = cv2.matchTemplate(region * region, self.ones, cv2.TM_CCORR).astype(np.float64)
        score = np.where(energy > 0, product * product / np.maximum(energy, 1e-9), 0.0)
        row, column = np.unravel_index(int(np.argmax(score)), score.shape)
        shift = math.hypot(left + column - self.x, top + row - self.y)
        return min(100.0, 100.0 * shift / self.largest_shift)


@functools.cache
def framed_photo(name: str) -> np.ndarray:
    """A source photo framed as the page asks ("position your face within the blue head"): the
    face at the centre of the page's crop, eyes 85–105 px apart (read-only, cached).

    ``astronaut`` is brought closer than :func:`source_photo` has it (2× instead of 1.5×), since
    there its face sits high in the frame, over the page's motion template only with the chin;
    ``grace_hopper`` is framed so already.
    """
    if name != "astronaut":
        return source_photo(name)
    frame = _frame_from(cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR), 2.0, (223, 120))
    frame.setflags(write=False)
    return frame


# -- the people ----------------------------------------------------------------------------------


def _min_jerk(fraction: float) -> float:
    f = min(1.0, max(0.0, fraction))
    return f * f * f * (10 - 15 * f + 6 * f * f)


@dataclass(frozen=True)
class Speed:
    """How a person follows the blue head."""

    name: str
    reaction_s: float
    tracks_animation: bool  # turn as slowly as the blue head (accelerating), not in one quick turn
    turn_s: float  # a quick turn's duration; for the slow one, how long the other axis takes back
    amplitude: float = 1.0  # of the blue head's angles


PROMPT = Speed("prompt", reaction_s=0.25, tracks_animation=False, turn_s=0.5)
SLOW = Speed("slow", reaction_s=0.35, tracks_animation=True, turn_s=0.8)
SPEEDS = {speed.name: speed for speed in (PROMPT, SLOW)}


@dataclass
class _Move:
    start: float  # s, when the head starts moving (cue + reaction)
    origin: tuple[float, float]
    target: tuple[float, float]
    axis: int | None  # the cued axis (None: back to the rest pose)


@dataclass
class Follower:
    """A person (or a printed photo of one) in front of the camera, following the page's cues.

    ``frame(t)`` is the camera frame at time ``t`` (s): the mirror image of the render, as a
    camera sees the person the upload shows mirrored. ``absent_until``: before it, nobody is in
    the picture (an empty room).
    """

    photo: np.ndarray
    speed: Speed = PROMPT
    rng: np.random.Generator = field(default_factory=lambda: np.random.default_rng(0))
    flat: bool = False  # a printed photo turned about its own axes instead of a head
    contrary: bool = False  # turns the other way than the blue head (a try that must fail)
    absent_until: float = -math.inf
    noise: bool = True

    def __post_init__(self) -> None:
        self.rig = rig_for(self.photo)
        self.pivot = self.rig.neck_pivot
        self.print_centre = _face_centre(self.photo)
        rest = self.rng.normal(0.0, 1.0, 2) if self.noise else np.zeros(2)
        self.rest = (float(rest[0]), float(rest[1]))  # nobody looks exactly straight ahead
        self.moves: list[_Move] = []
        self.cues: list[tuple[float, str]] = []
        self._frames: dict[tuple[float, float], np.ndarray] = {}
        self.limits = (YAW_LIMIT * self.speed.amplitude, PITCH_LIMIT * self.speed.amplitude)
        if self.flat:
            self.limits = (20.0, 16.0)  # an attacker turns the print further than a head

    # -- the cues ---------------------------------------------------------------------------
    def reset(self, t: float) -> None:
        """The page starts a try: the blue head is centred and the person looks at it."""
        self.cues.append((t, ""))
        self.moves.append(_Move(t, self.pose(t), self.rest, None))

    def cue(self, t: float, tag: str, parent: str) -> None:
        """The page shows ``tag`` at ``t`` (``parent``: the tag it showed before, "" at a try's start)."""
        self.cues.append((t, tag))
        start = t + self.speed.reaction_s
        origin = self.pose(start)
        if self.contrary:
            tag, parent = OPPOSITE[tag], OPPOSITE.get(parent, parent)
        axis = AXIS[tag]
        target = [0.0, 0.0]
        if parent != OPPOSITE[tag]:  # the opposite of the last direction only goes back to the centre
            target[axis] = SIGN[tag] * self.limits[axis]
        self.moves.append(_Move(start, origin, (target[0], target[1]), axis))

    def nudge(self, t: float, tag: str) -> None:
        """The page says "Please move your head" (5 s without a photo): the person turns 5° further
        the way the blue head last went (past the centre, when it went back there)."""
        if not tag or tag == "any":
            return
        start = t + self.speed.reaction_s
        origin = self.pose(start)
        axis = AXIS[tag]
        target = list(origin)
        target[axis] += SIGN[tag] * NUDGE_DEG
        self.moves.append(_Move(start, origin, (target[0], target[1]), None))

    # -- where the head is ------------------------------------------------------------------
    def pose(self, t: float) -> tuple[float, float]:
        """(yaw, pitch) in head degrees at ``t``, from the last move that started by then."""
        started = [m for m in self.moves if m.start <= t]
        if not started:
            return self.rest
        move = started[-1]
        elapsed = t - move.start
        out = []
        for axis in (0, 1):
            a, b = move.origin[axis], move.target[axis]
            if self.speed.tracks_animation and move.axis == axis:
                travelled = ANIMATION_DEG_PER_S2 * elapsed * elapsed
                out.append(b if travelled >= abs(b - a) else a + math.copysign(travelled, b - a))
            else:
                out.append(a + (b - a) * _min_jerk(elapsed / self.speed.turn_s))
        return out[0], out[1]

    def frame(self, t: float) -> np.ndarray:
        """The camera frame shown at ``t`` (the frame of the 15 fps camera that is current then)."""
        shown = math.floor(t * FPS + 1e-9) / FPS
        if shown < self.absent_until:
            room = np.full((FRAME_HEIGHT, FRAME_WIDTH, 3), 96, np.uint8)
            return camera(room, self.rng) if self.noise else room
        yaw, pitch = (round(v, 2) for v in self.pose(shown))
        key = (yaw, pitch)
        if key not in self._frames:
            if self.flat:  # turned in the hand, about a point behind the print as a head on its neck
                shift = (-PRINT_PIVOT_PX * math.sin(math.radians(yaw)), -PRINT_PIVOT_PX * math.sin(math.radians(pitch)))
                view = _flat_view(self.photo, self.print_centre, yaw, pitch, 1.0, shift)
            else:
                view = self.rig.render(yaw, pitch, pivot=self.pivot)
            self._frames[key] = cv2.flip(view, 1)  # the camera sees the mirror image of the upload
            if len(self._frames) > 512:
                self._frames.pop(next(iter(self._frames)))
        frame = self._frames[key]
        return camera(frame, self.rng) if self.noise else frame.copy()


# -- the page's capture, replayed --------------------------------------------------------------


@dataclass
class Photo:
    """One upload: when (s since the page opened), its tag, the uploaded picture, the true pose."""

    time: float
    tag: str
    image: np.ndarray  # the mirrored 360×480 crop, as uploaded
    pose: tuple[float, float]
    accepted: bool = True


@dataclass
class Capture:
    """One try of the page: its photos, and how it ended."""

    challenge: list[str]
    photos: list[Photo]
    ended: str  # "complete", "refused-first" (retry, no server call), "refused-later", "timeout"
    nudges: int = 0  # how often the page said "Please move your head"

    @property
    def accepted(self) -> list[Photo]:
        return [p for p in self.photos if p.accepted]

    @property
    def tags(self) -> list[str]:
        return [p.tag for p in self.accepted]


@dataclass
class Page:
    """The page's state across tries: its tag is never reset (bws.capture.js)."""

    threshold: float = DESKTOP_THRESHOLD
    tag: str = "any"
    phase: float = 0.0  # where the 50 ms timer ticks relative to START

    def capture(self, person: Follower, challenge: list[str], start: float,
                accept: Callable[[np.ndarray], bool] = lambda image: True) -> Capture:
        """One try from START at ``start``: the photos the page takes of ``person``.

        ``accept(image)`` stands for the server's answer to the upload (False: NoFaceFound).
        """
        person.reset(start)
        recordings = len(challenge) + 1
        photos: list[Photo] = []
        template: MotionTemplate | None = None
        resume = start
        shown = ""  # the blue head's current tag ("" after the reset)
        tick = start + self.phase
        nudged = start
        nudges = 0
        while tick - start <= TRY_LIMIT_S:
            tick += TICK_S
            if tick - max(nudged, photos[-1].time if photos else start) >= NO_MOVEMENT_S:
                person.nudge(tick, shown)
                nudged = tick
                nudges += 1
            if tick < resume:
                continue
            upload = cv2.flip(person.frame(tick), 1)[:, CROP_X[0]:CROP_X[1]]
            picture = motion_picture(upload)
            if template is not None and template.movement(picture) <= self.threshold:
                continue
            photo = Photo(tick, self.tag, upload, person.pose(tick), accepted=accept(upload))
            photos.append(photo)
            template = MotionTemplate(picture)
            if len(photos) < recordings:
                self.tag = challenge[len(photos) - 1]
                person.cue(tick, self.tag, shown)
                shown = self.tag
                resume = tick + PAUSE_S
            if not photo.accepted:
                return Capture(challenge, photos, "refused-first" if len(photos) == 1 else "refused-later", nudges)
            if len(photos) == recordings:
                return Capture(challenge, photos, "complete", nudges)
        return Capture(challenge, photos, "timeout", nudges)


@dataclass(frozen=True)
class PlannedTry:
    """A try the person makes: whether they turn the other way, and how long after the previous
    try (its last photo; or the page's opening) they press START."""

    after_s: float = 5.0
    contrary: bool = False


def session(page: Page, person: Follower, challenges: list[list[str]], tries: list[PlannedTry],
            accept: Callable[[np.ndarray], bool] = lambda image: True) -> list[Capture]:
    """The page's tries as planned: try k shows ``challenges[k]`` (the page moves on to the next
    challenge after every try, also one whose first photo was refused)."""
    captures: list[Capture] = []
    moment = 0.0
    for number, planned in enumerate(tries):
        person.contrary = planned.contrary
        capture = page.capture(person, challenges[number], moment + planned.after_s, accept)
        captures.append(capture)
        moment = capture.photos[-1].time if capture.photos else moment + planned.after_s + TRY_LIMIT_S
    return captures
