"""Load benchmark: the full HTTP path against the face engine's own cost, scaling and overload.

    make bench-load        (or: .venv/bin/python -m tests.bench.load)

All in one run, on loopback, with the real processes (SeaweedFS, both services, gateway):

1. bare engine: decode + detect + landmarks + align + embed for the exact images of one
   enrollment, called in-process (the work no server can avoid);
2. full path for the same images: token, uploads, enroll with liveness on, over HTTP;
3. concurrency 1, 2, 4, 8, 16 clients enrolling back to back: throughput and p50/p95/p99
   latency in a window of steady load;
4. overload: bursts of 10× the requests the machine serves best at once, against small
   queues — biometric calls, then uploads: every request answered, accepted ones not much
   slower than unloaded, refused ones fast (ExecutionOfJobTimedOut, or 503 for an upload),
   no samples left behind, no try burned by a refused call;
5. CPU per enrollment of every process against the bare engine's, what it is spent on around
   the models (each step's CPU per process, the object store operations each process makes),
   and peak RSS.

Prints ratios measured side by side and writes them to tests/bench/results/load.md. Absolute
times drift on a shared machine; the ratios are what to compare, and since even they vary
from run to run, the whole benchmark runs five times and the summary gives each run's
headline numbers and their median.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import re
import secrets
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
CORES = os.cpu_count() or 1
FULL_PATH_GOAL = 1.25  # full path / bare engine at concurrency 1, at most
CPU_GOAL = 1.30  # CPU per enrollment of all processes / the bare engine's, at most
CORES_GOAL = 0.95  # best throughput / what the cores allow (cores / CPU per enrollment), at least


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


@contextmanager
def long_lived_objects_frozen() -> Iterator[None]:
    """Keep this process's full garbage collections short while it times something.

    The load generator holds many long-lived objects (models, frames, results); a full
    collection walked all of them for 60-100 ms, and when one fell inside a burst it was
    counted as the server's latency (a 4.3x "accepted p99", a 156 ms "refusal"). Frozen, they
    are left out of collections. Turning collection off instead made every burst slower: the
    cyclic garbage of 40 requests then piles up in fresh memory.
    """
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


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


def enroll_once(client: BwsClient, frames: list[bytes], give_up_at: float | None = None) -> tuple[float, dict]:
    """One whole enrollment over HTTP: token, uploads, enroll with liveness. Returns ms and the reply.

    Behaves like a well-mannered client: refused for overload (503 on an upload, or
    ExecutionOfJobTimedOut, which drops the samples), it waits a second and tries again, up
    to 20 times, and not after ``give_up_at`` (a ``time.perf_counter()`` value).
    The reply then also says how many times it was refused.
    """
    began = time.perf_counter()

    def may_retry() -> bool:
        return refusals < 20 and (give_up_at is None or time.perf_counter() < give_up_at)

    token = client.token(bcid=f"bws.1.{secrets.randbelow(10**9)}", task="enroll", livedetection=True)
    refusals = 0
    while True:
        for index, data in enumerate(frames):
            reply = client.upload(token, data, index=index)
            while reply.status == 503 and may_retry():
                refusals += 1
                time.sleep(float(reply.headers.get("Retry-After", "1")))
                reply = client.upload(token, data, index=index)
            if reply.status != 200:
                return (time.perf_counter() - began) * 1000, {"upload": reply.status}
        reply = client.enroll(token)
        outcome = reply.json if reply.status == 200 else {"status": reply.status}
        if outcome.get("Error") != "ExecutionOfJobTimedOut" or not may_retry():
            break
        refusals += 1
        time.sleep(1)
    elapsed = (time.perf_counter() - began) * 1000
    return elapsed, outcome | ({"refusals": refusals} if refusals else {})


WARM_UP_SECONDS = 1.5  # the clients start together; the window opens once their work interleaves
WINDOW_SECONDS = 6.0


@dataclass(frozen=True)
class Window:
    """What some clients achieved in a window of steady load."""

    seconds: float
    cpu_seconds: float  # of every process of the stack, and of this one (the clients)
    outcomes: list[tuple[float, dict]]  # the enrollments that ended inside the window: ms, reply


def run_clients(count: int, work: Callable[[float], tuple[float, dict]], stack: Stack) -> Window:
    """``count`` clients repeat ``work(give_up_at)`` back to back; measured: a window of steady load.

    A fixed number of enrollments per client made each level end in a tail where a client
    that had been refused a few times worked on alone while the cores idled; at 16 clients
    that halved the throughput measured. The window opens after a warm-up and closes while
    every client is still busy: only enrollments that end inside it count, and the CPU is
    read at its edges.
    """
    ended: list[tuple[float, float, dict]] = []
    lock = threading.Lock()
    began = time.perf_counter()
    opens, closes = began + WARM_UP_SECONDS, began + WARM_UP_SECONDS + WINDOW_SECONDS

    def client_loop() -> None:
        while time.perf_counter() < closes:
            ms, reply = work(closes)
            with lock:
                ended.append((time.perf_counter(), ms, reply))

    def cpu_now() -> float:
        return sum(cpu_seconds(stack).values()) + time.process_time()

    with ThreadPoolExecutor(count) as pool:
        futures = [pool.submit(client_loop) for _ in range(count)]
        time.sleep(max(0.0, opens - time.perf_counter()))
        cpu_at_open, opened = cpu_now(), time.perf_counter()
        time.sleep(max(0.0, closes - time.perf_counter()))
        cpu_at_close, closed = cpu_now(), time.perf_counter()
        for future in futures:
            future.result()
    inside = [(ms, reply) for at, ms, reply in ended if opened <= at <= closed]
    return Window(closed - opened, cpu_at_close - cpu_at_open, inside)


def store_operations(stack: Stack) -> dict[str, dict[str, float]]:
    """Each process's object store operations so far (``bws_store_operations_total``), by kind."""
    urls = {"gateway": f"{stack.url}/metrics",
            "liveness_service": f"http://127.0.0.1:{stack.liveness_metrics_port}/metrics",
            "enroll_service": f"http://127.0.0.1:{stack.enroll_metrics_port}/metrics"}
    found: dict[str, dict[str, float]] = {}
    for name, url in urls.items():
        with urllib.request.urlopen(url, timeout=10) as reply:
            text = reply.read().decode()
        found[name] = {match[0]: float(match[1]) for match in
                       re.findall(r'^bws_store_operations_total\{operation="(\w+)"\} ([0-9.e+]+)$', text, re.M)}
    return found


