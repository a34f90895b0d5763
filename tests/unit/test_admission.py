"""Gateway admission: a limit on requests in flight, with a short first-come-first-served wait;
and the deferred deletion of refused calls' samples."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from prometheus_client import REGISTRY

from bws.background import BackgroundTasks
from gateway.backends import Admission, DeferredDrops


async def test_within_the_limit_requests_enter_at_once() -> None:
    admission = Admission(limit=2, wait_seconds=0)
    assert await admission.enter() and await admission.enter()
    assert not await admission.enter()  # no wait allowed: refused at once
    admission.leave()
    assert await admission.enter()


async def test_the_places_held_are_a_metric() -> None:
    admission = Admission(limit=2, wait_seconds=1.0, kind="unit-test")

    def held() -> float | None:
        return REGISTRY.get_sample_value("bws_gateway_admitted_requests", {"kind": "unit-test"})

    await admission.enter()
    await admission.enter()
    assert held() == 2
    waiting = asyncio.create_task(admission.enter())
    await asyncio.sleep(0.01)
    admission.leave()  # handed over to the waiting one: still two held
    assert await waiting and held() == 2
    admission.leave()
    admission.leave()
    assert held() == 0


async def test_a_waiting_request_gets_the_place_that_frees_up() -> None:
    admission = Admission(limit=1, wait_seconds=1.0)
    assert await admission.enter()
    waiting = asyncio.create_task(admission.enter())
    await asyncio.sleep(0.01)
    assert not waiting.done()
    admission.leave()
    assert await waiting
    assert admission.active == 1  # the place was handed over, not freed and retaken


async def test_a_request_waits_no_longer_than_allowed() -> None:
    admission = Admission(limit=1, wait_seconds=0.05)
    assert await admission.enter()
    loop = asyncio.get_running_loop()
    began = loop.time()
    assert not await admission.enter()
    assert loop.time() - began < 1.0
    admission.leave()
    assert admission.active == 0 and await admission.enter()


async def test_waiters_are_served_in_arrival_order_and_a_gone_one_loses_nothing() -> None:
    admission = Admission(limit=3, wait_seconds=1.0)
    for _ in range(3):
        assert await admission.enter()
    order: list[str] = []

    async def request(name: str) -> None:
        if await admission.enter():
            order.append(name)
            admission.leave()

    first = asyncio.create_task(request("first"))
    await asyncio.sleep(0.01)
    gone = asyncio.create_task(request("gone"))
    await asyncio.sleep(0.01)
    last = asyncio.create_task(request("last"))
    await asyncio.sleep(0.01)
    gone.cancel()  # the client went away while waiting
    admission.leave()
    await asyncio.gather(first, last, return_exceptions=True)
    assert order == ["first", "last"]
    assert admission.active == 2  # the place went from one waiter to the next, then was freed


async def test_no_more_requests_wait_than_the_limit() -> None:
    admission = Admission(limit=1, wait_seconds=1.0)
    assert await admission.enter()
    waiting = asyncio.create_task(admission.enter())
    await asyncio.sleep(0.01)
    assert not await admission.enter()  # the one place in the queue is taken: refused at once
    admission.leave()
    assert await waiting


# -- the samples of refused calls ------------------------------------------------------------


def recording_drop(log: list[str], name: str) -> Callable[[], Awaitable[None]]:
    async def drop() -> None:
        log.append(name)
    return drop


async def busy_calls_and_drops(max_delay: float) -> tuple[Admission, DeferredDrops]:
    """One call place, held by an accepted call, and the drops deferred behind it."""
    calls = Admission(limit=1, wait_seconds=0)
    assert await calls.enter()
    return calls, DeferredDrops(calls, BackgroundTasks(), max_delay=max_delay)


async def test_a_refused_calls_samples_go_once_the_accepted_calls_are_done() -> None:
    calls, drops = await busy_calls_and_drops(max_delay=5.0)
    dropped: list[str] = []
    drops.defer("token", recording_drop(dropped, "refused"))
    await asyncio.sleep(0.05)
    assert dropped == []  # the store is left to the accepted call
    calls.leave()
    await asyncio.sleep(0.01)
    assert dropped == ["refused"]


async def test_under_steady_load_the_samples_go_after_the_longest_delay() -> None:
    _, drops = await busy_calls_and_drops(max_delay=0.05)  # the call never leaves
    dropped: list[str] = []
    drops.defer("token", recording_drop(dropped, "refused"))
    await asyncio.sleep(0.2)
    assert dropped == ["refused"]


async def test_a_later_call_with_the_token_has_the_drop_done_first() -> None:
    _, drops = await busy_calls_and_drops(max_delay=5.0)
    dropped: list[str] = []
    drops.defer("token", recording_drop(dropped, "refused"))
    drops.defer("other", recording_drop(dropped, "other"))
    await asyncio.wait_for(drops.settle("token"), 1.0)  # the call on the same token
    assert dropped == ["refused"]
    await drops.settle("unknown")  # nothing pending: returns at once
