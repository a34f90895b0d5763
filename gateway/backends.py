"""What the gateway talks to: the two gRPC services and the object store, as typed app state.

Every gRPC call carries a deadline and the request id as metadata. The minio SDK is
synchronous, so store calls run in threads (``Backends.storage``).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import contextvars
import functools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import grpc
from aiohttp import web
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bws import logs
from bws.audit import AuditLog
from bws.background import BackgroundTasks
from bws.metrics import GATEWAY_ADMITTED, GATEWAY_REFUSED
from bws.settings import GatewaySettings
from bws.storage import ObjectStore
from bws.v1 import enrollment_pb2_grpc, liveness_pb2_grpc

log = logging.getLogger(__name__)
Reply = TypeVar("Reply")
READY_TIMEOUT_SECONDS = 1.5  # how long /readyz waits for each of the services and the store


class Admission:
    """A limit on requests in flight, with a short wait for a free place.

    Past the limit, up to ``limit`` more requests wait at most ``wait_seconds`` each (first
    come, first served) and are then refused; any further request is refused at once. A burst
    that the server clears in a moment is absorbed; a load it cannot keep up with is refused
    quickly instead of making every caller wait longer.
    """

    def __init__(self, limit: int, wait_seconds: float, kind: str = "") -> None:
        self.limit = limit
        self.wait_seconds = wait_seconds
        self.active = 0
        self._admitted = GATEWAY_ADMITTED.labels(kind) if kind else None
        self._waiting: collections.deque[asyncio.Future[None]] = collections.deque()
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def full(self) -> bool:
        """Every place taken and no room to wait: ``enter`` would refuse at once."""
        return self.active >= self.limit and (self.wait_seconds <= 0 or len(self._waiting) >= self.limit)

    async def idle(self) -> None:
        """Return once no request holds a place."""
        await self._idle.wait()

    async def enter(self) -> bool:
        """Take a place (True), or give up after the wait (False). Call ``leave`` after True."""
        if self.active < self.limit and not self._waiting:
            self.active += 1
            self._count()
            self._idle.clear()
            return True
        if self.wait_seconds <= 0 or len(self._waiting) >= self.limit:
            return False
        place: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append(place)
        try:
            await asyncio.wait_for(asyncio.shield(place), self.wait_seconds)
            return True
        except TimeoutError:
            return place.done()  # handed over just as the wait ran out, or not
        except BaseException:  # the request went away while waiting
            if place.done():
                self.leave()
            raise
        finally:
            if not place.done():
                place.cancel()
                self._waiting.remove(place)

    def leave(self) -> None:
        """Give the place to the longest waiting request, or free it."""
        while self._waiting:
            place = self._waiting.popleft()
            if not place.done():
                place.set_result(None)
                return
        self.active -= 1
        self._count()
        if self.active == 0:
            self._idle.set()

    def _count(self) -> None:
        if self._admitted is not None:
            self._admitted.set(self.active)


class DeferredDrops:
    """Deletions of refused calls' samples, put off until the accepted calls are done.

    Deleting at once (a LIST and a DELETE per refused call) takes the store and this process
    from the calls accepted in the same burst: with the deletions put off, their median latency
    fell by a tenth to a quarter (tests/bench/load.py). A drop waits until no call is in
    flight, at most ``max_delay`` seconds. A later call with the same token on this replica has
    the drop done first (``settle``), so it never uses the refused call's samples; one on
    another replica within ``max_delay`` could (the client would have to upload again and call
    within that second).
    """

    def __init__(self, calls: Admission, background: BackgroundTasks, max_delay: float, at_once: int = 2) -> None:
        self._calls = calls
        self._background = background
        self.max_delay = max_delay
        # Under sustained overload, the drops too take their turn: a few at a time.
        self._slots = asyncio.Semaphore(at_once)
        self._pending: dict[str, list[tuple[asyncio.Event, asyncio.Future[None]]]] = {}

    def defer(self, token_id: str, drop: Callable[[], Awaitable[None]]) -> None:
        now = asyncio.Event()
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (now, done)
        self._pending.setdefault(token_id, []).append(entry)

        async def run() -> None:
            waits = [asyncio.ensure_future(now.wait()), asyncio.ensure_future(self._calls.idle())]
            try:
                await asyncio.wait(waits, timeout=self.max_delay, return_when=asyncio.FIRST_COMPLETED)
                async with self._slots:
                    await drop()
            finally:
                for wait in waits:
                    wait.cancel()
                if not done.done():
                    done.set_result(None)
                entries = self._pending.get(token_id, [])
                entries.remove(entry)
                if not entries:
                    self._pending.pop(token_id, None)

        self._background.spawn(run())

    async def settle(self, token_id: str) -> None:
        """Do the token's pending drops now, and wait for them."""
        entries = list(self._pending.get(token_id, []))
        for now, _ in entries:
            now.set()
        for _, done in entries:
            await asyncio.shield(done)


