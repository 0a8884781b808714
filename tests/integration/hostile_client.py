"""Raw clients and payloads for attack tests (and bench/hostile): a loop-latency probe, plain TCP,
a WebSocket that never reads, the review's hostile request bodies and a spoofed ICE nomination.

aiohttp's clients read whatever arrives and complete what they send; these do neither unless
told to, so a test can act as a slow, silent or non-reading client. Everything takes a
`Listening` (an in-process `Server`, or any object with the port of one in another process).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from types import TracebackType
from typing import Protocol

import aiohttp
from aioice import stun
from livekit.protocol import rtc

from roomcast.loadtest.participant import LoadParticipant
from roomcast.loadtest.runner import LoadTest, LoadTestConfig
from roomcast.media.demux import PacketClass, classify


class Listening(Protocol):
    """A Roomcast server on 127.0.0.1: `roomcast.server.Server`, or a subprocess's port."""

    @property
    def port(self) -> int: ...


class Probe:
    """Polls ``GET /`` every 20 ms: how long the node's event loop was unavailable (the server
    runs in the test's loop, so a stall delays the probe too).

    ``worst`` is wall-clock time (a request, or oversleeping); ``worst_busy`` is the CPU time
    the loop's thread spent within one poll cycle, which a busy machine does not inflate: work
    that blocks the loop shows in both, a process waiting for a CPU only in ``worst``."""

    INTERVAL = 0.02

    def __init__(self, server: Listening) -> None:
        self._url = f"http://127.0.0.1:{server.port}/"
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
    server: Listening, receive_buffer: int = 0, limit: int = 4096
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
    server: Listening, path: str, receive_buffer: int = 0
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


# -- payloads -----------------------------------------------------------------------------------


def many_names(size: int) -> bytes:
    """A ListRoomsRequest of ``size`` bytes of one-letter names: the costliest JSON per byte."""
    count = (size - 12) // 4
    return b'{"names":[' + b",".join([b'"a"'] * count) + b"]}"


def trickle(size: int) -> rtc.SignalRequest:
    """A candidate the room's node ignores (not JSON), as large as the attacker likes."""
    return rtc.SignalRequest(
        trickle=rtc.TrickleRequest(candidateInit="x" * size, target=rtc.SignalTarget.SUBSCRIBER)
    )


def spoofed_nomination(server_ufrag: str, server_pwd: str) -> bytes:
    """An authenticated ICE Binding request with USE-CANDIDATE (RFC 8445 §7.1.2), signed with
    the credentials from the server's offer: sent from a spoofed source it asks the server to
    move the media there (security review M2)."""
    request = stun.Message(stun.Method.BINDING, stun.Class.REQUEST)
    request.attributes["USERNAME"] = f"{server_ufrag}:mallory"
    request.attributes["PRIORITY"] = 1853824767
    request.attributes["ICE-CONTROLLING"] = 0x0102030405060708
    request.attributes["USE-CANDIDATE"] = None
    request.add_message_integrity(server_pwd.encode())
    return bytes(request)


class Victim(asyncio.DatagramProtocol):
    """A UDP socket that only counts what it is sent, by RFC 7983 class: the address a
    spoofed nomination names."""

    def __init__(self) -> None:
        self.received: Counter[PacketClass] = Counter()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if data:
            self.received[classify(data[0])] += 1


@dataclass
class Reflection:
    """What one spoofed nomination achieved (see `reflect_media`)."""

    victim: Counter[PacketClass] = field(default_factory=Counter)  # datagrams the victim got
    before: int = 0  # media packets the attacker had received when it spoofed
    after: int = 0  # ... at the end of the window
    connected: bool = False  # the attacker's own transport was still up at the end
    error: str | None = None  # the attacker's client failed


def packets_received(participant: LoadParticipant) -> int:
    return sum(track.packets for track in participant.received.values())


async def subscriber_with_media(test: LoadTest, timeout: float = 20.0) -> LoadParticipant:
    """The subscriber, once it receives audio and video (the load test drives them)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        subscriber = next((p for p in test.participants if p.role.subscribe), None)
        if subscriber is not None:
            if subscriber.error is not None:
                raise RuntimeError(subscriber.error)
            if packets_received(subscriber) >= 100 and len(subscriber.received) == 2:
                return subscriber
        if loop.time() > deadline:
            raise TimeoutError(f"no media after {timeout:g} s")
        await asyncio.sleep(0.05)


@asynccontextmanager
async def running(config: LoadTestConfig) -> AsyncIterator[LoadTest]:
    """A load test running in the background until the block ends."""
    test = LoadTest(config)
    stop = asyncio.Event()
    task = asyncio.ensure_future(test.run(stop=stop, progress_interval=0.2))
    try:
        yield test
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)


async def reflect_media(config: LoadTestConfig, window: float) -> Reflection:
    """Security review M2: a subscriber (the load test's, which `config` must have, with a
    publisher of audio and video) sends one spoofed nomination naming a victim socket, then
    keeps its consent checks going from its real socket for ``window`` seconds."""
    loop = asyncio.get_running_loop()
    victim = Victim()
    udp, _ = await loop.create_datagram_endpoint(lambda: victim, local_addr=("127.0.0.1", 0))
    result = Reflection(victim=victim.received)
    try:
        async with running(config) as test:
            mallory = await subscriber_with_media(test)
            ice = mallory.subscriber.ice
            assert ice.selected is not None and ice.remote_ufrag and ice.remote_pwd
            # From here on Mallory's consent checks carry no USE-CANDIDATE (ICE-CONTROLLED
            # instead, which an ICE-lite server answers all the same).
            ice.controlling = False
            udp.sendto(spoofed_nomination(ice.remote_ufrag, ice.remote_pwd), ice.selected)
            result.before = packets_received(mallory)
            await asyncio.sleep(window)  # Mallory's client keeps checking from its socket
            result.after = packets_received(mallory)
            result.error = mallory.error
            result.connected = mallory.subscriber.connected
    finally:
        udp.close()
    return result