def where_the_cpu_goes(stack: Stack, client: BwsClient, frames: list[bytes], count: int = 15) -> list[str]:
    """Each step of an enrollment on its own (token, the uploads, the call), the CPU every
    process spends on it, and the object store operations each process makes for it."""
    tokens = [client.token(bcid=f"bws.1.{secrets.randbelow(10**9)}", task="enroll", livedetection=True)
              for _ in range(count)]
    steps: dict[str, Callable[[], object]] = {
        "token": lambda: [client.token(bcid="bws.1.1", task="enroll", livedetection=True) for _ in range(count)],
        f"{len(frames)} uploads": lambda: [[client.upload(t, d, index=i) for i, d in enumerate(frames)]
                                           for t in tokens],
        "the enroll call": lambda: [client.enroll(t) for t in tokens],
    }
    names = [*stack.processes, "client"]
    lines = [f"Where the CPU goes, step by step ({count} enrollments, each step on its own; CPU ms per enrollment; "
             "store operations per enrollment, by the process that makes them):", "",
             "| step | " + " | ".join(names) + " | all | store operations |",
             "| --- | " + " | ".join("---:" for _ in names) + " | ---: | --- |"]
    for step, run in steps.items():
        time.sleep(0.5)  # what the step before left (sample deletion, audit) is done
        cpu, ops = cpu_seconds(stack) | {"client": time.process_time()}, store_operations(stack)
        run()
        time.sleep(0.5)
        cpu_after, ops_after = cpu_seconds(stack) | {"client": time.process_time()}, store_operations(stack)
        used = {name: (cpu_after[name] - cpu[name]) / count * 1000 for name in names}
        made = ", ".join(f"{process.split('_')[0]} {kind} {(n - ops[process].get(kind, 0)) / count:.1f}"
                         for process, kinds in ops_after.items() for kind, n in sorted(kinds.items())
                         if n - ops[process].get(kind, 0) > 0.05 * count)
        lines.append(f"| {step} | " + " | ".join(f"{used[name]:.1f}" for name in names)
                     + f" | {sum(used.values()):.1f} | {made or '–'} |")
    lines += ["", "Each step's CPU includes what the processes spend idle meanwhile (1 s per step; SeaweedFS "
              "spends a few ms per second idle)."]
    return lines


