"""BWS tokens: BCIDs, the task bit flags, issuing and checking the JWT.

Clients decode the token's payload without verifying it, so its claims follow the BWS
contract exactly (``task`` and ``traits`` as integer flags, ``challenge`` as a JSON string).
The gateway signs with HS256 only and checks signature, expiry, not-before, audience and
issuer on every call.
"""

from __future__ import annotations

import json
import secrets
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import jwt

from bws.bcid import Bcid

ALGORITHM = "HS256"

TASK_VERIFY = 0x00
TASK_IDENTIFY = 0x10
TASK_ENROLL = 0x20
TASK_LIVENESS_ONLY = 0x80
TASK_MASK = 0xF0
FLAG_LIVEDETECTION = 0x100
FLAG_CHALLENGE = 0x200
FLAG_AUTOENROLL = 0x1000
MAXTRIES_MASK = 0x0F
DEFAULT_MAXTRIES = 3

TASKS = {
    "verify": TASK_VERIFY,
    "identify": TASK_IDENTIFY,
    "enroll": TASK_ENROLL,
    "livenessdetection": TASK_LIVENESS_ONLY,
}
TRAITS = {"face": 1, "periocular": 2}



class TokenInvalid(Exception):
    """The token is missing, malformed, forged or expired (HTTP 401)."""


@dataclass(frozen=True)
class TokenRequest:
    """What the token endpoint was asked for (already validated)."""

    app_id: str
    bcid: Bcid | None
    task: int  # one of TASKS' values
    livedetection: bool
    challenge: bool
    challenges: int  # directions per try, 2..7
    maxtries: int  # 1..15
    autoenroll: bool
    traits: int


@dataclass(frozen=True)
class Token:
    """A verified token's claims."""

    token_id: str  # jti
    app_id: str  # sub
    bcid: Bcid | None
    task: int  # the full bit flags
    traits: int
    challenge: tuple[tuple[str, ...], ...]  # one direction sequence per try; () without challenge
    expires: int

    @property
    def kind(self) -> int:
        return self.task & TASK_MASK

    @property
    def maxtries(self) -> int:
        return self.task & MAXTRIES_MASK or DEFAULT_MAXTRIES

    @property
    def requires_liveness(self) -> bool:
        return bool(self.task & FLAG_LIVEDETECTION)

    @property
    def autoenroll(self) -> bool:
        return bool(self.task & FLAG_AUTOENROLL)

    def challenge_for_try(self, earlier: Sequence[Sequence[str]], tags: Sequence[str]) -> tuple[str, ...]:
        """The direction sequence a try is judged against, () when the token has no challenge.

        ``tags`` are the try's sample tags in upload order; ``earlier`` those of the token's
        earlier tries. See :func:`assign_challenges`: the sequence the tags follow among those
        no earlier try was judged against. When they follow none, the first sequence not yet
        used (or the last one), which the tags then fail: ChallengeResponseFailed.
        """
        if not self.challenge or not self.task & FLAG_CHALLENGE:
            return ()
        assigned = assign_challenges(self.challenge, [*earlier, tags])
        if assigned[-1] is not None:
            return self.challenge[assigned[-1]]
        used = set(assigned)
        return next((s for i, s in enumerate(self.challenge) if i not in used), self.challenge[-1])


OPPOSITE = {"up": "down", "down": "up", "left": "right", "right": "left"}
AXES = (("left", "right"), ("up", "down"))


def challenge_sequence(count: int) -> list[str]:
    """A random challenge in the pattern BioID's capture page and clients use: a direction, its
    opposite, a direction on the other axis, its opposite, ... (``left, right, down, up, ...``).

    The page animates the opposite of the last direction only back to the centre, so a user can
    follow this pattern; after ``A, opposite(A)`` a third ``A`` would not move its blue head at
    all. Which direction comes first, and each change of axis's direction, are random.
    """
    axis = secrets.randbelow(2)
    sequence: list[str] = []
    while len(sequence) < count:
        direction = secrets.choice(AXES[axis])
        sequence += [direction, OPPOSITE[direction]]
        axis = 1 - axis
    return sequence[:count]


def assign_challenges(sequences: Sequence[Sequence[str]], tries: Sequence[Sequence[str]]) -> list[int | None]:
    """For each try of a token, in order, the index of the challenge sequence it is judged against.

    A try's first sample is its reference photo, whatever its tag: BioID's page never resets its
    tag between tries, so a retry's first photo carries the last direction of the try before.
    The directions of the other samples pick the first sequence not used by an earlier try that
    starts with them (all of it, or the start of it when the page gave up early after a refused
    photo; such a try does not meet its challenge, but uses it up). That page also moves on to
    its next challenge without a server call when a try's first photo is refused, so the tags,
    not the number of server calls, say which sequence a try shows. None: the tags follow no
    unused sequence (the try fails its challenge and uses none).
    """
    used: set[int] = set()
    assigned: list[int | None] = []
    for tags in tries:
        shown = list(tags[1:])
        match = next((i for i, sequence in enumerate(sequences)
                      if i not in used and list(sequence[:len(shown)]) == shown), None)
        if match is not None:
            used.add(match)
        assigned.append(match)
    return assigned


def task_flags(request: TokenRequest) -> int:
    flags = request.task | (request.maxtries & MAXTRIES_MASK)
    if request.livedetection or request.challenge:
        flags |= FLAG_LIVEDETECTION  # a challenge is only meaningful with liveness
    if request.challenge:
        flags |= FLAG_CHALLENGE
    if request.autoenroll:
        flags |= FLAG_AUTOENROLL
    return flags


def issue(request: TokenRequest, *, secret: str, audience: str, lifetime: int) -> str:
    now = int(time.time())
    claims: dict[str, object] = {
        "iss": audience,
        "sub": request.app_id,
        "aud": audience,
        "iat": now,
        "nbf": now,
        "exp": now + lifetime,
        "jti": uuid.uuid4().hex,
        "task": task_flags(request),
        "traits": request.traits,
    }
    if request.bcid is not None:
        claims["bcid"] = str(request.bcid)
    if request.challenge:
        sequences = [challenge_sequence(request.challenges) for _ in range(request.maxtries)]
        claims["challenge"] = json.dumps(sequences)
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def verify(token: str, *, secret: str, audience: str) -> Token:
    """Check a token and return its claims; TokenInvalid with a reason otherwise."""
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            audience=audience,
            issuer=audience,
            leeway=5,
            options={"require": ["exp", "iat", "nbf", "aud", "iss", "sub", "jti", "task"]},
        )
    except jwt.ExpiredSignatureError:
        raise TokenInvalid("The BWS token has expired.") from None
    except jwt.PyJWTError:
        raise TokenInvalid("The BWS token is invalid.") from None
    try:
        bcid = Bcid.parse(claims["bcid"]) if "bcid" in claims else None
        challenge = tuple(tuple(str(d) for d in seq) for seq in json.loads(claims.get("challenge", "[]")))
        return Token(
            token_id=str(claims["jti"]),
            app_id=str(claims["sub"]),
            bcid=bcid,
            task=int(claims["task"]),
            traits=int(claims.get("traits", 1)),
            challenge=challenge,
            expires=int(claims["exp"]),
        )
    except (ValueError, TypeError):
        raise TokenInvalid("The BWS token is invalid.") from None
