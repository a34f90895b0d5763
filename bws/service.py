"""What both gRPC services share: the server's life cycle and the pool of model workers.

- ``EnginePool`` runs CPU-bound work on a fixed number of worker threads, each with its own
  copy of the models (OpenCV nets and MediaPipe graphs are not safe to share between threads;
  both release the GIL while they compute). Work beyond the workers waits in a bounded queue;
  past it, calls are refused at once with RESOURCE_EXHAUSTED instead of piling up.
- ``serve`` starts a ``grpc.aio`` server with health checking (service names ``liveness``
  and ``readiness``; readiness is NOT_SERVING until the models are warm and storage answers)
  and reflection, and stops gracefully on SIGTERM: in-flight calls finish, new ones are refused.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import queue
import signal
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Generic, TypeVar

import cv2
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from bws import logs
from bws.background import BackgroundTasks
from bws.metrics import ENGINE_PENDING, ENGINE_REJECTED, MetricsInterceptor, serve_metrics
from bws.storage import ObjectStore, StorageUnavailable

log = logging.getLogger(__name__)

Engine = TypeVar("Engine")
Result = TypeVar("Result")

LIVENESS = "liveness"
READINESS = "readiness"


class Overloaded(Exception):
    """Every worker is busy and the queue is full."""


class EnginePool(Generic[Engine]):
    """A fixed set of model workers with a bounded queue in front of them."""

    def __init__(self, factory: Callable[[], Engine], workers: int, max_queue: int) -> None:
        self._factory = factory
        self._workers = workers
        self._limit = workers + max_queue
        self._pending = 0
        self._idle: queue.SimpleQueue[Engine] = queue.SimpleQueue()
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="engine")

    def warm(self) -> None:
        """Load one engine per worker (blocking; call once at start, off the event loop)."""
        cv2.setNumThreads(1)  # one core per worker: the workers are the parallelism
        for _ in range(self._workers):
            self._idle.put(self._factory())

    @property
    def pending(self) -> int:
        """Calls running or waiting."""
        return self._pending

    @property
    def has_idle_worker(self) -> bool:
        """True when work submitted now would start at once, not wait in the queue."""
        return self._pending < self._workers

    async def run(self, work: Callable[..., Result], *args: object) -> Result:
        """Run ``work(engine, *args)`` on a worker; Overloaded when the queue is full."""
        if self._pending >= self._limit:
            ENGINE_REJECTED.inc()
            raise Overloaded()
        self._pending += 1
        ENGINE_PENDING.set(self._pending)
        try:
            call = functools.partial(self._with_engine, work, *args)
            context = contextvars.copy_context()  # keeps the request id in the worker's logs
            return await asyncio.get_running_loop().run_in_executor(self._executor, context.run, call)
        finally:
            self._pending -= 1
            ENGINE_PENDING.set(self._pending)

    def _with_engine(self, work: Callable[..., Result], *args: object) -> Result:
        engine = self._idle.get()
        try:
            return work(engine, *args)
        finally:
            self._idle.put(engine)

    def close(self) -> None:
        """Stop the workers and release the models (MediaPipe graphs must be closed explicitly)."""
        self._executor.shutdown(wait=True, cancel_futures=True)
        while not self._idle.empty():
            close = getattr(self._idle.get(), "close", None)
            if close is not None:
                close()


class SharedAnalyses:
    """What a service computed from a sample (inspection, embedding), shared with the other
    replicas of the service through the store, beside the sample (``BWS_SHARE_ANALYSES``).

    A replica keeps its own analyses in memory; the store is for a call that reaches another
    replica. Writes happen after the reply, and one that fails is only logged: whoever needs
    the object and does not find it computes it again. With sharing off nothing is written
    or read, and a replica without the analysis in memory computes it from the sample.
    """

    def __init__(self, store: ObjectStore, enabled: bool) -> None:
        self.store = store
        self.enabled = enabled
        self.writes = BackgroundTasks()

    def offer(self, key: str, encode: Callable[[], bytes], what: str) -> None:
        """Store ``encode()`` at ``key`` in the background, when sharing is on."""
        if not self.enabled:
            return

        async def write() -> None:
            try:
                await asyncio.to_thread(self.store.put, key, encode())
            except StorageUnavailable:
                log.warning("could not store %s; it will be computed again if needed", what)

        self.writes.spawn(write())

    async def fetch(self, key: str) -> bytes | None:
        """What another replica stored at ``key``; None when sharing is off or nothing is there."""
        if not self.enabled:
            return None
        return await asyncio.to_thread(self.store.get, key)


@contextmanager
def rpc_context(context: grpc.aio.ServicerContext) -> Iterator[None]:
    """Bind the caller's request id to the logs of this call."""
    metadata = dict(context.invocation_metadata() or ())
    token = logs.request_id.set(str(metadata.get(logs.REQUEST_ID_METADATA, "-"))[:64])
    try:
        yield
    finally:
        logs.request_id.reset(token)


