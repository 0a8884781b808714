"""Raw clients for attack tests: a loop-latency probe, plain TCP and a WebSocket that never reads.

aiohttp's clients read whatever arrives and complete what they send; these do neither unless
told to, so a test can act as a slow, silent or non-reading client.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import socket
import time
from types import TracebackType

import aiohttp

from roomcast.server import Server
from tests.conftest import url_of


class Probe:
    """Polls ``GET /`` every 20 ms: how long the node's event loop was unavailable (the server
    runs in the test's loop, so a stall delays the probe too).

    ``worst`` is wall-clock time (a request, or oversleeping); ``worst_busy`` is the CPU time
    the loop's thread spent within one poll cycle, which a busy machine does not inflate: work
    that blocks the loop shows in both, a process waiting for a CPU only in ``worst``."""

    INTERVAL = 0.02

    def __init__(self, server: Server) -> None:
        self._url = url_of(server) + "/"
        self.worst = 0.0
        self.worst_busy = 0.0
        self.polls = 0
        self._polled = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Probe:
        self._session = aiohttp.ClientSession()
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._task is not None and self._session is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        await self._session.close()

    async def more_polls(self, count: int = 3, timeout: float = 30.0) -> None:
        """Wait until ``count`` more polls are done (the node is serving again)."""
        target = self.polls + count
        async with asyncio.timeout(timeout):
            while self.polls < target:
                self._polled.clear()
                await self._polled.wait()

    async def _run(self) -> None:
        assert self._session is not None
        while True:
            started, started_busy = time.perf_counter(), time.thread_time()
            async with self._session.get(self._url) as response:
                await response.read()
            answered = time.perf_counter()
            await asyncio.sleep(self.INTERVAL)
            # A stall during the sleep shows as oversleeping.
            late = time.perf_counter() - answered - self.INTERVAL
            self.worst = max(self.worst, answered - started, late)
            self.worst_busy = max(self.worst_busy, time.thread_time() - started_busy)
            self.polls += 1
            self._polled.set()


async def tcp_connect(
    server: Server, receive_buffer: int = 0, limit: int = 4096
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A TCP connection to the server's HTTP port; a small ``receive_buffer`` makes a client
    whose kernel stops accepting data almost at once when it does not read."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if receive_buffer:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", server.port))
    return await asyncio.open_connection(sock=sock, limit=limit)


async def closed_by_peer(reader: asyncio.StreamReader, timeout: float) -> bool:
    """Whether the server closes the connection within ``timeout`` (reads and drops data)."""
    try:
        async with asyncio.timeout(timeout):
            while await reader.read(65536):
                pass
    except TimeoutError:
        return False
    except ConnectionError:
        return True
    return True


async def websocket_upgrade(
    server: Server, path: str, receive_buffer: int = 0
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """An upgraded WebSocket (RFC 6455 §4.1) whose reading is up to the caller."""
    reader, writer = await tcp_connect(server, receive_buffer)
    key = base64.b64encode(os.urandom(16)).decode()
    head = (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    writer.write(head.encode())
    answer = await reader.readuntil(b"\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 101"), answer[:200]
    return reader, writer


def client_frame(payload: bytes, opcode: int = 0x2) -> bytes:
    """One final, masked client frame (RFC 6455 §5.2-5.3)."""
    mask = os.urandom(4)
    size = len(payload)
    if size < 126:
        header = bytes([0x80 | opcode, 0x80 | size])
    elif size < 1 << 16:
        header = bytes([0x80 | opcode, 0x80 | 126]) + size.to_bytes(2, "big")
    else:
        header = bytes([0x80 | opcode, 0x80 | 127]) + size.to_bytes(8, "big")
    key = (mask * (size // 4 + 1))[:size]
    masked = (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(size, "big")
    return header + mask + masked