class SampleCounts:
    """How many samples each token holds, as far as this gateway replica has stored them.

    Counting with a LIST on every upload costs the store more than storing the sample. This
    count only grows (calls that consume samples do not lower it), so it never under-counts
    what this replica stored: when it reaches the limit, the upload LISTs to learn the truth.
    Across N replicas a token can hold at most N times the limit.
    """

    def __init__(self) -> None:
        self._counts: dict[str, tuple[int, int]] = {}  # token id -> (count, token expiry)

    def may_be_full(self, token_id: str, limit: int) -> bool:
        return self._counts.get(token_id, (0, 0))[0] >= limit

    def set(self, token_id: str, count: int, expires: int) -> None:
        self._counts[token_id] = (count, expires)

    def add(self, token_id: str, expires: int) -> None:
        self.set(token_id, self._counts.get(token_id, (0, 0))[0] + 1, expires)

    def forget_expired(self, now: float) -> None:
        for token_id in [t for t, (_, expires) in self._counts.items() if expires < now]:
            del self._counts[token_id]


class UnwantedSamples:
    """Samples the client was told were not kept, but that the store may hold after all.

    A store that stalls can still carry out a write it never acknowledged (the request sat in
    its socket), even after the delete that should undo it. A sample whose write or inspection
    failed is therefore left out of this replica's claims (``of``) for as long as its token
    lives, and deleted again and again in the background, 2, 4, 8, ... seconds apart (a missing
    object costs one request). The sweeper removes what is left after the token expired.
    """

    def __init__(self, store: ObjectStore, background: BackgroundTasks, storage: Callable[..., Awaitable[Any]],
                 first_retry_seconds: float = 2.0) -> None:
        self._store = store
        self._background = background
        self._storage = storage
        self.first_retry_seconds = first_retry_seconds
        self._keys: dict[str, tuple[float, set[str]]] = {}  # token id -> (token expiry, sample keys)

    def of(self, token_id: str) -> frozenset[str]:
        return frozenset(self._keys.get(token_id, (0.0, set()))[1])

    async def delete(self, token_id: str, key: str, expires: float, *, failed_write: bool) -> None:
        """Delete a sample (and what was stored beside it). After a failed write (or a failed
        delete) the sample stays unwanted and is deleted again in the background."""
        keys = self._store.sample_objects(key)
        try:
            await self._storage(self._store.delete, keys)
            if not failed_write:
                return
        except Exception:
            pass
        self._keys.setdefault(token_id, (expires, set()))[1].add(key)
        self._background.spawn(self._again(keys, expires))

    async def _again(self, keys: list[str], expires: float) -> None:
        delay = self.first_retry_seconds
        while time.time() + delay < expires:
            await asyncio.sleep(delay)
            with contextlib.suppress(Exception):
                await self._storage(self._store.delete, keys)
            delay *= 2

    def forget_expired(self, now: float) -> None:
        for token_id in [t for t, (expires, _) in self._keys.items() if expires < now]:
            del self._keys[token_id]