async def guarded(context: grpc.aio.ServicerContext, call: Awaitable[Result]) -> Result:
    """Await a servicer's work, mapping faults to gRPC status codes (outcomes stay in replies)."""
    try:
        return await call
    except Overloaded:
        await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "the service is at capacity, try again")
    except StorageUnavailable as error:
        await context.abort(grpc.StatusCode.UNAVAILABLE, str(error))
    raise AssertionError("unreachable")  # context.abort raises


async def serve(
    name: str,
    listen: str,
    register: Callable[[grpc.aio.Server], None],
    service_full_names: list[str],
    warm: Callable[[], None],
    store: ObjectStore,
    metrics_listen: str,
    grace_seconds: float = 10.0,
) -> None:
    """Run a service until SIGTERM or SIGINT."""
    serve_metrics(metrics_listen)
    server = grpc.aio.server(
        interceptors=[MetricsInterceptor()],
        options=[
            # Uploads travel to the inspection with their bytes (up to BWS_MAX_UPLOAD_BYTES).
            ("grpc.max_receive_message_length", 16 * 1024 * 1024),
            # Clients reconnect (and re-resolve) every minute, so that new replicas get traffic.
            ("grpc.max_connection_age_ms", 60_000),
            ("grpc.max_connection_age_grace_ms", 15_000),
        ],
    )
    register(server)
    health = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    reflection.enable_server_reflection(
        [*service_full_names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
         reflection.SERVICE_NAME],
        server,
    )
    if server.add_insecure_port(listen) == 0:
        raise SystemExit(f"{name}: cannot listen on {listen}")
    await server.start()
    serving, not_serving = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING
    await health.set(LIVENESS, serving)
    await health.set(READINESS, not_serving)
    log.info("%s listening on %s; loading models", name, listen)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)

    await loop.run_in_executor(None, warm)
    log.info("%s models loaded", name)

    async def watch_storage() -> None:
        # Readiness follows the store: a replica that cannot reach it should get no traffic.
        ready: bool | None = None
        prepared = False
        while True:
            try:
                await asyncio.to_thread(store.ping if prepared else store.ensure_bucket)
                prepared = now_ready = True
            except StorageUnavailable as error:
                now_ready = False
                if ready is not False:
                    log.warning("not ready: %s", error)
            if now_ready != ready:
                ready = now_ready
                await health.set(READINESS, serving if ready else not_serving)
                await health.set("", serving if ready else not_serving)
                log.info("%s readiness: %s", name, "SERVING" if ready else "NOT_SERVING")
            await asyncio.sleep(2.0 if ready else 0.5)

    watcher = asyncio.create_task(watch_storage())
    await stop.wait()
    log.info("%s stopping: finishing in-flight calls (up to %.0f s)", name, grace_seconds)
    watcher.cancel()
    await health.enter_graceful_shutdown()
    await server.stop(grace_seconds)
    log.info("%s stopped", name)
