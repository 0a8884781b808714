"""Dynacast with the official Python SDK: layers nobody watches stop being sent, and return."""

from __future__ import annotations

import asyncio
from contextlib import suppress

import numpy as np
import pytest
from livekit import rtc

from roomcast.server import Server
from tests.conftest import ServerFactory
from tests.integration.sdk import joined, until

pytestmark = [pytest.mark.media, pytest.mark.usefixtures("signalling"), pytest.mark.both_planes]

WIDTH, HEIGHT = 640, 360  # the SDK sends two simulcast layers (q 320x180, h 640x360)


def layer_packets(server: Server) -> list[int]:
    tracks = [t for t in server.plane.uptracks() if t.kind == "video"]
    return [layer.packets for layer in tracks[0].layers] if tracks else []


async def growth(server: Server, seconds: float = 1.0) -> list[int]:
    """Packets each layer received during the next ``seconds``."""
    before = layer_packets(server)
    await asyncio.sleep(seconds)  # measuring a rate needs a time window
    return [after - b for after, b in zip(layer_packets(server), before, strict=True)]


async def test_unwatched_layers_pause_and_resume(start_server: ServerFactory) -> None:
    server: Server = await start_server()
    server.media.dynacast.pause_delay = 0.5
    async with (
        joined(server, "dyn", "pub", options=rtc.RoomOptions(dynacast=True)) as (publisher, _),
        joined(server, "dyn", "viewer") as (_, viewer_events),
    ):
        source = rtc.VideoSource(WIDTH, HEIGHT)
        track = rtc.LocalVideoTrack.create_video_track("cam", source)
        options = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_CAMERA, simulcast=True)
        await publisher.local_participant.publish_track(track, options)

        async def feed() -> None:
            frame = np.zeros((HEIGHT, WIDTH, 4), dtype=np.uint8)
            step = 0
            while True:
                frame[..., 0] = (np.arange(WIDTH) + step) % 256
                source.capture_frame(
                    rtc.VideoFrame(WIDTH, HEIGHT, rtc.VideoBufferType.RGBA, frame.tobytes())
                )
                step += 3
                await asyncio.sleep(1 / 30)

        feeder = asyncio.get_running_loop().create_task(feed())
        try:
            _, publication, _ = await viewer_events.wait("track_subscribed")
            await until(lambda: len(layer_packets(server)) >= 2 and min(layer_packets(server)) > 0)
            top = len(layer_packets(server)) - 1

            publication.set_video_quality(rtc.VideoQuality.VIDEO_QUALITY_LOW)
            await until(lambda: _paused(server, top), timeout=15)
            rates = await growth(server)
            assert rates[0] > 0 and rates[top] == 0, rates  # q still flows, the top is off

            publication.set_video_quality(rtc.VideoQuality.VIDEO_QUALITY_HIGH)
            before = layer_packets(server)[top]
            await until(lambda: layer_packets(server)[top] > before + 10, timeout=15)
        finally:
            feeder.cancel()
            with suppress(asyncio.CancelledError):
                await feeder


_last: dict[int, tuple[float, int]] = {}


def _paused(server: Server, top: int) -> bool:
    """True once the top layer has received nothing for 0.5 s (checked as `until` polls)."""
    loop_time = asyncio.get_running_loop().time()
    packets = layer_packets(server)[top]
    seen_at, seen = _last.get(top, (loop_time, -1))
    if packets != seen:
        _last[top] = (loop_time, packets)
        return False
    return loop_time - seen_at >= 0.5
