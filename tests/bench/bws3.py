"""The BWS 3 edge against the classic API, for the same work on one stack, in one run.

    make bench-bws3        (or: .venv/bin/python -m tests.bench.bws3)

Per round, alternating so that drift hits both alike: enroll one photo of a new class and
verify one photo against it, through
1. the classic API as its clients call it: token, upload, enroll; token, upload, verify;
2. BWS 3 REST: Enroll (one image), Verify;
3. BWS 3 gRPC: the same two RPCs.
And the same BWS 3 REST enroll with BWS_STORE_THUMBNAILS off (a second stack), for what keeping
thumbnails costs. Then liveness of two images of a turning head: classic
``POST /extension/livedetection`` against BWS 3 LivenessDetection (REST), and PhotoVerify (REST,
two live images and a photo). Prints medians and ratios and writes them to
tests/bench/results/bws3.md.
"""

from __future__ import annotations

import json
import secrets
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from bws.bws3 import bwsmessages_pb2, facerecognition_pb2
from bws.devrun import Stack
from bws.images import to_data_url
from tests import facegen
from tests.support import images
from tests.support.bws3 import Bws3Client, b64
from tests.support.client import BwsClient

RESULTS = Path(__file__).parent / "results" / "bws3.md"
ROUNDS = 20


def ms(function: Callable[[], object]) -> float:
    began = time.perf_counter()
    function()
    return (time.perf_counter() - began) * 1000


def stack(workdir: Path, **env: str) -> Stack:
    return Stack(workdir=workdir, app_id="bench-app", app_secret=secrets.token_urlsafe(18), extra_env=env).start()


def main() -> None:
    photo, probe = images.encode(images.astronaut()), images.encode(images.astronaut(), ".jpg")
    with tempfile.TemporaryDirectory() as folder:
        running = stack(Path(folder) / "a")
        plain = stack(Path(folder) / "b", BWS_STORE_THUMBNAILS="false")
        try:
            classic = BwsClient(running.url, running.app_id, running.app_secret)
            bws3 = Bws3Client(running.url, f"127.0.0.1:{running.grpc_port}", running.app_id, running.client_key)
            bws3_plain = Bws3Client(plain.url, f"127.0.0.1:{plain.grpc_port}", plain.app_id, plain.client_key)
            times: dict[str, list[float]] = {k: [] for k in ("classic", "rest", "grpc", "rest, no thumbnails")}

            def classic_round(class_id: int) -> None:
                for task, image in (("enroll", photo), ("verify", probe)):
                    token = classic.token(bcid=f"bws.1.{class_id}", task=task, livedetection=False)
                    assert classic.upload(token, image).json["Accepted"]
                    assert classic.call(task, token).json["Success"] is True

            def rest_round(client: Bws3Client, class_id: int) -> None:
                assert client.enroll(class_id, photo).json["enrolledImages"] == 1
                assert client.verify(class_id, probe).json["verified"] is True

            def grpc_round(class_id: int) -> None:
                enrolled, _ = bws3.grpc("Enroll", facerecognition_pb2.FaceEnrollmentRequest(
                    classId=class_id, images=[bwsmessages_pb2.ImageData(image=photo)]))
                verified, _ = bws3.grpc("Verify", facerecognition_pb2.FaceVerificationRequest(
                    classId=class_id, image=bwsmessages_pb2.ImageData(image=probe)))
                assert enrolled.enrolled_images == 1 and verified.verified

            turn = [images.encode(f) for f in facegen.live_sequence(
                facegen.source_photo("astronaut"), ["left"], rng=np.random.default_rng(7))]
            pair = {"liveImages": [{"image": b64(turn[0])}, {"image": b64(turn[1])}]}
            classic_pair = json.dumps({f"liveimage{i + 1}": to_data_url(frame)
                                       for i, frame in enumerate(turn)}).encode()
            liveness: dict[str, list[float]] = {k: [] for k in ("classic livedetection", "BWS 3 LivenessDetection",
                                                                "BWS 3 PhotoVerify")}

            def classic_liveness() -> None:
                assert classic.basic_call("POST", "/extension/livedetection", classic_pair).json is True

            def bws3_liveness() -> None:
                assert bws3.rest("POST", "/api/v1/livenessdetection", pair).json["live"] is True

            def bws3_photo() -> None:
                body = bws3.rest("POST", "/api/v1/photoverify", {**pair, "photo": b64(photo)}).json
                assert body["live"] is True and body["verificationLevel"] != "NOT_RECOGNIZED"

            for warm in range(2):  # models and connections warm
                classic_round(10_000 + warm)
                rest_round(bws3, 10_100 + warm)
                grpc_round(10_200 + warm)
                rest_round(bws3_plain, 10_300 + warm)
            for n in range(ROUNDS):
                times["classic"].append(ms(lambda: classic_round(20_000 + n)))  # noqa: B023
                times["rest"].append(ms(lambda: rest_round(bws3, 30_000 + n)))  # noqa: B023
                times["grpc"].append(ms(lambda: grpc_round(40_000 + n)))  # noqa: B023
                times["rest, no thumbnails"].append(ms(lambda: rest_round(bws3_plain, 50_000 + n)))  # noqa: B023
            for function in (classic_liveness, bws3_liveness, bws3_photo):
                function()  # warm
            for _ in range(ROUNDS):
                liveness["classic livedetection"].append(ms(classic_liveness))
                liveness["BWS 3 LivenessDetection"].append(ms(bws3_liveness))
                liveness["BWS 3 PhotoVerify"].append(ms(bws3_photo))
        finally:
            running.stop()
            plain.stop()
    base = statistics.median(times["classic"])
    lines = ["# BWS 3 edge against the classic API (make bench-bws3)", "",
             f"Enroll one photo of a new class, then verify one photo; {ROUNDS} rounds each, interleaved, "
             "medians (ms).", "",
             "| path | median ms | vs classic |", "| --- | ---: | ---: |"]
    for name, values in times.items():
        median = statistics.median(values)
        lines.append(f"| {name} | {median:.1f} | {median / base:.2f} |")
    base = statistics.median(liveness["classic livedetection"])
    lines += ["", "Liveness of two images of a turning head (PhotoVerify: the same two and an ID photo); "
              f"{ROUNDS} rounds each, interleaved, medians (ms).", "",
              "| call | median ms | vs classic livedetection |", "| --- | ---: | ---: |"]
    for name, values in liveness.items():
        median = statistics.median(values)
        lines.append(f"| {name} | {median:.1f} | {median / base:.2f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    RESULTS.write_text(text)


if __name__ == "__main__":
    main()
