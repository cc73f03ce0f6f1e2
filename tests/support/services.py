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
