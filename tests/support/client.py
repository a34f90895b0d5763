"""A small synchronous BWS client for end-to-end tests and benchmarks (standard library and pybase64)."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

import pybase64


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode()


def claims_of(token: str) -> dict[str, Any]:
    """Decode a JWT's payload without verifying it, as BWS clients do."""
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


@dataclass
class BwsClient:
    url: str
    app_id: str
    app_secret: str

    def request(self, method: str, path: str, *, body: bytes | None = None,
                headers: dict[str, str] | None = None, timeout: float = 60) -> Reply:
        req = urllib.request.Request(self.url + path, data=body, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as response:
                return Reply(response.status, dict(response.headers), response.read())
        except urllib.error.HTTPError as error:
            return Reply(error.code, dict(error.headers), error.read())

    def basic(self, app_id: str | None = None, secret: str | None = None) -> dict[str, str]:
        raw = f"{app_id or self.app_id}:{secret or self.app_secret}".encode()
        return {"Authorization": "Basic " + base64.b64encode(raw).decode()}

    def token_reply(self, **params: Any) -> Reply:
        params = {"id": self.app_id, **params}
        query = urllib.parse.urlencode({k: str(v).lower() if isinstance(v, bool) else v for k, v in params.items()})
        return self.request("GET", f"/extension/token?{query}", headers=self.basic())

    def token(self, **params: Any) -> str:
        reply = self.token_reply(**params)
        assert reply.status == 200, reply.body
        return reply.text

    def upload(self, token: str, image: bytes, *, tag: str = "any", index: int = 0,
               as_type: str = "text/plain", scheme: str = "Bearer") -> Reply:
        media = b"image/png" if image.startswith(b"\x89PNG") else b"image/jpeg"
        # pybase64: the benchmarks run this client beside the server, so its CPU counts too.
        data_url = b"data:" + media + b";base64," + pybase64.b64encode(image)
        body = json.dumps(data_url.decode()).encode() if as_type == "application/json" else data_url
        return self.request(
            "POST", f"/extension/upload?tag={tag}&index={index}&trait=Face", body=body,
            headers={"Authorization": f"{scheme} {token}", "Content-Type": as_type},
        )

    def upload_all(self, token: str, frames: list[bytes], tags: list[str]) -> None:
        for index, (frame, tag) in enumerate(zip(frames, tags, strict=True)):
            reply = self.upload(token, frame, tag=tag, index=index)
            assert reply.status == 200 and reply.json["Accepted"], (index, tag, reply.body)

    def enroll(self, token: str, *, livedetection: bool | str | None = None,
               accept: str | None = None) -> Reply:
        return self.call("enroll", token, livedetection=livedetection, accept=accept)  # type: ignore[arg-type]

    def call(self, endpoint: str, token: str, *, livedetection: bool | str | None = None,
             accept: str | None = None, scheme: str = "Bearer") -> Reply:
        """A biometric call (enroll, verify, identify, livenessdetection) with a token."""
        query = "" if livedetection is None else f"?livedetection={str(livedetection).lower()}"
        headers = {"Authorization": f"{scheme} {token}"} | ({"Accept": accept} if accept else {})
        return self.request("GET", f"/extension/{endpoint}{query}", headers=headers)

    def basic_call(self, method: str, path: str, body: bytes | None = None,
                   content_type: str = "application/json") -> Reply:
        headers = self.basic() | ({"Content-Type": content_type} if body is not None else {})
        return self.request(method, path, body=body, headers=headers)
