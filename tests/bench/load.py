"""Load benchmark: the full HTTP path against the face engine's own cost, scaling and overload.

    make bench-load        (or: .venv/bin/python -m tests.bench.load)

All in one run, on loopback, with the real processes (SeaweedFS, both services, gateway):

1. bare engine: decode + detect + landmarks + align + embed for the exact images of one
   enrollment, called in-process (the work no server can avoid);
2. full path for the same images: token, uploads, enroll with liveness on, over HTTP;
3. concurrency 1, 2, 4, 8, 16 clients: throughput and p50/p95/p99 latency;
4. overload: a burst of 10× what the machine serves at once against small queues — every
   request answered, refused ones fast with ExecutionOfJobTimedOut, no samples left behind,
   no try burned by a refused call;
5. peak RSS of every process.

Prints ratios measured side by side and writes them to tests/bench/results/load.md. Absolute
times drift on a shared machine; the ratios are what to compare.
"""

from __future__ import annotations

import os
import secrets
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np

from bws import images
from bws.devrun import Stack
from bws.faces import FaceDetector, FaceEmbedder, FaceLandmarker, align_face
from bws.settings import StorageSettings
from bws.storage import ObjectStore
from tests import facegen
from tests.support.client import BwsClient, claims_of

RESULTS = Path(__file__).parent / "results" / "load.md"
LEVELS = (1, 2, 4, 8, 16)


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def enrollment_frames() -> list[bytes]:
    photo = facegen.source_photo("astronaut")
    frames = facegen.live_sequence(photo, ["left", "right"], rng=np.random.default_rng(7))
    return [cv2.imencode(".png", f)[1].tobytes() for f in frames]


class BareEngine:
    """The engine alone, in this process: the models loaded once, as the services do."""

    def __init__(self, frames: list[bytes]) -> None:
        cv2.setNumThreads(1)
        self.frames = frames
        self.detector, self.landmarker, self.embedder = FaceDetector(), FaceLandmarker(), FaceEmbedder()
        self.enrollment()  # warm-up

    def enrollment(self) -> None:
        for data in self.frames:
            image = images.decode(data)
            face = self.detector.detect(image)[0]
            self.landmarker.mesh(image, face)
            self.embedder.embed_aligned(align_face(image, face))

    def timed_ms(self) -> float:
        began = time.perf_counter()
        self.enrollment()
        return (time.perf_counter() - began) * 1000

    def close(self) -> None:
        self.landmarker.close()


def enroll_once(client: BwsClient, frames: list[bytes]) -> tuple[float, dict]:
    """One whole enrollment over HTTP: token, uploads, enroll with liveness. Returns ms and the reply."""
    began = time.perf_counter()
    token = client.token(bcid=f"bws.1.{secrets.randbelow(10**9)}", task="enroll", livedetection=True)
    for index, data in enumerate(frames):
        reply = client.upload(token, data, index=index)
        if reply.status != 200:
            return (time.perf_counter() - began) * 1000, {"upload": reply.status}
    reply = client.enroll(token)
    elapsed = (time.perf_counter() - began) * 1000
    return elapsed, reply.json if reply.status == 200 else {"status": reply.status}


def run_clients(count: int, work: Callable[[], tuple[float, dict]], per_client: int) -> tuple[float, list]:
    results: list[tuple[float, dict]] = []
    lock = threading.Lock()

    def client_loop() -> None:
        for _ in range(per_client):
            outcome = work()
            with lock:
                results.append(outcome)

    began = time.perf_counter()
    with ThreadPoolExecutor(count) as pool:
        for future in [pool.submit(client_loop) for _ in range(count)]:
            future.result()
    return time.perf_counter() - began, results


