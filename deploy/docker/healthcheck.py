"""Container health check for Docker and compose (Kubernetes uses its own probes instead).

    python /app/healthcheck.py http http://127.0.0.1:8080/readyz
    python /app/healthcheck.py grpc 127.0.0.1:50051 readiness

Exit status 0 when the target answers healthy (HTTP 2xx, or gRPC health SERVING), 1 otherwise.
It needs nothing beyond the image's own packages (grpcio-health-checking) and no network
beyond the container's loopback.
"""

from __future__ import annotations

import sys
import urllib.error
import urllib.request

TIMEOUT_SECONDS = 3.0


def check_http(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_SECONDS) as reply:  # noqa: S310 (loopback URL from the image)
            return 200 <= reply.status < 300
    except (urllib.error.URLError, OSError):
        return False


def check_grpc(address: str, service: str) -> bool:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(address) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=TIMEOUT_SECONDS
            )
        except grpc.RpcError:
            return False
    return reply.status == health_pb2.HealthCheckResponse.SERVING


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "http":
        healthy = check_http(argv[1])
    elif len(argv) == 3 and argv[0] == "grpc":
        healthy = check_grpc(argv[1], argv[2])
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
