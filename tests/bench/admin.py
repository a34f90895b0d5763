"""bws-admin at scale: backup export, verify and import, and a template key rotation, over
templates the size the service writes, in a real S3 server (SeaweedFS), through the command
line an operator runs.

    make bench-admin        (or: .venv/bin/python -m tests.bench.admin [templates])

Writes COUNT templates (20 embeddings each, the default cap) with one thumbnail set each (one
real aligned face, as PNG) straight into the store, then times each command and its peak memory
(the child's max RSS), and writes tests/bench/results/admin.md.
"""

from __future__ import annotations

import base64
import os
import secrets
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from bws.devrun import Stack
from bws.faces import FaceDetector, align_face, aligned_to_png
from bws.settings import StorageSettings
from bws.storage import ObjectStore
from enroll_service.templates import TemplateStore
from tests.support.images import astronaut

RESULTS = Path(__file__).parent / "results" / "admin.md"


def run(stack: Stack, *args: str, env: dict[str, str]) -> tuple[float, float]:
    """Seconds and peak RSS (MB) of one bws-admin command."""
    began = time.perf_counter()
    child = subprocess.Popen([sys.executable, "-m", "bws.admin", *args], env=stack.env() | env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - began
    child.returncode = os.waitstatus_to_exitcode(status)
    errors = child.stderr.read().decode() if child.stderr else ""
    assert child.returncode == 0, (args, errors)
    return seconds, usage.ru_maxrss / 1024


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    image = astronaut()
    face = aligned_to_png(align_face(image, FaceDetector().detect(image)[0]))
    with tempfile.TemporaryDirectory() as folder:
        stack = Stack(workdir=Path(folder), app_id="bench", app_secret=secrets.token_urlsafe(18))
        stack.start_storage()
        try:
            store = ObjectStore(StorageSettings(endpoint=stack.s3_endpoint, access_key=stack.secrets.s3_access_key,
                                                secret_key=stack.secrets.s3_secret_key, bucket="bws-data"))
            store.ensure_bucket()
            templates = TemplateStore(store, base64.b64decode(stack.secrets.template_key))

            def write(n: int) -> None:
                vectors = np.random.default_rng(n).normal(size=(20, 128)).astype(np.float32)
                templates.add(f"bws/1/{n}", list(vectors / np.linalg.norm(vectors, axis=1, keepdims=True)), 20)
                templates.add_thumbnails(f"bws/1/{n}", [face], 20)

            began = time.perf_counter()
            with ThreadPoolExecutor(16) as pool:
                list(pool.map(write, range(count)))
            print(f"{count} templates written in {time.perf_counter() - began:.1f} s", flush=True)

            key = {"BWS_BACKUP_KEY": base64.b64encode(os.urandom(32)).decode()}
            archive = Path(folder) / "bws.backup"
            rows = [("backup export", *run(stack, "backup", "export", str(archive), env=key))]
            size = archive.stat().st_size
            rows.append(("backup verify", *run(stack, "backup", "verify", str(archive), env=key)))
            other = {**key, "BWS_S3_BUCKET": "bws-restored",
                     "BWS_TEMPLATE_KEY": base64.b64encode(os.urandom(32)).decode()}
            rows.append(("backup import (empty deployment, another key)",
                         *run(stack, "backup", "import", str(archive), env=other)))
            rows.append(("backup import again (all skipped)", *run(stack, "backup", "import", str(archive), env=other)))
            rotated = {"BWS_TEMPLATE_KEY": base64.b64encode(os.urandom(32)).decode(),
                       "BWS_TEMPLATE_READ_KEYS": stack.secrets.template_key}
            rows.append(("keys rotate (templates and thumbnails, then the census)",
                         *run(stack, "keys", "rotate", env=rotated)))
        finally:
            stack.stop()
    lines = [
        "# bws-admin at scale",
        "",
        f"`make bench-admin`: {count} templates of 20 embeddings, each with one thumbnail set, in SeaweedFS on "
        f"this machine ({os.cpu_count()} cores); the archive is {size / 1e6:.1f} MB "
        f"({size / count / 1e3:.1f} kB per class). Each command is a separate process, as an operator runs it.",
        "",
        "| command | seconds | classes per second | peak memory (RSS) |",
        "| --- | --- | --- | --- |",
        *(f"| {name} | {seconds:.1f} | {count / seconds:.0f} | {rss:.0f} MB |" for name, seconds, rss in rows),
        "",
        "Peak memory is the process's whole RSS (Python, the face engine's modules, the store client); it holds",
        "one batch of 32 objects at a time, so it does not grow with the number of classes",
        "(tests/unit/test_admin.py measures the export's own allocations).",
    ]
    RESULTS.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
