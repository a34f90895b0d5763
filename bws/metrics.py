"""Prometheus metrics of all three processes, defined in one place.

The gateway serves them at ``/metrics``; each gRPC service on its own metrics port
(``BWS_LIVENESS_METRICS_LISTEN``, ``BWS_ENROLL_METRICS_LISTEN``). Each process only fills the
metrics of its own work.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from prometheus_client import Counter, Gauge, Histogram, start_http_server

# Face inference takes tens to hundreds of milliseconds; overload answers take under one.
_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

HTTP_REQUESTS = Counter("bws_http_requests_total", "HTTP requests by endpoint, method and status",
                        ["endpoint", "method", "status"])
HTTP_LATENCY = Histogram("bws_http_request_duration_seconds", "HTTP request latency by endpoint",
                         ["endpoint"], buckets=_BUCKETS)
RPC_HANDLED = Counter("bws_grpc_server_handled_total", "RPCs handled by method and status code",
                      ["method", "code"])
RPC_LATENCY = Histogram("bws_grpc_server_handling_seconds", "RPC latency by method", ["method"],
                        buckets=_BUCKETS)
ENGINE_PENDING = Gauge("bws_engine_pending_calls", "Calls running on or waiting for a model worker")
ENGINE_REJECTED = Counter("bws_engine_rejected_total", "Calls refused at once because the queue was full")
GATEWAY_ADMITTED = Gauge("bws_gateway_admitted_requests", "Requests holding one of the gateway's places, by kind",
                         ["kind"])
GATEWAY_REFUSED = Counter("bws_gateway_refused_total", "Requests refused at once for overload by the gateway",
                          ["kind"])
STORE_OPERATIONS = Counter("bws_store_operations_total", "Operations on the object store (a list of many pages, "
                           "or a multipart write, counts once), by kind", ["operation"])
LIVENESS_DECISIONS = Counter("bws_liveness_decisions_total", "Liveness decisions by outcome", ["outcome"])


def serve_metrics(listen: str) -> None:
    """Serve /metrics on ``host:port`` from a background thread ("off" disables it)."""
    if listen == "off":
        return
    host, _, port = listen.rpartition(":")
    start_http_server(int(port), addr=host or "127.0.0.1")


class MetricsInterceptor(grpc.aio.ServerInterceptor):
    """Counts and times every unary RPC of a service."""

    async def intercept_service(
        self, continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None or handler.unary_unary is None:
            return handler
        method = details.method.rsplit("/", 1)[-1]
        inner = handler.unary_unary

        async def measured(request: Any, context: grpc.aio.ServicerContext) -> Any:
            began = time.perf_counter()
            code = "OK"
            try:
                return await inner(request, context)
            except BaseException:
                found = context.code()
                code = found.name if isinstance(found, grpc.StatusCode) else "UNKNOWN"
                raise
            finally:
                RPC_HANDLED.labels(method, code).inc()
                RPC_LATENCY.labels(method).observe(time.perf_counter() - began)

        return grpc.unary_unary_rpc_method_handler(
            measured, request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
