"""The outgoing half of a signalling WebSocket: SignalResponses queued and written in order."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable

from aiohttp import web
from google.protobuf import json_format
from livekit.protocol import rtc

# WebSocket close codes (RFC 6455 §7.4.1).
CLOSE_NORMAL = 1000
CLOSE_POLICY_VIOLATION = 1008


class WebSocketSignalSink:
    """Queues SignalResponses and writes them in order from one task (never blocks callers).

    Responses are serialised when queued, and the queue is bounded in bytes: when a client
    reads slower than its room talks to it and the backlog passes ``max_queued_bytes``, the
    queue is dropped, ``on_overflow`` is called and the connection is aborted (a client that
    does not read cannot take a close frame either). The response being written does not
    count, and an empty queue takes one response of any size, so a large JoinResponse still
    goes out. A bound of 0 disables the check.
    """

    def __init__(
        self,
        ws: web.WebSocketResponse,
        max_queued_bytes: int = 0,
        on_overflow: Callable[[int], None] | None = None,
        abort: Callable[[], None] | None = None,
    ) -> None:
        self._ws = ws
        self._queue: asyncio.Queue[bytes | tuple[int, str]] = asyncio.Queue()
        self._queued_bytes = 0
        self._max_queued_bytes = max_queued_bytes
        self._on_overflow = on_overflow
        self._abort = abort
        self._writer = asyncio.get_running_loop().create_task(self._write_loop())
        self._closing = False
        self.json_mode = False

    @property
    def queued_bytes(self) -> int:
        return self._queued_bytes

    def send(self, response: rtc.SignalResponse) -> None:
        if self._closing:
            return
        data = response.SerializeToString()
        backlog = self._queued_bytes
        if self._max_queued_bytes and backlog and backlog + len(data) > self._max_queued_bytes:
            self._overflow(backlog + len(data))
            return
        self._queued_bytes += len(data)
        self._queue.put_nowait(data)

    def _overflow(self, size: int) -> None:
        self._closing = True
        while not self._queue.empty():  # free the backlog now, not when the socket dies
            self._queue.get_nowait()
        self._queued_bytes = 0
        self._writer.cancel()
        if self._on_overflow is not None:
            self._on_overflow(size)
        if self._abort is not None:
            self._abort()

    def close(self, code: int = CLOSE_NORMAL, message: str = "") -> None:
        """Flush what is queued, then close the WebSocket."""
        if not self._closing:
            self._closing = True
            self._queue.put_nowait((code, message))

    @property
    def closed(self) -> bool:
        return self._closing or self._ws.closed

    async def _write_loop(self) -> None:
        while True:
            item = await self._queue.get()
            if isinstance(item, tuple):
                code, message = item
                with contextlib.suppress(Exception):
                    await self._ws.close(code=code, message=message.encode()[:120])
                return
            self._queued_bytes -= len(item)
            try:
                if self.json_mode:
                    response = rtc.SignalResponse.FromString(item)
                    await self._ws.send_str(json.dumps(json_format.MessageToDict(response)))
                else:
                    await self._ws.send_bytes(item)
            except (ConnectionError, RuntimeError):
                self._closing = True
                return

    async def drain_and_close(self, timeout: float = 0.25) -> None:
        self.close()
        with contextlib.suppress(TimeoutError, asyncio.CancelledError):
            await asyncio.wait_for(asyncio.shield(self._writer), timeout)
        if not self._writer.done():
            self._writer.cancel()
        if not self._ws.closed:
            with contextlib.suppress(Exception):
                await self._ws.close()
