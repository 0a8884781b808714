"""Decoding large client messages on a worker thread, so the event loop keeps serving.

protobuf's JSON parser (``json_format``) spends Python time on every element: about 1 s for
2 MiB of one-character array entries, which on the loop would stall every room of the node.
Messages of ``OFFLOAD_BYTES`` or more are decoded on one dedicated thread instead; the loop
thread still gets the interpreter every ``sys.getswitchinterval()`` (5 ms), so it stays
responsive. One thread, not a pool: hostile decodes queue behind each other instead of taking
every core, and small messages (nearly all of them) never leave the loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

OFFLOAD_BYTES = 64 * 1024

T = TypeVar("T")

_executor: ThreadPoolExecutor | None = None


def _decoder() -> ThreadPoolExecutor:
    global _executor
    if _executor is None:
        _executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="roomcast-decode")
    return _executor


async def decode_off_loop(size: int, decode: Callable[[], T]) -> T:
    """``decode()`` here when ``size`` is small, else on the decoding thread."""
    if size < OFFLOAD_BYTES:
        return decode()
    return await asyncio.get_running_loop().run_in_executor(_decoder(), decode)
