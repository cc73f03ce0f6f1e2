"""Running a service object in-process for a test: started as a task, cancelled (and awaited) on the way out."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any, Protocol, TypeVar


class Runnable(Protocol):
    async def run(self) -> Any: ...


S = TypeVar("S", bound=Runnable)


@contextlib.asynccontextmanager
async def running(service: S) -> AsyncIterator[S]:
    task = asyncio.create_task(service.run())
    try:
        yield service
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@contextlib.asynccontextmanager
async def running_tasks(*coros: Any) -> AsyncIterator[list[asyncio.Task[Any]]]:
    """Coroutines run as tasks for the duration of the block; cancelled and awaited on the way out."""
    tasks = [asyncio.create_task(c) for c in coros]
    try:
        yield tasks
    finally:
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