def cpu_seconds(stack: Stack) -> dict[str, float]:
    """CPU time (user + system, all threads) each process of the stack has used so far."""
    ticks = os.sysconf("SC_CLK_TCK")
    used = {}
    for name, process in stack.processes.items():
        fields = Path(f"/proc/{process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        used[name] = (int(fields[11]) + int(fields[12])) / ticks
    return used


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


BURST = 40  # 10x the requests the machine serves at once: 2 model workers per service, 2 waiting
BURSTS = 6  # each admits only a few requests: their latencies are pooled over several bursts
UNLOADED = 20  # requests one at a time, for the unloaded p99 the bursts are compared with


class BurstClient:
    """Keep-alive HTTP/1.1 connections and raw requests: a load generator that costs the cores little.

    The bursts run on the same two cores as the server. With aiohttp's client, sending 40
    requests and reading their replies took 12-16 ms of CPU per burst, all of it taken from the
    requests being measured; writing prepared bytes and reading the replies' heads takes a
    fraction of that.
    """

    def __init__(self, url: str) -> None:
        parts = urllib.parse.urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    @staticmethod
    def request(method: str, path: str, token: str, body: bytes = b"") -> bytes:
        head = (f"{method} {path} HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {token}\r\n"
                f"Content-Type: text/plain\r\nContent-Length: {len(body)}\r\n\r\n")
        return head.encode() + body

    async def open(self, count: int) -> None:
        """Have ``count`` connections ready, as clients that have called before would."""
        while len(self._idle) < count:
            self._idle.append(await asyncio.open_connection(self.host, self.port))

    async def exchange(self, request: bytes) -> tuple[float, int, Any]:
        """Send one request on an idle connection: ms until the whole reply is read, status, JSON body."""
        if not self._idle:
            await self.open(1)
        reader, writer = self._idle.pop()
        began = time.perf_counter()
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        fields = {name.strip().lower(): value.strip()
                  for name, _, value in (line.partition(b":") for line in head.split(b"\r\n")[1:] if b":" in line)}
        body = await reader.readexactly(int(fields[b"content-length"]))
        elapsed = (time.perf_counter() - began) * 1000
        if fields.get(b"connection", b"").lower() == b"close":
            writer.close()
        else:
            self._idle.append((reader, writer))
        return elapsed, int(head[9:12]), json.loads(body) if body else None

    async def close(self) -> None:
        for _, writer in self._idle:
            writer.close()
        self._idle.clear()


async def overload_bursts(stack: Stack, frames: list[bytes]) -> tuple[list[str], dict[str, float]]:
    """Bursts of BURST simultaneous requests, sent from one event loop so that the client adds
    no waiting of its own: first biometric calls (samples uploaded beforehand), then uploads."""
    client = BwsClient(stack.url, stack.app_id, stack.app_secret)
    store = ObjectStore(StorageSettings(endpoint=stack.s3_endpoint, access_key=stack.secrets.s3_access_key,
                                        secret_key=stack.secrets.s3_secret_key, bucket="bws-data"))
    bodies = [images.to_data_url(f).encode() for f in frames]

    def prepared_token() -> str:
        token = client.token(bcid=f"bws.2.{secrets.randbelow(10**9)}", task="enroll", livedetection=True, maxtries=1)
        for index, data in enumerate(frames):
            assert client.upload(token, data, index=index).json["Accepted"]
        return token

    burst_client = BurstClient(stack.url)
    await burst_client.open(BURST)

    async def timed(method: str, path: str, token: str, body: bytes = b"") -> tuple[float, int, object]:
        return await burst_client.exchange(BurstClient.request(method, path, token, body))

    lines = []
    headline: dict[str, float] = {}
    try:
        # Biometric calls
        unloaded = [(await timed("GET", "/extension/enroll", prepared_token()))[0] for _ in range(UNLOADED)]
        tokens, outcomes = [], []
        for _ in range(BURSTS):
            burst = [prepared_token() for _ in range(BURST)]
            outcomes += await asyncio.gather(*(timed("GET", "/extension/enroll", t) for t in burst))
            tokens += burst
        accepted = [ms for ms, _, reply in outcomes if reply == {"Success": True}]
        refused = [(ms, token) for (ms, _, reply), token in zip(outcomes, tokens, strict=True)
                   if isinstance(reply, dict) and reply.get("Error") == "ExecutionOfJobTimedOut"]
        other = [reply for _, _, reply in outcomes if reply != {"Success": True}
                 and not (isinstance(reply, dict) and reply.get("Error") == "ExecutionOfJobTimedOut")]
        await asyncio.sleep(3)  # refused calls' samples are deleted just after their reply
        left_behind = sum(len(store.samples(claims_of(t)["jti"])) for t in tokens)
        retry_ok = 0  # a refused call must not burn the try: with maxtries=1 the token works again
        for _, token in refused[:3]:
            for index, data in enumerate(frames):
                client.upload(token, data, index=index)
            retry_ok += client.enroll(token).json == {"Success": True}
        headline["calls: accepted p99 / unloaded p99"] = percentile(accepted, 99) / percentile(unloaded, 99)
        headline["calls: slowest refusal, ms"] = max((ms for ms, _ in refused), default=float("nan"))
        lines += [
            f"overload: {BURSTS} bursts of {BURST} simultaneous requests (10x the 2 running + 2 waiting per "
            "service; service queues of 2), written at once on open keep-alive connections from one event loop; "
            f"latencies pooled over the bursts; the unloaded p99 is of {UNLOADED} requests sent one at a time",
            "",
            "biometric calls (GET /extension/enroll with liveness, samples uploaded beforehand):",
            f"- answered: {len(outcomes)}/{BURSTS * BURST}; accepted {len(accepted)}, "
            "refused with ExecutionOfJobTimedOut "
            f"{len(refused)}, other {len(other)} {other[:3]}",
            f"- accepted p99 {percentile(accepted, 99):.0f} ms vs unloaded p99 {percentile(unloaded, 99):.0f} ms: "
            f"**{percentile(accepted, 99) / percentile(unloaded, 99):.2f}x** (goal <= 2)",
            f"- refused answered in p50 {percentile([ms for ms, _ in refused], 50):.0f} ms, "
            f"**max {max((ms for ms, _ in refused), default=float('nan')):.0f} ms** (goal <= 100)",
            f"- samples left behind: {left_behind}; refused tokens that enrolled on retry (maxtries=1): "
            f"{retry_ok}/{min(3, len(refused))}",
        ]
        # Uploads
        upload_tokens = [client.token(bcid=f"bws.3.{secrets.randbelow(10**9)}", task="enroll", livedetection=True)
                         for _ in range(BURSTS * BURST + UNLOADED)]
        unloaded = [(await timed("POST", "/extension/upload", t, bodies[0]))[0]
                    for t in upload_tokens[:UNLOADED]]
        outcomes = []
        for first in range(UNLOADED, len(upload_tokens), BURST):
            outcomes += await asyncio.gather(*(timed("POST", "/extension/upload", t, bodies[0])
                                               for t in upload_tokens[first:first + BURST]))
            await asyncio.sleep(0.5)  # the refused bodies are drained before the next burst
        accepted = [ms for ms, status, _ in outcomes if status == 200]
        busy = [ms for ms, status, _ in outcomes if status == 503]
        await asyncio.sleep(1)
        stored = sum(len(store.samples(claims_of(t)["jti"])) for t in upload_tokens[UNLOADED:])
        headline["uploads: accepted p99 / unloaded p99"] = percentile(accepted, 99) / percentile(unloaded, 99)
        headline["uploads: slowest 503, ms"] = max(busy, default=float("nan"))
        lines += [
            "",
            "uploads (POST /extension/upload, one 640x480 PNG each):",
            f"- answered: {len(outcomes)}/{BURSTS * BURST}; accepted {len(accepted)}, 503 {len(busy)}, "
            f"other {len(outcomes) - len(accepted) - len(busy)}",
            f"- accepted p99 {percentile(accepted, 99):.0f} ms vs unloaded p99 {percentile(unloaded, 99):.0f} ms: "
            f"**{percentile(accepted, 99) / percentile(unloaded, 99):.2f}x** (goal <= 2)",
            f"- 503 answered in p50 {percentile(busy, 50):.0f} ms, **max {max(busy, default=float('nan')):.0f} ms** "
            "(goal <= 100)",
            f"- samples stored: {stored} (= accepted: {stored == len(accepted)}; a refused upload stores nothing)",
        ]
    finally:
        await burst_client.close()
    return lines, headline


REPEATS = 5  # the whole benchmark, on fresh stacks: the machine is shared and one run can mislead
HEADLINES = {  # what each repeat contributes to the summary, and its goal
    "full path / bare engine, concurrency 1": f"<= {FULL_PATH_GOAL}",
    "CPU per enrollment, all processes / bare engine": f"<= {CPU_GOAL}",
    "CPU around the models per enrollment, ms": "",
    "throughput at the best concurrency / concurrency 1": "",
    "best throughput / what the cores allow": f">= {CORES_GOAL}",
    "calls: accepted p99 / unloaded p99": "<= 2",
    "calls: slowest refusal, ms": "<= 100",
    "uploads: accepted p99 / unloaded p99": "<= 2",
    "uploads: slowest 503, ms": "<= 100",
}


def run_once(frames: list[bytes]) -> tuple[list[str], dict[str, float]]:
    """One whole benchmark on fresh stacks: its report, and its headline numbers.

    The stacks' directories go afterwards: SeaweedFS keeps deleted samples in its volume files
    until they are compacted, so each run leaves hundreds of megabytes otherwise.
    """
    with tempfile.TemporaryDirectory(prefix="bws-bench-", ignore_cleanup_errors=True) as workdir:
        return _run_in(Path(workdir), frames)


def _run_in(workdir: Path, frames: list[bytes]) -> tuple[list[str], dict[str, float]]:
    lines: list[str] = []
    headline: dict[str, float] = {}

    def report(text: str = "") -> None:
        print(text, flush=True)
        lines.append(text)

    stack = Stack(workdir=workdir / "main", app_id="bench", app_secret=secrets.token_urlsafe(18)).start()
    try:
        client = BwsClient(stack.url, stack.app_id, stack.app_secret)
        enroll_once(client, frames)  # warm-up: connections, caches
        # 1 + 2: bare engine and full path, interleaved so that drift hits both alike.
        engine = BareEngine(frames)
        bare, full = [], []
        bare_cpu = full_cpu = 0.0
        cpu_by_process: dict[str, float] = dict.fromkeys([*stack.processes, "client"], 0.0)
        rounds = 20
        with long_lived_objects_frozen():
            for _ in range(rounds):
                began_cpu = time.process_time()
                bare.append(engine.timed_ms())
                bare_cpu += time.process_time() - began_cpu
                before = cpu_seconds(stack) | {"client": time.process_time()}
                elapsed, reply = enroll_once(client, frames)
                after = cpu_seconds(stack) | {"client": time.process_time()}
                assert reply == {"Success": True}, reply
                full.append(elapsed)
                for name in cpu_by_process:
                    cpu_by_process[name] += after[name] - before[name]
        full_cpu = sum(cpu_by_process.values())
        engine.close()
        bare_ms, full_ms = statistics.median(bare), statistics.median(full)
        admission = ", ".join(f"{name} {os.environ.get(name, 'default')}" for name in (
            "BWS_MAX_CONCURRENT_CALLS", "BWS_MAX_CONCURRENT_UPLOADS", "BWS_ADMISSION_WAIT_MS"))
        report(f"# Load benchmark ({os.cpu_count()} cores, {len(frames)} images per enrollment, liveness on; "
               f"{admission})")
        report()
        report(f"bare engine per enrollment (decode+detect+landmarks+align+embed, in-process): {bare_ms:.1f} ms")
        report(f"full path per enrollment (token+uploads+enroll over HTTP, concurrency 1): {full_ms:.1f} ms")
        report(f"**ratio full path / bare engine: {full_ms / bare_ms:.2f}** (goal <= {FULL_PATH_GOAL})")
        headline["full path / bare engine, concurrency 1"] = full_ms / bare_ms
        headline["CPU per enrollment, all processes / bare engine"] = full_cpu / bare_cpu
        headline["CPU around the models per enrollment, ms"] = (full_cpu - bare_cpu) / rounds * 1000
        report()
        report("The full path overlaps work on both cores (the enrollment service embeds a sample while the "
               "next one is inspected), so its time can hide overhead. The CPU it spends cannot:")
        report(f"CPU per enrollment: bare engine {bare_cpu / rounds * 1000:.0f} ms; full path "
               f"{full_cpu / rounds * 1000:.0f} ms = **{full_cpu / bare_cpu:.2f}x** (goal <= {CPU_GOAL}; " + ", ".join(
                   f"{name} {seconds / rounds * 1000:.0f}" for name, seconds in sorted(cpu_by_process.items()))
               + f"); around the models: **{(full_cpu - bare_cpu) / rounds * 1000:.0f} ms**")
        report()
        for line in where_the_cpu_goes(stack, client, frames):
            report(line)
        report()
        # 3: scaling
        report("| clients | enrollments/s | p50 ms | p95 ms | p99 ms | refusals (retried) | failures | cores busy "
               "| CPU ms per enrollment |")
        report("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        throughput, cpu_per_enrollment, cores_busy = {}, {}, {}
        for level in LEVELS:
            with long_lived_objects_frozen():
                window = run_clients(level, lambda give_up_at: enroll_once(client, frames, give_up_at), stack)
            ok = [ms for ms, reply in window.outcomes if reply.get("Success") is True]
            refusals = sum(reply.get("refusals", 0) for _, reply in window.outcomes)
            throughput[level] = len(ok) / window.seconds
            cpu_per_enrollment[level] = window.cpu_seconds / max(1, len(ok))
            cores_busy[level] = window.cpu_seconds / window.seconds
            report(f"| {level} | {throughput[level]:.2f} | {percentile(ok, 50):.0f} | {percentile(ok, 95):.0f} | "
                   f"{percentile(ok, 99):.0f} | {refusals} | {len(window.outcomes) - len(ok)} | "
                   f"{cores_busy[level]:.2f} | {cpu_per_enrollment[level] * 1000:.0f} |")
        report()
        most = LEVELS[-1]
        report(f"Each level: the clients enroll back to back; counted are the enrollments that end within "
               f"a {WINDOW_SECONDS:.0f} s window opened {WARM_UP_SECONDS} s after they start. Cores busy: CPU "
               f"of all processes (client included) per second of the window. A refused client waits the "
               f"second that Retry-After asks for, and tries again. What refused calls waste (their samples' "
               f"inspections) shows in the CPU per enrollment: at {most} clients it is "
               f"{cpu_per_enrollment[most] / cpu_per_enrollment[2]:.2f}x that at 2.")
        best = max(throughput, key=lambda k: throughput[k])
        report()
        report(f"throughput at the best concurrency ({best}) / concurrency 1: "
               f"{throughput[best] / throughput[1]:.2f}x (concurrency 1 already keeps {cores_busy[1]:.2f} cores busy)")
        headline["throughput at the best concurrency / concurrency 1"] = throughput[best] / throughput[1]
        cpu_bound = CORES / (full_cpu / rounds)
        report(f"**best throughput / what the cores allow** ({CORES} cores / {full_cpu / rounds * 1000:.0f} ms "
               f"of CPU per enrollment = {cpu_bound:.2f}/s): **{throughput[best] / cpu_bound:.2f}** "
               f"(goal >= {CORES_GOAL})")
        headline["best throughput / what the cores allow"] = throughput[best] / cpu_bound
        report()
        report("peak RSS (MB): " + ", ".join(f"{k} {v:.0f}" for k, v in sorted(peak_rss_mb(stack).items())))
    finally:
        stack.stop()

    # 4: overload, in a fresh process of its own (see ``bursts_in_a_fresh_process``).
    report()
    burst_lines, burst_headline = bursts_in_a_fresh_process(workdir / "overload")
    for line in burst_lines:
        report(line)
    headline |= burst_headline
    return lines, headline


def bursts_in_a_fresh_process(workdir: Path) -> tuple[list[str], dict[str, float]]:
    """The overload bursts, measured by a new load generator process against a new stack.

    Measured by this process after the phases before, the bursts of uploads came out at 4-5x
    the unloaded p99 and the slowest 503 at 100-225 ms; the same code measured by a fresh
    process, 2.1-2.9x and 54-86 ms, as the previous release measured in either way (2.3-2.5x,
    64-79 ms): what slowed them was in the generator (it holds the engine for the bare-engine
    comparison, and the state of the levels' clients), not in the server.
    """
    found = subprocess.run([sys.executable, "-m", "tests.bench.load", "--bursts", str(workdir)],
                           capture_output=True, text=True, check=True, timeout=900)
    result = json.loads(found.stdout.strip().splitlines()[-1])
    return result["lines"], result["headline"]


def bursts(workdir: Path) -> tuple[list[str], dict[str, float]]:
    """The overload bursts against a fresh stack with small queues, so that 10x the capacity overflows them."""
    frames = enrollment_frames()
    overload = Stack(workdir=workdir, app_id="bench", app_secret=secrets.token_urlsafe(18),
                     extra_env={"BWS_LIVENESS_MAX_QUEUE": "2", "BWS_ENROLL_MAX_QUEUE": "2"}).start()
    try:
        with long_lived_objects_frozen():
            return asyncio.run(overload_bursts(overload, frames))
    finally:
        overload.stop()


def main() -> None:
    if sys.argv[1:2] == ["--bursts"]:  # the overload phase, run by bursts_in_a_fresh_process
        burst_lines, burst_headline = bursts(Path(sys.argv[2]))
        print(json.dumps({"lines": burst_lines, "headline": burst_headline}))
        return
    frames = enrollment_frames()
    runs = [run_once(frames) for _ in range(REPEATS)]
    summary = [
        f"# Load benchmark: {REPEATS} runs on fresh stacks, the last one in full below",
        "",
        "| measure | " + " | ".join(f"run {n}" for n in range(1, REPEATS + 1)) + " | median | goal |",
        "| --- | " + " | ".join("---:" for _ in range(REPEATS + 1)) + " | --- |",
    ]
    for name, goal in HEADLINES.items():
        values = [headline[name] for _, headline in runs]
        digits = 0 if name.endswith("ms") else 2
        summary.append(f"| {name} | " + " | ".join(f"{v:.{digits}f}" for v in values)
                       + f" | **{statistics.median(values):.{digits}f}** | {goal} |")
    text = "\n".join(summary) + "\n\n" + "\n".join(runs[-1][0]).replace("# Load benchmark", "## Run", 1) + "\n"
    print("\n" + "\n".join(summary))
    RESULTS.write_text(text)
    print(f"\nwritten to {RESULTS}")


if __name__ == "__main__":
    main()
