"""Data URL parsing and decoding (bws/images.py)."""

from __future__ import annotations

import base64
import json
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
    data = b"\x89PNG\r\n\x1a\n\x00" + bytes([0xfb, 0xff, 0xbf] * 30)  # 9-byte prefix keeps alignment
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
