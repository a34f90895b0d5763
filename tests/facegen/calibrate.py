"""Measure the liveness decision on generated sequences: the numbers behind its thresholds.

    .venv/bin/python -m tests.facegen.calibrate [--seeds 10]

For each source photo and step size it renders live head turns (random challenge-like
direction lists), runs them as plain liveness, as the followed challenge, as the opposite
challenge, and flipped (camera-true) with ``mirrored=False``; and it runs every attack kind,
static frames and a change of person. It prints pass/fail counts, the spread of each pair
measure, and the time per frame and per decision. All of it is synthetic (see render.py).
"""

from __future__ import annotations

import argparse
import time
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import cv2
import numpy as np

from bws.faces import FaceMesh
from liveness_service.liveness import LivenessDecision, LivenessThresholds, PairEvidence, decide
from tests.facegen.render import ATTACKS, face_engine, live_sequence, meshes_of, source_photo, static_frames

OPPOSITE = {"left": "right", "right": "left", "up": "down", "down": "up"}
PHOTOS = ("astronaut", "grace_hopper")
STEPS = (8.0, 10.0, 12.0, 15.0)


def challenge_directions(rng: np.random.Generator, count: int = 3) -> list[str]:
    """A random challenge in the gateway's pattern (``gateway.tokens.challenge_sequence``): a
    direction, its opposite, a direction on the other axis, its opposite, ..."""
    axes = (("left", "right"), ("up", "down"))
    axis = int(rng.integers(2))
    directions: list[str] = []
    while len(directions) < count:
        direction = str(rng.choice(axes[axis]))
        directions += [direction, OPPOSITE[direction]]
        axis = 1 - axis
    return directions[:count]


class Timer:
    """Accumulated wall time per named step."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.counts: Counter[str] = Counter()

    @contextmanager
    def __call__(self, name: str, count: int = 1) -> Iterator[None]:
        start = time.perf_counter()
        yield
        self.seconds[name] += time.perf_counter() - start
        self.counts[name] += count

    def report(self) -> str:
        return ", ".join(f"{name} {1000 * self.seconds[name] / self.counts[name]:.1f} ms" for name in self.seconds)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10, help="sequences per photo, step and attack kind")
    parser.add_argument("--first-seed", type=int, default=20_000)
    args = parser.parse_args(argv)
    cv2.setNumThreads(1)  # as one service worker runs
    detector, landmarker = face_engine()
    timer = Timer()
    outcomes: dict[str, Counter[str]] = defaultdict(Counter)
    live_pairs: list[PairEvidence] = []
    attack_pairs: dict[str, list[PairEvidence]] = defaultdict(list)

    def meshes(frames: list[np.ndarray]) -> list[FaceMesh | None]:
        with timer("mesh/frame", len(frames)):
            return meshes_of(frames, detector, landmarker)

    def judge(case: str, found: list[FaceMesh | None], tags: list[str], expected: list[str] | None,
              mirrored: bool = True) -> LivenessDecision:
        with timer("decision"):
            decision = decide(found, tags, expected_directions=expected, mirrored=mirrored)
        outcomes[case][decision.error_code or "passed"] += 1
        return decision

    seed = args.first_seed
    for name in PHOTOS:
        photo = source_photo(name)
        for step in STEPS:
            for _ in range(args.seeds):
                seed += 1
                rng = np.random.default_rng(seed)
                directions = challenge_directions(rng)
                with timer("render/frame", len(directions) + 1):
                    frames = live_sequence(photo, directions, step_deg=step, rng=rng)
                found = meshes(frames)
                flipped = meshes([cv2.flip(frame, 1) for frame in frames])
                tags = ["any", *directions]
                live_pairs.extend(judge(f"live {step:.0f}°", found, ["any"] * len(tags), None).pairs)
                judge(f"challenge followed {step:.0f}°", found, tags, directions)
                judge(f"challenge opposite {step:.0f}°", found, ["any", *map(OPPOSITE.get, directions)],
                      [OPPOSITE[d] for d in directions])
                judge(f"camera-true challenge followed {step:.0f}°", flipped, tags, directions, mirrored=False)
                judge(f"camera-true challenge opposite {step:.0f}°", flipped,
                      ["any", *map(OPPOSITE.get, directions)], [OPPOSITE[d] for d in directions], mirrored=False)
        for kind, attack in ATTACKS.items():
            for _ in range(args.seeds):
                seed += 1
                with timer(f"{kind}/frame", 4):
                    frames = attack(photo, 4, np.random.default_rng(seed))
                attack_pairs[kind].extend(judge(f"attack {kind}", meshes(frames), ["any"] * 4, None).pairs)
        judge("static frames", meshes(static_frames(photo, 3)), ["any"] * 3, None)
    for seed_offset in range(args.seeds):
        mixed = [live_sequence(source_photo(name), ["left"], rng=seed + seed_offset)[i]
                 for i, name in enumerate(PHOTOS)]
        judge("different person", meshes(mixed), ["any", "any"], None)

    print("outcomes (sequences):")
    for case, counts in outcomes.items():
        print(f"  {case:40s} " + ", ".join(f"{code} {n}" for code, n in sorted(counts.items())))
    print(f"live pairs: {len(live_pairs)}, of which live {sum(p.live for p in live_pairs)}")
    for field in ("planarity_residual", "rigid_ratio", "rigid_residual", "face_shift"):
        values = np.array([getattr(p, field) for p in live_pairs])
        print(f"  {field:20s} min {values.min():.4f}  p1 {np.percentile(values, 1):.4f}  "
              f"p99 {np.percentile(values, 99):.4f}  max {values.max():.4f}")
    turns = np.array([max(abs(p.yaw_delta), abs(p.pitch_delta)) for p in live_pairs])
    print(f"  {'turn (head °)':20s} min {turns.min():.2f}  p1 {np.percentile(turns, 1):.2f}")
    thresholds = LivenessThresholds()
    print("attack pairs: count, live, lowest rigid ratio among those above the planarity threshold")
    for kind, pairs in attack_pairs.items():
        planar = [p for p in pairs if p.planarity_residual >= thresholds.min_planarity_residual]
        lowest = min((p.rigid_ratio for p in planar), default=float("nan"))
        print(f"  {kind:15s} {len(pairs):4d} pairs, live {sum(p.live for p in pairs)}, "
              f"{len(planar)} above the planarity threshold, lowest ratio {lowest:.3f}, "
              f"highest turn {max(max(abs(p.yaw_delta), abs(p.pitch_delta)) for p in pairs):.1f}°")
    print("time: " + timer.report())


if __name__ == "__main__":
    main()
