"""Time for the agents package: the running event loop in the server, a fake in unit tests.

`JobOffers` and `Dispatcher` never call ``asyncio.sleep`` or ``wait_for`` with a timeout of their
own: every deadline goes through a `Clock`, so a test can move time forward by hand.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

T = TypeVar("T")


class Timer(Protocol):
    def cancel(self) -> None: ...


class Clock(Protocol):
    """The part of an event loop that deals with time (``asyncio.AbstractEventLoop`` fits)."""

    def time(self) -> float: ...

    def call_soon(self, callback: Callable[[], object]) -> Timer: ...

    def call_later(self, delay: float, callback: Callable[[], object]) -> Timer: ...


class LoopClock:
    """The running event loop's clock (looked up on each call: the loop may start later)."""

    def time(self) -> float:
        return asyncio.get_running_loop().time()

    def call_soon(self, callback: Callable[[], object]) -> Timer:
        return asyncio.get_running_loop().call_soon(callback)

    def call_later(self, delay: float, callback: Callable[[], object]) -> Timer:
        return asyncio.get_running_loop().call_later(delay, callback)


async def within(awaitable: Awaitable[T], timeout: float, clock: Clock) -> T:
    """Await ``awaitable``; cancel it and raise ``TimeoutError`` after ``timeout`` clock seconds."""
    task = asyncio.ensure_future(awaitable)
    expired = False

    def expire() -> None:
        nonlocal expired
        if not task.done():
            expired = True
            task.cancel()

    timer = clock.call_later(timeout, expire)
    try:
        return await task  # cancelling us cancels the task too
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if expired and (current is None or not current.cancelling()):
            raise TimeoutError from None
        raise  # we were cancelled ourselves
    finally:
        timer.cancel()