def peak_rss_mb(stack: Stack) -> dict[str, float]:
    peaks = {}
    for name, process in stack.processes.items():
        try:
            status = Path(f"/proc/{process.pid}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                peaks[name] = int(line.split()[1]) / 1024
    return peaks


def main() -> None:
    lines: list[str] = []

    def report(text: str = "") -> None:
        print(text, flush=True)
        lines.append(text)

    frames = enrollment_frames()
    workdir = Path(tempfile.mkdtemp(prefix="bws-bench-"))
    stack = Stack(workdir=workdir / "main", app_id="bench", app_secret=secrets.token_urlsafe(18)).start()
    try:
        client = BwsClient(stack.url, stack.app_id, stack.app_secret)
        enroll_once(client, frames)  # warm-up: connections, caches
        # 1 + 2: bare engine and full path, interleaved so that drift hits both alike.
        engine = BareEngine(frames)
        bare, full = [], []
        for _ in range(8):
            bare.append(engine.timed_ms())
            elapsed, reply = enroll_once(client, frames)
            assert reply == {"Success": True}, reply
            full.append(elapsed)
        engine.close()
        bare_ms, full_ms = statistics.median(bare), statistics.median(full)
        limit = os.environ.get("BWS_MAX_CONCURRENT_CALLS", "the default")
        report(f"# Load benchmark ({os.cpu_count()} cores, {len(frames)} images per enrollment, liveness on, "
               f"BWS_MAX_CONCURRENT_CALLS {limit})")
        report()
        report(f"bare engine per enrollment (decode+detect+landmarks+align+embed, in-process): {bare_ms:.1f} ms")
        report(f"full path per enrollment (token+uploads+enroll over HTTP, concurrency 1): {full_ms:.1f} ms")
        report(f"**ratio full path / bare engine: {full_ms / bare_ms:.2f}** (goal <= 1.25)")
        report()
        # 3: scaling
        report("| clients | enrollments/s | p50 ms | p95 ms | p99 ms | failures |")
        report("| ---: | ---: | ---: | ---: | ---: | ---: |")
        throughput = {}
        for level in LEVELS:
            per_client = max(2, 16 // level)
            seconds, results = run_clients(level, lambda: enroll_once(client, frames), per_client)
            ok = [ms for ms, reply in results if reply == {"Success": True}]
            throughput[level] = len(ok) / seconds
            report(f"| {level} | {throughput[level]:.2f} | {percentile(ok, 50):.0f} | {percentile(ok, 95):.0f} | "
                   f"{percentile(ok, 99):.0f} | {len(results) - len(ok)} |")
        best = max(throughput, key=lambda k: throughput[k])
        report()
        report(f"**throughput at the best concurrency ({best}) / concurrency 1: "
               f"{throughput[best] / throughput[1]:.2f}x** (goal >= 1.7x)")
        report()
        report("peak RSS (MB): " + ", ".join(f"{k} {v:.0f}" for k, v in sorted(peak_rss_mb(stack).items())))
    finally:
        stack.stop()

    # 4: overload, against small queues so that 10x the capacity overflows them.
    report()
    overload = Stack(workdir=workdir / "overload", app_id="bench", app_secret=secrets.token_urlsafe(18),
                     extra_env={"BWS_LIVENESS_MAX_QUEUE": "2", "BWS_ENROLL_MAX_QUEUE": "2"}).start()
    try:
        client = BwsClient(overload.url, overload.app_id, overload.app_secret)
        store = ObjectStore(StorageSettings(endpoint=overload.s3_endpoint, access_key=overload.secrets.s3_access_key,
                                            secret_key=overload.secrets.s3_secret_key, bucket="bws-data"))
        capacity = 2  # model workers per service
        burst = 10 * capacity * 2

        def prepared_token() -> str:
            token = client.token(bcid=f"bws.2.{secrets.randbelow(10**9)}", task="enroll", livedetection=True,
                                 maxtries=1)
            for index, data in enumerate(frames):
                assert client.upload(token, data, index=index).json["Accepted"]
            return token

        def enroll_timed(token: str) -> tuple[float, dict, str]:
            began = time.perf_counter()
            reply = client.enroll(token)
            return (time.perf_counter() - began) * 1000, reply.json if reply.status == 200 else {
                "status": reply.status}, token

        unloaded = [enroll_timed(prepared_token())[0] for _ in range(10)]
        unloaded_p99 = percentile(unloaded, 99)
        tokens = [prepared_token() for _ in range(burst)]
        with ThreadPoolExecutor(burst) as pool:
            outcomes = list(pool.map(enroll_timed, tokens))
        accepted = [ms for ms, reply, _ in outcomes if reply == {"Success": True}]
        refused = [(ms, token) for ms, reply, token in outcomes if reply.get("Error") == "ExecutionOfJobTimedOut"]
        other = [reply for _, reply, _ in outcomes if reply != {"Success": True}
                 and reply.get("Error") != "ExecutionOfJobTimedOut"]
        time.sleep(2)  # refused calls' samples are deleted just after their reply
        left_behind = sum(len(store.samples(claims_of(t)["jti"])) for t in tokens)
        # A refused call must not burn the try: with maxtries=1 the token can be used again.
        retry_ok = 0
        for _, token in refused[:3]:
            for index, data in enumerate(frames):
                client.upload(token, data, index=index)
            retry_ok += client.enroll(token).json == {"Success": True}
        report(f"overload: {burst} concurrent enrollments (about 10x the {capacity} workers per service, queues of 2)")
        report(f"- answered: {len(outcomes)}/{burst}; accepted {len(accepted)}, refused with ExecutionOfJobTimedOut "
               f"{len(refused)}, other {len(other)} {other[:3]}")
        report(f"- enroll call p99: accepted under overload {percentile(accepted, 99):.0f} ms vs unloaded "
               f"{unloaded_p99:.0f} ms (ratio {percentile(accepted, 99) / unloaded_p99:.2f}, goal <= 2)")
        report(f"- refused answered in p50 {percentile([ms for ms, _ in refused], 50):.0f} ms, "
               f"max {max((ms for ms, _ in refused), default=float('nan')):.0f} ms")
        report(f"- samples left behind: {left_behind}; refused tokens that enrolled on retry (maxtries=1): "
               f"{retry_ok}/{min(3, len(refused))}")
    finally:
        overload.stop()
    RESULTS.write_text("\n".join(lines) + "\n")
    print(f"\nwritten to {RESULTS}")


if __name__ == "__main__":
    main()
