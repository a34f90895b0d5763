"""Identify at a million classes: a partition stored as real templates in the S3 server, and
what a new enrollment service replica pays before its first identify — built from the
templates (as before snapshots) and loaded from the index snapshot.

    make bench-identify        (runs this after tests/bench/identify.py)
    .venv/bin/python -m tests.bench.identify_scale [classes]     (default 1,000,000)

Each replica is a fresh process (``replica`` below): time to its first identify, the memory
it holds afterwards (RSS growth) and at its peak, search p50/p99 over 200 probes, and the cost
of enrollments made by other replicas, as this replica sees them at its next search (one LIST
plus one template read per changed class). Results go to tests/bench/results/identify-scale.md.
"""

from __future__ import annotations

import base64
import gc
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from bws.devrun import Stack
from bws.settings import StorageSettings
from bws.storage import ObjectStore, class_key

RESULTS = Path(__file__).parent / "results" / "identify-scale.md"
PARTITION = 1
ENROLLMENTS = 100  # made "by other replicas" between two searches


def unit(seed: int) -> np.ndarray:
    vector = np.random.default_rng(seed).normal(size=128).astype(np.float32)
    return vector / np.linalg.norm(vector)


def _status(field: str) -> float:
    """VmRSS or VmHWM of this process, in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def replica(env: dict[str, str], count: int, first_new: int) -> dict[str, float]:
    """One new replica (run in its own process): its first identify, memory, searches, and the
    cost of other replicas' enrollments."""
    from enroll_service.matching import IndexCache
    from enroll_service.templates import TemplateStore

    store = ObjectStore(StorageSettings.from_env(env))
    templates = TemplateStore(store, base64.b64decode(env["BWS_TEMPLATE_KEY"]))
    cache = IndexCache(store, templates)
    gc.collect()
    before = _status("VmRSS")
    began = time.perf_counter()
    first = cache.search("bws", PARTITION, unit(7), 10, 0.5)
    first_s = time.perf_counter() - began
    assert first[0][0][0] == f"bws/{PARTITION}/7", first[0][:1]
    began = time.perf_counter()
    while cache._partitions[f"bws/{PARTITION}"].snapshotting:  # after a build, a snapshot is written
        time.sleep(0.2)
    snapshot_s = time.perf_counter() - began
    gc.collect()
    held = _status("VmRSS") - before
    probes = [unit(int(seed)) for seed in np.random.default_rng(1).integers(0, count, 200)]
    searches = []
    for probe in probes:
        began = time.perf_counter()
        cache.search("bws", PARTITION, probe, 10, 0.5)
        searches.append((time.perf_counter() - began) * 1000)
    # Other replicas enroll: templates written and logged; this replica sees them at its next search.
    for n in range(first_new, first_new + ENROLLMENTS):  # new classes: the index grows
        templates.add(f"bws/{PARTITION}/{n}", [unit(n)], 20)
        cache.record_change(f"bws/{PARTITION}/{n}")
    began = time.perf_counter()
    cache.search("bws", PARTITION, unit(first_new), 10, 0.5)
    catch_up_ms = (time.perf_counter() - began) * 1000 - statistics.median(searches)
    return {"first_s": first_s, "held_mb": held, "peak_mb": _status("VmHWM"),
            "p50_ms": statistics.median(searches), "p99_ms": float(np.percentile(searches, 99)),
            "per_enrollment_ms": catch_up_ms / ENROLLMENTS, "snapshot_s": snapshot_s}


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "replica":
        print(json.dumps(replica(dict(os.environ), int(sys.argv[2]), int(sys.argv[3]))), flush=True)
        return
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    from enroll_service.templates import TemplateStore

    with tempfile.TemporaryDirectory() as folder:
        stack = Stack(workdir=Path(folder), app_id="bench", app_secret=secrets.token_urlsafe(18))
        stack.start_storage()
        try:
            env = stack.env()
            store = ObjectStore(StorageSettings.from_env(env))
            store.ensure_bucket()
            templates = TemplateStore(store, base64.b64decode(env["BWS_TEMPLATE_KEY"]))

            def write(n: int) -> None:  # a real template (one embedding), sealed, one PUT
                template = templates.new(f"bws/{PARTITION}/{n}", embeddings=[unit(n).round(6).tolist()])
                store.put(class_key(template.class_id), templates._seal(template))

            began = time.perf_counter()
            with ThreadPoolExecutor(32) as pool:
                for done, _ in enumerate(pool.map(write, range(count)), 1):
                    if done % 100_000 == 0:
                        print(f"  {done:,} templates written ({time.perf_counter() - began:.0f} s)", flush=True)
            write_s = time.perf_counter() - began

            def run_replica(first_new: int) -> dict[str, float]:
                done = subprocess.run([sys.executable, "-m", "tests.bench.identify_scale", "replica", str(count),
                                       str(first_new)], env=env, capture_output=True, text=True, check=True)
                return json.loads(done.stdout.strip().splitlines()[-1])

            built = run_replica(count)  # no snapshot yet: built from the templates, then writes one
            print(f"built from templates: {built}", flush=True)
            loaded = run_replica(count + ENROLLMENTS)  # loads that snapshot, and the first one's 100 since
            print(f"loaded from the snapshot: {loaded}", flush=True)
        finally:
            stack.stop()

    def row(name: str, key: str, fmt: str) -> str:
        return f"| {name} | {format(built[key], fmt)} | {format(loaded[key], fmt)} |"

    lines = [
        "# Identify at scale",
        "",
        f"`make bench-identify`: a partition of {count:,} classes stored as real templates (sealed, one embedding "
        f"each) in SeaweedFS on this machine ({os.cpu_count()} cores), written in {write_s:.0f} s. Each column is a "
        "new enrollment service replica in its own process; its first identify builds or loads the partition's index.",
        "",
        "| | built from the templates | loaded from the snapshot |",
        "| --- | ---: | ---: |",
        row("time to the first identify (s)", "first_s", ".1f"),
        row("memory held by the index (MB, RSS growth)", "held_mb", ".0f"),
        f"| memory per class (bytes) | {built['held_mb'] * 2**20 / count:.0f} | "
        f"{loaded['held_mb'] * 2**20 / count:.0f} |",
        row("peak RSS of the process (MB)", "peak_mb", ".0f"),
        row("search p50 (ms)", "p50_ms", ".1f"),
        row("search p99 (ms)", "p99_ms", ".1f"),
        row(f"a new class enrolled by another replica, seen at the next search ({ENROLLMENTS} at once; ms each)",
            "per_enrollment_ms", ".2f"),
        f"| writing the snapshot after the build (s, in the background; searches go on) | "
        f"{built['snapshot_s']:.1f} | - |",
        "",
        f"The second replica's first identify includes catching up with the {ENROLLMENTS} classes the first one "
        "enrolled after its snapshot.",
    ]
    RESULTS.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
