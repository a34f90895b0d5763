"""A BWS 3 client as BioID's samples are: a JWT signed with the client key, REST calls with raw
JSON bodies (the exact proto3 JSON names), gRPC calls by their full method names."""

from __future__ import annotations

import base64
import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

import grpc
import jwt

from bws.bws3 import bws_pb2
from bws.bws3 import facerecognition_pb2 as fr
from tests.support.client import Reply

RESPONSES = {"Enroll": fr.FaceEnrollmentResponse, "Verify": fr.FaceVerificationResponse,
             "Search": fr.FaceSearchResponse, "SetTemplateTags": fr.SetTemplateTagsResponse,
             "GetTemplateStatus": fr.FaceTemplateStatus, "DeleteTemplate": fr.DeleteTemplateResponse,
             "LivenessDetection": bws_pb2.LivenessDetectionResponse,
             "VideoLivenessDetection": bws_pb2.LivenessDetectionResponse,
             "PhotoVerify": bws_pb2.PhotoVerifyResponse}


def sign(client_id: str, key: bytes, *, lifetime: int = 300, algorithm: str = "HS512", **claims: Any) -> str:
    """A JWT as BioID's BWSTools make one: sub = iss = client id, aud BWS, iat, nbf, exp."""
    now = int(time.time())
    body = {"sub": client_id, "iss": client_id, "aud": "BWS", "iat": now, "nbf": now, "exp": now + lifetime,
            **claims}
    return jwt.encode({k: v for k, v in body.items() if v is not None}, key, algorithm=algorithm)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@dataclass
class Bws3Client:
    url: str
    grpc_target: str
    client_id: str
    key: bytes

    def jwt(self) -> str:
        return sign(self.client_id, self.key)

    def rest(self, method: str, path: str, body: Any = None, *, token: str | None = None,
             headers: dict[str, str] | None = None, raw: bytes | None = None) -> Reply:
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        sent = {"Authorization": f"Bearer {token if token is not None else self.jwt()}"} | (headers or {})
        if data is not None:
            sent.setdefault("Content-Type", "application/json")
        request = urllib.request.Request(self.url + path, data=data, method=method, headers=sent)
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return Reply(response.status, dict(response.headers), response.read())
        except urllib.error.HTTPError as error:
            return Reply(error.code, dict(error.headers), error.read())

    def enroll(self, class_id: int, *images: bytes) -> Reply:
        return self.rest("POST", f"/api/face/v1/enroll/{class_id}", [{"image": b64(i)} for i in images])

    def verify(self, class_id: int, image: bytes) -> Reply:
        return self.rest("POST", f"/api/face/v1/verify/{class_id}", {"image": b64(image)})

    def search(self, *images: bytes, tags: list[str] | None = None, top_matches: bool = False) -> Reply:
        return self.rest("POST", "/api/face/v1/search", {"images": [{"image": b64(i)} for i in images],
                                                         "tags": tags or [], "topMatches": top_matches})

    def set_tags(self, class_id: int, tags: list[str]) -> Reply:
        return self.rest("PUT", f"/api/face/v1/template/{class_id}/tags", tags)

    def status(self, class_id: int, thumbnails: bool = False) -> Reply:
        return self.rest("GET", f"/api/face/v1/template/status/{class_id}?downloadThumbnails={str(thumbnails).lower()}")

    def delete(self, class_id: int) -> Reply:
        return self.rest("DELETE", f"/api/face/v1/template/{class_id}")

    def grpc(self, method: str, request: Any, *, token: str | None = None, service: str = "FaceRecognition",
             metadata: tuple[tuple[str, str], ...] = ()) -> tuple[Any, grpc.Call]:
        """Call a method of bioid.services.v1.{service}; returns (response, call) or raises grpc.RpcError."""
        with grpc.insecure_channel(self.grpc_target, options=[("grpc.max_receive_message_length",
                                                                64 * 1024 * 1024)]) as channel:
            stub = channel.unary_unary(f"/bioid.services.v1.{service}/{method}",
                                       request_serializer=type(request).SerializeToString,
                                       response_deserializer=RESPONSES[method].FromString)
            auth = (("authorization", f"Bearer {token if token is not None else self.jwt()}"),)
            return stub.with_call(request, metadata=auth + metadata, timeout=60)
