"""Work a reply need not wait for, kept running to its end.

asyncio holds only weak references to tasks, so a task nobody keeps can vanish mid-way; this
keeps them until they are done, and lets a process finish them when it shuts down.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any


class BackgroundTasks:
    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def finish(self, timeout: float = 5.0) -> None:
        """Let the work in progress finish (at shutdown), cancelling what takes longer."""
        if self._tasks:
            _, late = await asyncio.wait(set(self._tasks), timeout=timeout)
            for task in late:
                task.cancel()
