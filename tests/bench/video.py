"""Video liveness benchmark: APCER per attack kind, BPCER and time per video of BWS 3
VideoLivenessDetection's decision, on generated videos, in one run.

    make bench-video        (or: .venv/bin/python -m tests.bench.video [--per-kind 20])

Each video is 16 frames at 8 fps, encoded as MP4 (MPEG-4 Part 2) and judged by the liveness
service's own code (``liveness_service/video.py`` sampling, the upload inspection, the motion
decision at the shipped thresholds), in this process:

* **bona fide**: a head rendered from both source photos (tests/facegen) turning from one side
  to the other by 16–36° in all, with a random nod, camera noise on every frame;
* **attacks**: every kind in ``facegen.ATTACKS`` (prints moved, tilted, rescaled, blurred, bent,
  screen replays), 16 frames each.

Seeds 3,000,001 on by default: disjoint from the thresholds' tuning seeds, the tests', and the
seeds 2,000,001–2,000,560 on which the number of frames the decision judges was chosen. All synthetic:
a replayed video of a real person, or a 3D mask, passes the motion test by design. Writes
tests/bench/results/video.md.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from bws.faces import FaceDetector, FaceLandmarker
from bws.settings import LivenessThresholds
from liveness_service import video
from tests.facegen.render import ATTACKS, camera, face_engine, rig_for, source_photo

RESULTS = Path(__file__).parent / "results" / "video.md"
PHOTOS = ("astronaut", "grace_hopper")
FRAMES, FPS = 16, 8


def encode(frames: list[np.ndarray]) -> bytes:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "v.mp4"
        height, width = frames[0].shape[:2]
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), FPS, (width, height))
        for frame in frames:
            writer.write(frame)
        writer.release()
        return path.read_bytes()


def live_video(photo: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
    rig = rig_for(photo)
    half = rng.uniform(8, 18)
    side = rng.choice([-1.0, 1.0])
    yaws = side * np.linspace(-half, half, FRAMES)
    pitches = rng.uniform(-4, 4) * np.sin(np.linspace(0, np.pi, FRAMES))
    return [camera(rig.render(yaw, pitch, shift=tuple(rng.uniform(-3, 3, 2))), rng)
            for yaw, pitch in zip(yaws, pitches, strict=True)]


def judge(data: bytes, detector: FaceDetector, landmarker: FaceLandmarker) -> bool:
    """The liveness service's own video path on one video, at the shipped thresholds."""
    seen = video.judge(data, detector, landmarker, min_face_size=40, mirrored=True, thresholds=LivenessThresholds())
    return seen.decision is not None and seen.decision.live


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--per-kind", type=int, default=20, help="videos per kind and photo")
    parser.add_argument("--decided", type=int, default=video.DECIDED_FRAMES, help="frames the decision sees")
    parser.add_argument("--first-seed", type=int, default=3_000_000, help="seeds count up from this + 1")
    args = parser.parse_args()
    video.DECIDED_FRAMES = args.decided
    cv2.setNumThreads(1)
    detector, landmarker = face_engine()
    seed = args.first_seed
    outcomes: dict[str, list[bool]] = {}
    times: list[float] = []
    for name in PHOTOS:
        photo = source_photo(name)
        for kind in ("bona fide", *ATTACKS):
            for _ in range(args.per_kind):
                seed += 1
                rng = np.random.default_rng(seed)
                frames = live_video(photo, rng) if kind == "bona fide" else ATTACKS[kind](photo, FRAMES, rng)
                data = encode(frames)
                began = time.perf_counter()
                live = judge(data, detector, landmarker)
                times.append((time.perf_counter() - began) * 1000)
                outcomes.setdefault(kind, []).append(live)
    bona_fide = outcomes.pop("bona fide")
    lines = ["# Video liveness (make bench-video)", "",
             f"{FRAMES}-frame MP4 videos at {FPS} fps, {args.per_kind} per kind and source photo "
             f"({len(PHOTOS)} photos); 12 frames sampled per video; shipped thresholds.", "",
             "| set | videos | judged live | rate |", "| --- | ---: | ---: | ---: |",
             f"| bona fide (BPCER = rejected) | {len(bona_fide)} | {sum(bona_fide)} | "
             f"BPCER {1 - sum(bona_fide) / len(bona_fide):.1%} |"]
    for kind, results in outcomes.items():
        lines.append(f"| attack: {kind} | {len(results)} | {sum(results)} | APCER {sum(results) / len(results):.1%} |")
    lines += ["", f"Time per video (decode, sample, inspect and mesh 12 frames, decide; one thread): median "
              f"{statistics.median(times):.0f} ms, max {max(times):.0f} ms."]
    text = "\n".join(lines) + "\n"
    print(text)
    RESULTS.write_text(text)


if __name__ == "__main__":
    main()
