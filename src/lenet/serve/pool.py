"""The bounded worker pool that runs inference off the event loop.

At most `max_pending` jobs are admitted at once (running or waiting for one of `workers` threads); one
more is answered 503 at once instead of joining an ever-growing queue."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

from .http_errors import ApiError

T = TypeVar("T")


class InferencePool:
    def __init__(self, workers: int, max_pending: int) -> None:
        self.workers, self.max_pending = workers, max_pending
        # Made on first use, so that an app can start again after a stop shut its pool down.
        self._executor: ThreadPoolExecutor | None = None
        self._pending = 0  # jobs admitted and not yet over; touched only on the event loop thread

    def _pool(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="lenet-infer")
        return self._executor

    def _release(self, _future: Future | None = None) -> None:
        self._pending -= 1

    async def run(self, job: Callable[[], T]) -> T:
        """`job()` on a worker thread; ApiError 503 when the pool is full or shutting down."""
        if self._pending >= self.max_pending:
            raise ApiError(503, f"server busy: {self.max_pending} requests already in progress; retry shortly")
        loop = asyncio.get_running_loop()
        self._pending += 1
        try:
            future = self._pool().submit(job)
        except RuntimeError:  # the pool is shutting down with the server
            self._release()
            raise ApiError(503, "server shutting down") from None
        # The slot is freed when the work is really over, not when the client gives up waiting: a client
        # that hangs up must not leave its job running outside the count.
        future.add_done_callback(lambda f: loop.call_soon_threadsafe(self._release, f))
        return await asyncio.wrap_future(future)

    def shutdown(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
