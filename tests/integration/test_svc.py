"""Layer selection with the official Python SDK: a 1280x720 camera published as VP9 and AV1 SVC
(`L3T3_KEY`, one stream carrying three spatial layers) and as H.264 simulcast (three streams);
the subscriber's `set_video_quality` picks what it receives, in every order, each switch
measured."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress

import numpy as np
import pytest
from livekit import rtc
from livekit.protocol import models

from roomcast.server import Server
from tests.integration.sdk import Events, joined

pytestmark = [pytest.mark.media, pytest.mark.usefixtures("signalling"), pytest.mark.both_planes]

WIDTH, HEIGHT = 1280, 720
Quality = rtc.VideoQuality
SIZES = {
    Quality.VIDEO_QUALITY_LOW: (320, 180),
    Quality.VIDEO_QUALITY_MEDIUM: (640, 360),
    Quality.VIDEO_QUALITY_HIGH: (1280, 720),
}
# HIGH first, then every ordered pair of qualities once: H→L→M→H→M→L→H.
SWITCHES = [
    Quality.VIDEO_QUALITY_LOW,
    Quality.VIDEO_QUALITY_MEDIUM,
    Quality.VIDEO_QUALITY_HIGH,
    Quality.VIDEO_QUALITY_MEDIUM,
    Quality.VIDEO_QUALITY_LOW,
    Quality.VIDEO_QUALITY_HIGH,
]
SWITCH_TIMEOUT = 20.0


@asynccontextmanager
async def camera(
    room: rtc.Room, options: rtc.TrackPublishOptions
) -> AsyncIterator[rtc.LocalTrackPublication]:
    """A 1280x720 moving gradient at 30 fps, published with `options`."""
    source = rtc.VideoSource(WIDTH, HEIGHT)
    track = rtc.LocalVideoTrack.create_video_track("camera", source)
    publication = await room.local_participant.publish_track(track, options)

    async def feed() -> None:
        frame = np.zeros((HEIGHT, WIDTH, 4), dtype=np.uint8)
        frame[..., 3] = 255
        step = 0
        while True:
            frame[..., 0] = (np.arange(WIDTH) + 4 * step) % 256
            frame[..., 1] = (np.arange(HEIGHT)[:, None] + 3 * step) % 256
            source.capture_frame(
                rtc.VideoFrame(WIDTH, HEIGHT, rtc.VideoBufferType.RGBA, frame.tobytes())
            )
            step += 1
            await asyncio.sleep(1 / 30)  # the camera's frame clock

    task = asyncio.ensure_future(feed())
    try:
        yield publication
    finally:
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task
        await source.aclose()


class FrameSizes:
    """Decodes a remote video track and wakes waiters whenever the frame size changes."""

    def __init__(self, track: rtc.Track) -> None:
        self.size: tuple[int, int] | None = None
        self.frames = 0
        self._changed = asyncio.Event()
        self._stream = rtc.VideoStream(track)
        self._task = asyncio.ensure_future(self._consume())

    async def _consume(self) -> None:
        async for event in self._stream:
            self.frames += 1
            size = (event.frame.width, event.frame.height)
            if size != self.size:
                self.size = size
                self._changed.set()

    async def until(self, wanted: tuple[int, int], timeout: float) -> None:
        async def reach() -> None:
            while not _close(self.size, wanted):
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(reach(), timeout)

    async def aclose(self) -> None:
        self._task.cancel()
        with suppress(asyncio.CancelledError):
            await self._task
        await self._stream.aclose()


def _close(size: tuple[int, int] | None, wanted: tuple[int, int]) -> bool:
    """≈: within 10 % in each dimension (encoders may round to their block size)."""
    return size is not None and all(
        abs(a - b) <= 0.1 * b for a, b in zip(size, wanted, strict=True)
    )


async def switch_through_qualities(
    label: str, publication: rtc.RemoteTrackPublication, sizes: FrameSizes
) -> None:
    """Every switch of SWITCHES within SWITCH_TIMEOUT; the times are printed (pytest -s)."""
    await sizes.until(SIZES[Quality.VIDEO_QUALITY_HIGH], SWITCH_TIMEOUT)
    times: list[tuple[str, float]] = []
    previous = Quality.VIDEO_QUALITY_HIGH
    for quality in SWITCHES:
        started = time.monotonic()
        publication.set_video_quality(quality)
        try:
            await sizes.until(SIZES[quality], SWITCH_TIMEOUT)
        except TimeoutError:
            raise AssertionError(
                f"{label}: {Quality.Name(previous)} → {Quality.Name(quality)} not reached in "
                f"{SWITCH_TIMEOUT} s; receiving {sizes.size} after {sizes.frames} frames"
            ) from None
        names = f"{Quality.Name(previous)[14:]}→{Quality.Name(quality)[14:]}"
        times.append((names, round(time.monotonic() - started, 2)))
        previous = quality
    print(f"\n{label} switch times (s): {times}")


async def subscribed_video(events: Events) -> tuple[rtc.Track, rtc.RemoteTrackPublication]:
    track, publication, _ = await events.wait(
        "track_subscribed", lambda t, pub, p: t.kind == rtc.TrackKind.KIND_VIDEO
    )
    return track, publication


@pytest.mark.parametrize("codec", ["VP9", "AV1"])
async def test_svc_spatial_layers_follow_the_requested_quality(server: Server, codec: str) -> None:
    options = rtc.TrackPublishOptions(
        source=rtc.TrackSource.SOURCE_CAMERA,
        simulcast=True,
        video_codec=rtc.VideoCodec.Value(codec),
        scalability_mode="L3T3_KEY",
    )
    async with (
        joined(server, "svc", "viewer") as (_, events),
        joined(server, "svc", "camera") as (publisher, _),
        camera(publisher, options),
    ):
        track, publication = await subscribed_video(events)
        assert publication.mime_type.lower() == f"video/{codec.lower()}"
        # One stream: the server selects layers inside it for each subscriber.
        (uptrack,) = [t for t in server.plane.uptracks() if t.kind == "video"]
        assert len(uptrack.layers) == 1 and uptrack.svc_codec
        if server.mux.engine is not None:  # the native plane selects layers in the engine
            assert type(uptrack).__name__ == "NativeUpTrack"
            downtracks = [type(d).__name__ for d in server.plane.downtracks() if d.kind == "video"]
            assert downtracks == ["NativeSvcDownTrack"]
        room = server.rooms.get("svc")
        assert room is not None
        (info,) = room.participants["camera"].tracks.values()
        assert (
            info.codecs[0].video_layer_mode == models.VideoLayer.MULTIPLE_SPATIAL_LAYERS_PER_STREAM
        )
        assert [(layer.width, layer.height) for layer in info.layers] == list(SIZES.values())
        sizes = FrameSizes(track)
        try:
            await switch_through_qualities(f"{codec} L3T3_KEY", publication, sizes)
        finally:
            await sizes.aclose()


async def test_h264_simulcast_layers_follow_the_requested_quality(server: Server) -> None:
    options = rtc.TrackPublishOptions(
        source=rtc.TrackSource.SOURCE_CAMERA, simulcast=True, video_codec=rtc.VideoCodec.H264
    )
    async with (
        joined(server, "h264", "viewer") as (_, events),
        joined(server, "h264", "camera") as (publisher, _),
        camera(publisher, options),
    ):
        track, publication = await subscribed_video(events)
        assert publication.mime_type.lower() == "video/h264"
        (uptrack,) = [t for t in server.plane.uptracks() if t.kind == "video"]
        assert [layer.rid for layer in uptrack.layers] == ["q", "h", "f"]
        if server.mux.engine is not None:  # the native plane switches at SPSs in the engine
            assert type(uptrack).__name__ == "NativeUpTrack"
        sizes = FrameSizes(track)
        try:
            await switch_through_qualities("H.264 simulcast", publication, sizes)
        finally:
            await sizes.aclose()
