"""Peer measurement: deepface's own DeepFace.verify (SFace + YuNet), offline, on our model files.

Run it with the peer venv's python, never the project's (it imports nothing from the repo):

    python3 -m venv .venv-peer
    .venv-peer/bin/pip install --require-hashes -r tests/bench/peer/requirements.txt
    .venv-peer/bin/python tests/bench/peer/deepface_verify.py \
        --models DIR --pairs pairs.json --rounds 20 > peer.json

DIR holds face_detection_yunet_2023mar.onnx and face_recognition_sface_2021dec.onnx (the
file names deepface looks for). They are copied into a temporary DEEPFACE_HOME, so deepface
finds them and never downloads; the socket layer refuses non-loopback connections as well,
so a download attempt fails loudly instead of measuring something else.

pairs.json is a JSON list of [path1, path2]. Paths are passed to DeepFace.verify as they
are, as users call it: every verify reads and decodes both files, detects with YuNet,
aligns and embeds both faces with SFace. Models are built once (deepface caches them in
modeling.cached_models), so the warm-up pass carries the load cost and is reported apart.

One JSON object goes to stdout; deepface's own log lines (it print()s them) go to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.util
import json
import os
import platform
import shutil
import socket
import statistics
import sys
import tempfile
import time
from typing import Any

YUNET_NAME = "face_detection_yunet_2023mar.onnx"
SFACE_NAME = "face_recognition_sface_2021dec.onnx"

# thread pools that read these variables at import time: OpenMP, OpenBLAS/MKL (numpy),
# tensorflow (only if installed; deepface >= 0.0.100 does not need it for SFace/YuNet)
THREAD_ENV = {
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "TF_NUM_INTRAOP_THREADS": "1",
    "TF_NUM_INTEROP_THREADS": "1",
}


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _block_network() -> None:
    """Refuse any connection that is not to loopback (deepface downloads with requests/gdown)."""
    real_connect = socket.socket.connect

    def connect(self: socket.socket, address: Any) -> Any:
        host = address[0] if isinstance(address, tuple) else address
        if isinstance(host, str) and host not in ("localhost", "::1") and not host.startswith("127."):
            raise OSError(f"deepface_verify.py is offline: refused connection to {address!r}")
        return real_connect(self, address)

    socket.socket.connect = connect  # type: ignore[method-assign]


def _stats(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, int(round(0.9 * (len(ordered) - 1))))]
    return {
        "median": round(statistics.median(ordered), 3),
        "min": round(ordered[0], 3),
        "p90": round(p90, 3),
        "mean": round(statistics.fmean(ordered), 3),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", required=True, help=f"dir with {YUNET_NAME} and {SFACE_NAME}")
    ap.add_argument("--pairs", required=True, help="JSON list of [path1, path2]")
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument(
        "--represent-image", help="image for the DeepFace.represent timing (default: first image of the first pair)"
    )
    ap.add_argument(
        "--ort-threads",
        type=int,
        default=1,
        help="onnxruntime intra/inter-op threads for deepface's SFace session; "
        "0 keeps deepface's default (onnxruntime picks one per physical core)",
    )
    args = ap.parse_args()
    if args.rounds < 1:
        ap.error("--rounds must be >= 1")

    with open(args.pairs, encoding="utf-8") as f:
        pairs = [tuple(p) for p in json.load(f)]
    if not pairs or any(len(p) != 2 for p in pairs):
        ap.error("--pairs must be a non-empty JSON list of [path1, path2]")
    for path in {p for pair in pairs for p in pair}:
        if not os.path.isfile(path):
            ap.error(f"no such image: {path}")
    represent_image = args.represent_image or pairs[0][0]

    # ---- environment, before deepface (and cv2/onnxruntime/numpy) are imported ----
    for key, value in THREAD_ENV.items():
        os.environ[key] = value
    os.environ["CUDA_VISIBLE_DEVICES"] = ""
    os.environ.setdefault("DEEPFACE_LOG_LEVEL", "30")  # warnings and up
    home = tempfile.mkdtemp(prefix="deepface-home-")
    weights = os.path.join(home, ".deepface", "weights")
    os.makedirs(weights)
    models: dict[str, dict[str, str]] = {}
    for name in (YUNET_NAME, SFACE_NAME):
        src = os.path.join(args.models, name)
        if not os.path.isfile(src):
            ap.error(f"--models has no {name}")
        shutil.copyfile(src, os.path.join(weights, name))
        models[name] = {"source": os.path.realpath(src), "sha256": _sha256(src)}
    os.environ["DEEPFACE_HOME"] = home
    _block_network()

    real_stdout = sys.stdout
    try:
        with contextlib.redirect_stdout(sys.stderr):
            result = _run(args, pairs, represent_image, models, weights)
    finally:
        shutil.rmtree(home, ignore_errors=True)
    json.dump(result, real_stdout, indent=1)
    real_stdout.write("\n")
    return 0


def _run(
    args: argparse.Namespace,
    pairs: list[tuple[str, str]],
    represent_image: str,
    models: dict[str, dict[str, str]],
    weights: str,
) -> dict[str, Any]:
    threading: dict[str, Any] = {"env": dict(THREAD_ENV)}

    tf_version = None
    if importlib.util.find_spec("tensorflow") is not None:
        import tensorflow as tf  # only if someone installed it into the peer venv

        tf.config.threading.set_intra_op_parallelism_threads(1)
        tf.config.threading.set_inter_op_parallelism_threads(1)
        tf_version = tf.__version__
        threading["tensorflow"] = "intra_op=1 inter_op=1"

    import cv2
    import numpy as np
    import onnxruntime as ort

    cv2.setNumThreads(1)
    threading["cv2.setNumThreads"] = 1
    threading["cv2.getNumThreads"] = cv2.getNumThreads()

    # deepface builds SFace's onnxruntime session with a bare ort.SessionOptions() (so
    # onnxruntime uses one intra-op thread per physical core, with spinning); it offers no
    # knob for threads, so hand it options that already have them set.
    if args.ort_threads > 0:
        real_session_options = ort.SessionOptions

        def session_options() -> Any:
            so = real_session_options()
            so.intra_op_num_threads = args.ort_threads
            so.inter_op_num_threads = args.ort_threads
            return so

        ort.SessionOptions = session_options  # type: ignore[misc,assignment]

    from deepface import DeepFace
    from deepface import __version__ as deepface_version
    from deepface.commons import backend_utils
    from deepface.modules import modeling

    verify_kwargs = dict(
        model_name="SFace",
        detector_backend="yunet",
        distance_metric="cosine",
        align=True,
        enforce_detection=True,
        silent=True,
    )
    represent_kwargs = dict(model_name="SFace", detector_backend="yunet", align=True, enforce_detection=True)

    # ---- warm-up: builds (and caches) both models, first inference allocations ----
    warmup: dict[str, Any] = {}
    t0, c0 = time.perf_counter(), time.process_time()
    DeepFace.verify(pairs[0][0], pairs[0][1], **verify_kwargs)
    warmup["first_verify_wall_ms"] = round((time.perf_counter() - t0) * 1e3, 3)
    warmup["first_verify_cpu_ms"] = round((time.process_time() - c0) * 1e3, 3)
    for a, b in pairs[1:]:
        DeepFace.verify(a, b, **verify_kwargs)
    DeepFace.represent(represent_image, **represent_kwargs)

    sface = modeling.build_model(task="facial_recognition", model_name="SFace")
    yunet = modeling.build_model(task="face_detector", model_name="yunet")
    sess_opts = sface.model.get_session_options()
    threading["onnxruntime_sface_session"] = {
        "intra_op_num_threads": sess_opts.intra_op_num_threads,
        "inter_op_num_threads": sess_opts.inter_op_num_threads,
        "providers": sface.model.get_providers(),
        "forced_by_script": args.ort_threads > 0,
    }
    threading["yunet"] = f"{type(yunet.model).__name__} (OpenCV dnn, cv2.setNumThreads)"

    # ---- verify ----
    per_pair: list[dict[str, Any]] = []
    walls: list[list[float]] = [[] for _ in pairs]
    cpus: list[list[float]] = [[] for _ in pairs]
    last: list[dict[str, Any]] = [{} for _ in pairs]
    distances: list[list[float]] = [[] for _ in pairs]
    for _ in range(args.rounds):
        for i, (a, b) in enumerate(pairs):
            t0, c0 = time.perf_counter(), time.process_time()
            res = DeepFace.verify(a, b, **verify_kwargs)
            cpus[i].append((time.process_time() - c0) * 1e3)
            walls[i].append((time.perf_counter() - t0) * 1e3)
            last[i] = res
            distances[i].append(float(res["distance"]))
    for i, (a, b) in enumerate(pairs):
        res = last[i]
        per_pair.append(
            {
                "img1": a,
                "img2": b,
                "verified": bool(res["verified"]),
                "distance": round(float(res["distance"]), 6),
                "distance_spread_over_rounds": max(distances[i]) - min(distances[i]),
                "threshold": res["threshold"],
                "facial_areas": res["facial_areas"],
                "wall_ms": _stats(walls[i]),
                "cpu_ms": _stats(cpus[i]),
            }
        )
    all_cpu = [c for row in cpus for c in row]
    all_wall = [w for row in walls for w in row]

    # ---- represent (detect + align + embed one image) ----
    r_wall: list[float] = []
    r_cpu: list[float] = []
    faces = 0
    for _ in range(args.rounds):
        t0, c0 = time.perf_counter(), time.process_time()
        rep = DeepFace.represent(represent_image, **represent_kwargs)
        r_cpu.append((time.process_time() - c0) * 1e3)
        r_wall.append((time.perf_counter() - t0) * 1e3)
        faces = len(rep)

    leftovers = sorted(set(os.listdir(weights)) - {YUNET_NAME, SFACE_NAME})

    return {
        "what": "deepface DeepFace.verify(img1_path, img2_path, model_name='SFace', "
        "detector_backend='yunet', distance_metric='cosine', align=True, "
        "enforce_detection=True) with file paths",
        "rounds": args.rounds,
        "versions": {
            "deepface": deepface_version,
            "deepface_backend_engine": backend_utils.get_backend_engine(),
            "opencv": cv2.__version__,
            "onnxruntime": ort.__version__,
            "numpy": np.__version__,
            "tensorflow": tf_version,
            "python": platform.python_version(),
            "machine": f"{platform.machine()} {os.cpu_count()} cpus",
        },
        "models": models,
        "offline": {"non_loopback_connections": "refused", "files_deepface_added_to_weights": leftovers},
        "threading": threading,
        "warmup": warmup,
        "verify": {
            "pairs": per_pair,
            "all_wall_ms": _stats(all_wall),
            "all_cpu_ms": _stats(all_cpu),
            "cpu_ms_per_verify": round(sum(all_cpu) / len(all_cpu), 3),
        },
        "represent": {
            "image": represent_image,
            "faces": faces,
            "wall_ms": _stats(r_wall),
            "cpu_ms": _stats(r_cpu),
            "cpu_ms_per_call": round(sum(r_cpu) / len(r_cpu), 3),
        },
    }


if __name__ == "__main__":
    sys.exit(main())
