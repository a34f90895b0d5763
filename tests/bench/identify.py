"""Identify benchmark: 1:N search cost against the cost of one face embedding, in one run.

    make bench-identify        (or: .venv/bin/python -m tests.bench.identify)

1. One face embedding (decode + YuNet + SFace) on a real photo: the unit of cost.
2. The in-memory partition index searched with synthetic templates at 1k, 10k and 100k classes.
3. The service's whole search path at 1k classes enrolled through the real template store in
   SeaweedFS: catching up with the change log (one LIST) plus the search.

Prints ratios measured side by side and writes them to tests/bench/results/identify.md.
"""

from __future__ import annotations

import base64
import os
import secrets
import statistics
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np

from bws import images
from bws.devrun import Stack
from bws.faces import FaceDetector, FaceEmbedder
from bws.settings import StorageSettings
from bws.storage import ObjectStore
from enroll_service.matching import IndexCache, PartitionIndex
from enroll_service.templates import TemplateStore
from tests.support.images import astronaut

RESULTS = Path(__file__).parent / "results" / "identify.md"


def timed(function: Callable[[], object], repeat: int) -> list[float]:
    samples = []
    for _ in range(repeat):
        began = time.perf_counter()
        function()
        samples.append((time.perf_counter() - began) * 1000)
    return samples


def unit_vectors(count: int, rng: np.random.Generator) -> np.ndarray:
    vectors = rng.normal(size=(count, 128)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def main() -> None:
    cv2.setNumThreads(1)  # as in the services' workers
    rng = np.random.default_rng(0)
    lines: list[str] = []

    def report(text: str) -> None:
        print(text, flush=True)
        lines.append(text)

    png = cv2.imencode(".png", astronaut())[1].tobytes()
    detector, embedder = FaceDetector(), FaceEmbedder()

    def embed_one() -> np.ndarray:
        image = images.decode(png)
        return embedder.embed(image, detector.detect(image)[0])

    embed_one()
    embedding_ms = statistics.median(timed(embed_one, 30))
    report(f"one face embedding (decode + detect + embed, 512x512 PNG): median {embedding_ms:.2f} ms")
    report("")
    report("| templates in partition | search median (ms) | search p95 (ms) | search / one embedding |")
    report("| ---: | ---: | ---: | ---: |")
    for count in (1_000, 10_000, 100_000):
        index = PartitionIndex()
        index.put_many([(f"bws/1/{i}", v, ()) for i, v in enumerate(unit_vectors(count, rng))])
        probes = unit_vectors(50, rng)
        samples = [t for p in probes for t in timed(lambda p=p, index=index: index.search(p, 10, 0.5), 4)]
        median, p95 = statistics.median(samples), float(np.percentile(samples, 95))
        report(f"| {count:,} | {median:.3f} | {p95:.3f} | {median / embedding_ms:.3f} |")

    # The whole search path against real storage: 1k templates enrolled through TemplateStore.
    with tempfile.TemporaryDirectory() as workdir:
        stack = Stack(workdir=Path(workdir), app_id="bench", app_secret=secrets.token_urlsafe(18))
        stack.start_storage()
        try:
            store = ObjectStore(StorageSettings(endpoint=stack.s3_endpoint, access_key=stack.secrets.s3_access_key,
                                                secret_key=stack.secrets.s3_secret_key, bucket="bws-bench"))
            store.ensure_bucket()
            templates = TemplateStore(store, base64.b64decode(stack.secrets.template_key))
            cache = IndexCache(store, templates)
            count = 1_000
            vectors = unit_vectors(count, rng)
            began = time.perf_counter()

            def enroll(i: int) -> None:
                templates.add(f"bws/7/{i}", [vectors[i]], 20)
                cache.record_change(f"bws/7/{i}")

            with ThreadPoolExecutor(8) as pool:
                list(pool.map(enroll, range(count)))
            enroll_s = time.perf_counter() - began
            began = time.perf_counter()
            cache.search("bws", 7, vectors[0], 10, 0.5)
            build_s = time.perf_counter() - began
            path = timed(lambda: cache.search("bws", 7, vectors[int(rng.integers(count))], 10, 0.5), 50)
            report("")
            report(f"real storage, {count:,} templates: enrolled in {enroll_s:.1f} s (8 threads), "
                   f"index built from storage in {build_s:.2f} s")
            report(f"search path with change-log catch-up (one LIST) + search: median "
                   f"{statistics.median(path):.2f} ms = {statistics.median(path) / embedding_ms:.2f}x one embedding")
        finally:
            stack.stop()
    report("")
    report(f"machine: {os.cpu_count()} cores; numbers from one run, `make bench-identify`.")
    RESULTS.write_text("# Identify benchmark\n\n" + "\n".join(lines) + "\n")
    print(f"\nwritten to {RESULTS}")


if __name__ == "__main__":
    main()
