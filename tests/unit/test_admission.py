"""Gateway admission: a limit on requests in flight, with a short first-come-first-served wait."""

from __future__ import annotations

import asyncio

from gateway.backends import Admission


async def test_within_the_limit_requests_enter_at_once() -> None:
    admission = Admission(limit=2, wait_seconds=0)
    assert await admission.enter() and await admission.enter()
    assert not await admission.enter()  # no wait allowed: refused at once
    admission.leave()
    assert await admission.enter()


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
