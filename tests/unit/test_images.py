"""Data URL parsing and decoding (bws/images.py)."""

from __future__ import annotations

import base64
import io
import json
import struct
import subprocess
import sys
import zlib
from pathlib import Path
from urllib.parse import quote

import cv2
import numpy as np
import pytest

from bws import images

PNG = cv2.imencode(".png", np.full((64, 64, 3), 128, np.uint8))[1].tobytes()
URL = images.to_data_url(PNG)


@pytest.mark.parametrize("body", [
    URL.encode(),
    json.dumps(URL).encode(),
    quote(URL, safe="").encode(),
    ("image=" + quote(URL, safe="")).encode(),
    URL.replace("+", " ").encode(),  # a form decoder already turned '+' into spaces
], ids=["raw", "json", "percent-encoded", "form-field", "plus-as-space"])
def test_upload_body_formats_all_give_the_same_image(body: bytes) -> None:
    assert images.parse_upload_body(body).data == PNG


def test_base64_with_plus_signs_survives() -> None:
    data = PNG[:24] + bytes([0xfb, 0xff, 0xbf] * 30)  # the header up to the size; 24 bytes keep alignment
    assert "+" in base64.b64encode(data).decode()
    assert images.parse_data_url(images.to_data_url(data)).data == data


@pytest.mark.parametrize("url", [
    "data:image/png,notbase64", "data:image/svg+xml;base64,PHN2Zz4=", "image/png;base64,AAAA",
    "data:image/png;base64,", "data:image/png;base64,@@@@",
])
def test_bad_data_urls_are_invalid_images(url: str) -> None:
    with pytest.raises(images.InvalidImage):
        images.parse_data_url(url)


def test_decode_refuses_truncated_and_tiny_images() -> None:
    with pytest.raises(images.InvalidImage):
        images.decode(PNG[: len(PNG) // 2])
    tiny = cv2.imencode(".png", np.zeros((8, 8, 3), np.uint8))[1].tobytes()
    with pytest.raises(images.InvalidImage, match="too small"):
        images.decode(tiny)


def test_decode_gives_bgr_pixels() -> None:
    assert images.decode(PNG).shape == (64, 64, 3)


@pytest.mark.parametrize("ext", [".png", ".jpg", ".bmp", ".tiff"])
def test_the_size_is_read_from_the_header(ext: str) -> None:
    data = cv2.imencode(ext, np.full((50, 40, 3), 90, np.uint8))[1].tobytes()
    assert images.image_size(data) == (40, 50)


def test_the_size_of_a_gif_and_of_a_core_header_bmp() -> None:
    gif = b"GIF89a" + struct.pack("<HH", 640, 480) + b"\x00" * 20
    assert images.image_size(gif) == (640, 480)
    core_bmp = b"BM" + b"\x00" * 12 + struct.pack("<IHH", 12, 300, 200) + b"\x00" * 8
    assert images.image_size(core_bmp) == (300, 200)


def png_bomb(width: int, height: int) -> bytes:
    """A small PNG that decodes to ``width``×``height`` grey pixels (a decompression bomb)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    packer = zlib.compressobj(9)
    row = bytes(width + 1)  # filter byte and the row's pixels
    idat = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def tiff_claiming(width: int, height: int) -> bytes:
    entries = [(256, 4, 1, width), (257, 4, 1, height), (258, 3, 1, 8)]
    ifd = struct.pack("<H", len(entries)) + b"".join(struct.pack("<HHII", *e) for e in entries) + b"\x00" * 4
    return b"II*\x00" + struct.pack("<I", 8) + ifd + b"\x00" * 64


def test_a_decompression_bomb_is_refused_from_its_header_without_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    bomb = png_bomb(20_000, 2_500)  # 50 megapixels in a few kilobytes
    assert len(bomb) < 100_000 and images.image_size(bomb) == (20_000, 2_500)

    def never(*args: object) -> None:
        raise AssertionError("decoded")

    monkeypatch.setattr(images.cv2, "imdecode", never)
    for data in (bomb, tiff_claiming(20_000, 20_000)):
        with pytest.raises(images.InvalidImage, match="too large"):
            images.decode(data)
        with pytest.raises(images.InvalidImage, match="too large"):
            images.parse_data_url(images.to_data_url(data))


@pytest.mark.parametrize("data", [b"\x89PNG\r\n\x1a\n\x00\x00", b"\xff\xd8\xff\xda\x00\x02", b"II*\x00\xff\xff\xff\x7f",
                                  b"BM\x00"], ids=["png", "jpeg-scan-first", "tiff-offset", "bmp"])
def test_a_header_that_does_not_give_the_size_is_refused(data: bytes) -> None:
    with pytest.raises(images.InvalidImage, match="header"):
        images.decode(data)


def test_opencv_is_limited_too_in_every_process_that_decodes() -> None:
    """The second line: each process's package sets OpenCV's pixel limit before cv2 is imported,
    so OpenCV itself refuses the bomb (at once, without the memory)."""
    bomb = png_bomb(20_000, 2_500)
    for package in ("gateway", "liveness_service", "enroll_service"):
        # VmHWM, not ru_maxrss: Linux keeps the latter across exec, so it would count this
        # test process's own memory, of which the child started as a copy.
        script = (f"import {package}, sys, cv2, numpy\n"
                  "try:\n"
                  "    refused = cv2.imdecode(numpy.frombuffer(sys.stdin.buffer.read(), numpy.uint8), 1) is None\n"
                  "except cv2.error:\n"
                  "    refused = True\n"
                  "peak = [line for line in open('/proc/self/status') if line.startswith('VmHWM')][0]\n"
                  "print(refused, int(peak.split()[1]) // 1024)")
        done = subprocess.run([sys.executable, "-c", script], input=bomb, capture_output=True, check=True,
                              cwd=Path(__file__).resolve().parents[2])
        refused, peak_mb = done.stdout.split()
        assert refused == b"True" and int(peak_mb) < 500, (package, done.stdout, done.stderr[-300:])


def test_a_phone_jpeg_stored_rotated_is_decoded_upright() -> None:
    """Orientation 6: the camera stored the picture turned a quarter left; viewers turn it back."""
    from PIL import Image

    upright = np.zeros((120, 80, 3), np.uint8)
    upright[:20] = 255  # a white band at the top
    stored = cv2.rotate(upright, cv2.ROTATE_90_COUNTERCLOCKWISE)
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    Image.fromarray(stored).save(buffer, "JPEG", quality=95, exif=exif.tobytes())
    decoded = images.decode(buffer.getvalue())
    assert decoded.shape[:2] == (120, 80)
    assert decoded[:20].mean() > 200 and decoded[40:].mean() < 50
