"""Helpers for data tracks with the official Python SDK (`publish_data_track`, `try_push`,
`RemoteDataTrack.subscribe()`), shared by the data-track tests and the bench.

Frames carry their index: 4 bytes big-endian, then the index's low byte repeated up to the
frame size (the browser helpers in tests/browser/page/data_tracks.js write the same), so a
receiver can tell frames apart and check that none was altered. The user timestamp of frame
`i` is `TIMESTAMP_BASE + i`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from livekit import rtc

from roomcast.server import Server
from tests.conftest import url_of
from tests.integration.sdk import EVENT_TIMEOUT, ROOM_EVENTS, Events, join_token

TIMESTAMP_BASE = 1_000_000
DATA_TRACK_EVENTS = [*ROOM_EVENTS, "data_track_published", "data_track_unpublished"]


def frame_payload(index: int, size: int) -> bytes:
    return index.to_bytes(4, "big") + bytes([index & 0xFF]) * max(0, size - 4)


@dataclass(frozen=True)
class Frame:
    index: int
    size: int
    intact: bool  # every byte after the index is the index's low byte
    user_timestamp: int | None


def read_frame(frame: rtc.DataTrackFrame) -> Frame:
    payload = frame.payload
    index = int.from_bytes(payload[:4], "big")
    intact = payload[4:] == bytes([index & 0xFF]) * (len(payload) - 4)
    return Frame(index, len(payload), intact, frame.user_timestamp)


class FrameReader:
    """Subscribes to a remote data track and collects its frames in the background."""

    def __init__(self, track: rtc.RemoteDataTrack) -> None:
        self.track = track
        self.frames: list[Frame] = []
        self.error: str | None = None
        self.ended = False
        self._changed = asyncio.Event()
        self._stream = track.subscribe()
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        try:
            async for frame in self._stream:
                self.frames.append(read_frame(frame))
                self._changed.set()
        except rtc.SubscribeDataTrackError as exc:
            self.error = exc.message
        self.ended = True
        self._changed.set()

    async def wait_frames(self, count: int, timeout: float = EVENT_TIMEOUT) -> list[Frame]:
        """At least `count` frames (all received so far)."""

        async def enough() -> list[Frame]:
            while len(self.frames) < count:
                if self.ended:
                    raise AssertionError(f"stream ended after {len(self.frames)}: {self.error}")
                self._changed.clear()
                await self._changed.wait()
            return list(self.frames)

        return await asyncio.wait_for(enough(), timeout)

    async def wait_end(self, timeout: float = EVENT_TIMEOUT) -> None:
        async def ended() -> None:
            while not self.ended:
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(ended(), timeout)

    async def close(self) -> None:
        self._stream.close()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


class Pusher:
    """Pushes frames of `size` bytes on a local data track every `interval` seconds."""

    def __init__(
        self, track: rtc.LocalDataTrack, size: int, interval: float = 0.1, start: int = 0
    ) -> None:
        self.track = track
        self.size = size
        self.interval = interval
        self.next_index = start
        self.errors: list[str] = []
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            index = self.next_index
            frame = rtc.DataTrackFrame(
                payload=frame_payload(index, self.size), user_timestamp=TIMESTAMP_BASE + index
            )
            try:
                self.track.try_push(frame)
            except rtc.PushFrameError as exc:
                self.errors.append(exc.message)
            self.next_index += 1
            await asyncio.sleep(self.interval)

    async def stop(self) -> int:
        """Stop pushing; how many frames were pushed."""
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        return self.next_index


async def published_track(
    events: Events, identity: str, name: str, timeout: float = EVENT_TIMEOUT
) -> rtc.RemoteDataTrack:
    """The latest `data_track_published` for `identity`'s track `name` (waiting for one)."""
    await events.wait(
        "data_track_published",
        lambda t: t.publisher_identity == identity and t.info.name == name,
        timeout,
    )
    matching = [
        args[0]
        for args in events.all("data_track_published")
        if args[0].publisher_identity == identity and args[0].info.name == name
    ]
    track: rtc.RemoteDataTrack = matching[-1]
    return track


@asynccontextmanager
async def dt_joined(
    server: Server | str, room: str, identity: str, **grant: Any
) -> AsyncIterator[tuple[rtc.Room, Events]]:
    """A connected SDK Room recording data-track events too (disconnected at the end)."""
    client = rtc.Room()
    events = Events(client, DATA_TRACK_EVENTS)
    url = server if isinstance(server, str) else url_of(server, "ws")
    await client.connect(url, join_token(room, identity, **grant))
    try:
        yield client, events
    finally:
        if client.isconnected():
            await client.disconnect()