@dataclass
class Backends:
    settings: GatewaySettings
    store: ObjectStore
    liveness_channel: grpc.aio.Channel
    enroll_channel: grpc.aio.Channel
    calls: Admission = field(init=False)
    uploads: Admission = field(init=False)
    io: ThreadPoolExecutor = field(init=False)
    background: BackgroundTasks = field(init=False)  # work the replies need not wait for
    sample_counts: SampleCounts = field(init=False)
    refused_samples: DeferredDrops = field(init=False)
    unwanted_samples: UnwantedSamples = field(init=False)
    refusals: logs.CountedEvents = field(init=False)
    audit: AuditLog = field(init=False)  # the audit trail (bws/audit.py), written in batches

    def __post_init__(self) -> None:
        wait = self.settings.admission_wait_seconds
        self.calls = Admission(self.settings.max_concurrent_calls, wait, "call")
        self.uploads = Admission(self.settings.max_concurrent_uploads, wait, "upload")
        self.io = ThreadPoolExecutor(32, thread_name_prefix="storage")
        self.background = BackgroundTasks()
        self.sample_counts = SampleCounts()
        self.refused_samples = DeferredDrops(self.calls, self.background, max_delay=1.0)
        self.unwanted_samples = UnwantedSamples(self.store, self.background, self.storage)
        self.refusals = logs.CountedEvents(log, "refused for overload (too many in flight)")
        self.audit = AuditLog(self.store)

    @contextlib.contextmanager
    def audited(self, api: str, app: str, action: str, bcid: str | None) -> Iterator[dict[str, str]]:
        """Record a call in the audit trail when it ends: with the outcome the block sets
        (``ended["outcome"] = ...``), or else the error that ended it (``http 403``, a gRPC
        status name, ``error``)."""
        ended: dict[str, str] = {}
        try:
            yield ended
        except Exception as error:
            status = getattr(error, "status", None)  # ApiError
            code = getattr(error, "code", None)  # Bws3Error (a StatusCode) or AioRpcError (a method)
            code = code() if callable(code) else code
            ended.setdefault("outcome", f"http {status}" if isinstance(status, int)
                             else code.name if isinstance(code, grpc.StatusCode) else "error")
            raise
        finally:
            self.audit.record(api, app, action, bcid, ended.get("outcome", "error"))

    def refused(self, kind: str) -> None:
        """Count a request refused for overload: the metric, and a line in the log now and then."""
        GATEWAY_REFUSED.labels(kind).inc()
        self.refusals.add(kind)

    @property
    def liveness(self) -> liveness_pb2_grpc.LivenessServiceStub:
        return liveness_pb2_grpc.LivenessServiceStub(self.liveness_channel)

    @property
    def enrollment(self) -> enrollment_pb2_grpc.EnrollmentServiceStub:
        return enrollment_pb2_grpc.EnrollmentServiceStub(self.enroll_channel)

    async def call(self, method: Callable[..., Any], request: Any) -> Any:
        """Call a gRPC method with the deadline and the request id."""
        return await method(
            request,
            timeout=self.settings.grpc_timeout_seconds,
            metadata=((logs.REQUEST_ID_METADATA, logs.request_id.get()),),
        )

    async def storage(self, function: Callable[..., Reply], *args: Any) -> Reply:
        """Run a (blocking) ObjectStore method in a thread of the gateway's own I/O pool.

        The pool is larger than asyncio's default (cores + 4), which under load would queue
        quick store calls behind each other.
        """
        call = functools.partial(contextvars.copy_context().run, function, *args)
        return await asyncio.get_running_loop().run_in_executor(self.io, call)

    async def not_ready(self) -> list[str]:
        """What is not ready: each service's readiness and the object store ([] = all ready).

        All three are asked at once, each for at most ``READY_TIMEOUT_SECONDS``: a probe must get
        its answer in time even when a service or the store hangs.
        """
        async def service(name: str, channel: grpc.aio.Channel) -> str | None:
            try:
                reply = await health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(service="readiness"), timeout=READY_TIMEOUT_SECONDS)
            except grpc.aio.AioRpcError:
                return f"the {name} does not answer"
            return None if reply.status == health_pb2.HealthCheckResponse.SERVING else f"the {name} is not ready"

        async def store() -> str | None:
            try:
                await asyncio.wait_for(self.storage(self.store.ping), READY_TIMEOUT_SECONDS)
            except Exception:
                return "the object store does not answer"
            return None

        found = await asyncio.gather(service("liveness service", self.liveness_channel),
                                     service("enrollment service", self.enroll_channel), store())
        return [problem for problem in found if problem]


async def sweep_stale_samples(backends: Backends) -> None:
    """Delete samples and token state once no token can use them: twice the token lifetime.

    Runs in every gateway replica (deleting is idempotent), every half token lifetime, at most
    every minute.
    """
    lifetime = backends.settings.token_lifetime_seconds
    while True:
        await asyncio.sleep(min(60.0, lifetime / 2))
        backends.sample_counts.forget_expired(time.time())
        backends.unwanted_samples.forget_expired(time.time())
        try:
            removed = await backends.storage(backends.store.delete_stale, 2.0 * lifetime)
        except Exception:
            log.warning("could not sweep stale samples; retrying later", exc_info=True)
            continue
        if removed:
            log.info("swept %d stale sample or token object(s)", removed)


SETTINGS = web.AppKey("settings", GatewaySettings)
BACKENDS = web.AppKey("backends", Backends)


async def backends_ctx(app: web.Application) -> AsyncIterator[None]:
    """Open the channels and the store client for the app's lifetime (a cleanup_ctx)."""
    settings = app[SETTINGS]
    # round_robin over every address the name resolves to (a headless Service's pods).
    options = [("grpc.keepalive_time_ms", 30_000), ("grpc.enable_retries", 1),
               ("grpc.lb_policy_name", "round_robin")]
    liveness = grpc.aio.insecure_channel(settings.liveness_address, options=options)
    enroll = grpc.aio.insecure_channel(settings.enroll_address, options=options)
    app[BACKENDS] = Backends(settings, ObjectStore(settings.storage), liveness, enroll)
    janitor = asyncio.create_task(sweep_stale_samples(app[BACKENDS]))
    auditor = asyncio.create_task(app[BACKENDS].audit.run(settings.audit_flush_seconds))
    yield
    janitor.cancel()
    await app[BACKENDS].background.finish()
    auditor.cancel()  # it writes what is pending before it ends
    await asyncio.gather(auditor, return_exceptions=True)
    app[BACKENDS].refusals.close()
    await liveness.close()
    await enroll.close()
    app[BACKENDS].io.shutdown(wait=True)
