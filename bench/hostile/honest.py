"""The honest participants, on the official Python SDK: one publishes audio and 640x360 video
(tests/integration/test_media_python.py `publishing`), two watch the video and play data
ping-pong over the reliable channel (round-trip times).

The publisher's capture times are recorded (this process, on a loaded machine, may itself
capture late), and each decoded frame twice: its render time (`VideoFrameEvent.timestamp_us`, which
libwebrtc's jitter buffer sets on the monotonic clock that `time.monotonic()` reads: what a
viewer would see) and the time this process got it (which also counts this process's own
delays on a loaded machine).
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager, suppress
from dataclasses import dataclass, field
from typing import Any, cast

from livekit import rtc
from tests.integration.sdk import join_token
from tests.integration.test_media_python import publishing

PUBLISHER = "honest-pub"
WATCHERS = ("honest-a", "honest-b")  # a pings b, b answers
WIDTH, HEIGHT = 640, 360
PING_INTERVAL = 0.1
READY_TIMEOUT = 30.0


@dataclass
class Honest:
    frames: dict[str, list[float]] = field(default_factory=dict)  # watcher -> render times
    arrivals: dict[str, list[float]] = field(default_factory=dict)  # watcher -> arrival times
    captures: list[float] = field(default_factory=list)  # when the publisher captured each
    sizes: collections.Counter[tuple[int, int]] = field(default_factory=collections.Counter)
    sent: dict[int, float] = field(default_factory=dict)  # ping number -> sent at
    rtts: list[tuple[float, float]] = field(default_factory=list)  # (sent at, seconds)
    incidents: list[tuple[float, str]] = field(default_factory=list)  # reconnects, drops

    @property
    def identities(self) -> list[str]:
        return [PUBLISHER, *WATCHERS]


async def read_frames(
    track: rtc.RemoteTrack, watcher: str, honest: Honest, first: asyncio.Event
) -> None:
    renders = honest.frames.setdefault(watcher, [])
    arrivals = honest.arrivals.setdefault(watcher, [])
    stream = rtc.VideoStream(track)
    try:
        async for event in stream:
            arrivals.append(time.monotonic())
            renders.append(event.timestamp_us / 1e6 if event.timestamp_us else arrivals[-1])
            honest.sizes[(event.frame.width, event.frame.height)] += 1
            first.set()
        honest.incidents.append((time.monotonic(), f"{watcher} video stream ended"))
    finally:
        await stream.aclose()


def watch_connection(room: rtc.Room, name: str, honest: Honest) -> None:
    """Record what an honest participant should never see during a run: reconnections, and
    honest tracks going away."""

    def record(what: str) -> None:
        honest.incidents.append((time.monotonic(), f"{name} {what}"))

    for event in ("reconnecting", "reconnected", "disconnected"):
        room.on(event, lambda *_, e=event: record(e))

    def track_event(what: str) -> Callable[..., None]:
        def on_event(*args: Any) -> None:
            participant = next((a for a in args if isinstance(a, rtc.RemoteParticipant)), None)
            if participant is not None and participant.identity in (PUBLISHER, *WATCHERS):
                record(f"{what} ({participant.identity})")

        return on_event

    room.on("track_unsubscribed", track_event("track_unsubscribed"))
    room.on("track_unpublished", track_event("track_unpublished"))
    room.on("track_muted", track_event("track_muted"))
    room.on("track_unmuted", track_event("track_unmuted"))
    room.on("participant_disconnected", track_event("participant_disconnected"))


@asynccontextmanager
async def honest_room(ws_url: str, room_name: str) -> AsyncIterator[Honest]:
    """The three participants, talking, until the block ends; yields once video reaches both
    watchers and the first pong is back."""
    honest = Honest()
    rooms = {identity: rtc.Room() for identity in honest.identities}
    tasks: list[asyncio.Future[None]] = []
    firsts = {name: asyncio.Event() for name in WATCHERS}

    def watch_video(name: str) -> Callable[..., None]:
        """Read every video track of the publisher the watcher is given, the first one and
        any later one (a re-subscription is an incident)."""

        def on_subscribed(
            track: rtc.Track, _: rtc.RemoteTrackPublication, participant: rtc.RemoteParticipant
        ) -> None:
            if track.kind != rtc.TrackKind.KIND_VIDEO or participant.identity != PUBLISHER:
                return
            if firsts[name].is_set():
                honest.incidents.append((time.monotonic(), f"{name} video re-subscribed"))
            reader = read_frames(cast(rtc.RemoteTrack, track), name, honest, firsts[name])
            tasks.append(asyncio.ensure_future(reader))

        return on_subscribed

    async with AsyncExitStack() as stack:
        for identity, room in rooms.items():
            watch_connection(room, identity, honest)
            if identity in WATCHERS:
                room.on("track_subscribed", watch_video(identity))
            await room.connect(ws_url, join_token(room_name, identity))
            stack.push_async_callback(room.disconnect)
        await stack.enter_async_context(
            publishing(
                rooms[PUBLISHER], WIDTH, HEIGHT, lambda: honest.captures.append(time.monotonic())
            )
        )
        first_pong = asyncio.Event()
        pinger, ponger = rooms[WATCHERS[0]], rooms[WATCHERS[1]]

        answering: set[asyncio.Future[None]] = set()

        def finished(task: asyncio.Future[None]) -> None:
            answering.discard(task)
            if not task.cancelled():
                task.exception()  # read: a pong sent while the room closes fails, and that is fine

        def on_data(packet: rtc.DataPacket) -> None:
            if packet.topic == "ping":
                answer = ponger.local_participant.publish_data(
                    packet.data, reliable=True, topic="pong", destination_identities=[WATCHERS[0]]
                )
                task = asyncio.ensure_future(answer)
                answering.add(task)
                task.add_done_callback(finished)

        def on_pong(packet: rtc.DataPacket) -> None:
            sent = honest.sent.get(int(packet.data)) if packet.topic == "pong" else None
            if sent is not None:
                honest.rtts.append((sent, time.monotonic() - sent))
                first_pong.set()

        ponger.on("data_received", on_data)
        pinger.on("data_received", on_pong)

        async def ping(pong_to: str = WATCHERS[1]) -> None:
            number = 0
            while True:
                number += 1
                honest.sent[number] = time.monotonic()
                await pinger.local_participant.publish_data(
                    b"%d" % number, reliable=True, topic="ping", destination_identities=[pong_to]
                )
                await asyncio.sleep(PING_INTERVAL)

        tasks.append(asyncio.ensure_future(ping()))
        try:
            async with asyncio.timeout(READY_TIMEOUT):
                for event in [*firsts.values(), first_pong]:
                    await event.wait()
            yield honest
        finally:
            tasks += answering
            for task in tasks:
                task.cancel()
            for task in tasks:
                with suppress(asyncio.CancelledError, Exception):
                    await task
