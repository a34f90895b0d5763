"""Video liveness's frame sampling (liveness_service/video.py): bounded work whatever the file
says about itself, and the frames with the widest head poses."""

from __future__ import annotations

import tempfile
from pathlib import Path

import cv2
import numpy as np
import pytest

from bws.faces import FaceMesh
from liveness_service import video


class Capture:
    """A video as OpenCV's capture shows it: declared size and frame count, and the frames."""

    def __init__(self, width: int, height: int, declared: float, available: int, real: tuple[int, int] | None = None):
        self.width, self.height, self.declared, self.available = width, height, declared, available
        self.real = real or (height, width)
        self.grabs = 0

    def isOpened(self) -> bool:  # noqa: N802 (OpenCV's name)
        return True

    def get(self, prop: int) -> float:
        return {cv2.CAP_PROP_FRAME_WIDTH: self.width, cv2.CAP_PROP_FRAME_HEIGHT: self.height,
                cv2.CAP_PROP_FRAME_COUNT: self.declared}[prop]

    def grab(self) -> bool:
        self.grabs += 1
        return self.grabs <= self.available

    def retrieve(self) -> tuple[bool, np.ndarray]:
        return True, np.zeros((*self.real, 3), np.uint8)


def test_frames_above_the_pixel_limit_are_refused_before_any_is_decoded() -> None:
    capture = Capture(8000, 8000, 10, 10)
    with pytest.raises(video.InvalidVideo, match="megapixels"):
        video._read(capture, 12)  # type: ignore[arg-type]
    assert capture.grabs == 0


def test_a_frame_larger_than_declared_is_refused() -> None:
    with pytest.raises(video.InvalidVideo, match="larger than the container says"):
        video._read(Capture(64, 64, 10, 10, real=(5000, 5000)), 12)  # type: ignore[arg-type]


@pytest.mark.parametrize("declared", [1e9, 0, -1])
def test_no_more_than_max_frames_are_read_whatever_the_count_says(declared: float) -> None:
    capture = Capture(64, 64, declared, 10**9)
    frames = video._read(capture, 12)  # type: ignore[arg-type]
    assert capture.grabs <= video.MAX_FRAMES_READ and len(frames) == 12


def test_decoding_stops_at_its_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(video, "MAX_DECODE_SECONDS", -1.0)
    capture = Capture(64, 64, 100, 100)
    with pytest.raises(video.InvalidVideo, match="no frame"):
        video._read(capture, 12)  # type: ignore[arg-type]
    assert capture.grabs == 0


def test_large_frames_are_scaled_down() -> None:
    [frame, *_] = video._read(Capture(3000, 2000, 3, 3), 3)  # type: ignore[arg-type]
    assert max(frame.image.shape[:2]) == video.MAX_SIDE


def test_a_real_video_is_sampled_evenly_from_first_to_last_frame() -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "v.mp4"
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (96, 64))
        for i in range(30):
            writer.write(np.full((64, 96, 3), i * 8, np.uint8))
        writer.release()
        frames = video.sample_frames(path.read_bytes())
    numbers = [f.number for f in frames]
    assert len(numbers) == 12 and numbers[0] == 0 and numbers[-1] == 29 and numbers == sorted(numbers)


def test_garbage_is_not_a_video() -> None:
    with pytest.raises(video.InvalidVideo):
        video.sample_frames(b"\x00" * 1000)


def _mesh(yaw: float, pitch: float) -> FaceMesh:
    rotation = cv2.Rodrigues(np.radians([pitch, yaw, 0.0]))[0]
    transform = np.eye(4)
    transform[:3, :3] = rotation
    return FaceMesh(points=np.zeros((478, 3)), transform=transform)


def test_the_frames_with_the_widest_poses_are_chosen_in_order() -> None:
    yaws = [0, 2, -20, 3, 1, 25, 4, 0, 2, 1, 3, 2]
    meshes: list[FaceMesh | None] = [_mesh(y, 0) for y in yaws]
    meshes[5] = None  # no usable face in the frame turned most
    chosen = video.widest_poses(meshes, count=3)
    assert chosen == sorted(chosen) and 2 in chosen and 5 not in chosen and len(chosen) == 3
    assert video.widest_poses([_mesh(0, 0), None], count=8) == [0]
