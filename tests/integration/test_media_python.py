"""Audio and video through the SFU between official Python `livekit` SDK participants."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress

import numpy as np
import pytest
from livekit import api, rtc

from roomcast.server import Server
from tests.conftest import API_KEY, API_SECRET, url_of
from tests.integration.sdk import Events, joined

SAMPLE_RATE = 48000
FRAME_SAMPLES = 480  # 10 ms
AMPLITUDE = 0.3 * 32767
WIDTH, HEIGHT = 320, 240

pytestmark = [
    pytest.mark.usefixtures("signalling"),  # on /rtc/v1 and /rtc
    pytest.mark.both_planes,  # media: both forwarding planes
]


@asynccontextmanager
async def sine_audio(room: rtc.Room) -> AsyncIterator[rtc.LocalAudioTrack]:
    """Publish a 440 Hz sine as the microphone until the block ends."""
    audio_source = rtc.AudioSource(SAMPLE_RATE, 1)
    audio = rtc.LocalAudioTrack.create_audio_track("sine", audio_source)
    await room.local_participant.publish_track(
        audio, rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
    )

    async def feed_audio() -> None:
        n = 0
        t = np.arange(FRAME_SAMPLES)
        while True:
            samples = (AMPLITUDE * np.sin(2 * math.pi * 440 * (t + n) / SAMPLE_RATE)).astype(
                np.int16
            )
            n += FRAME_SAMPLES
            await audio_source.capture_frame(
                rtc.AudioFrame(samples.tobytes(), SAMPLE_RATE, 1, FRAME_SAMPLES)
            )

    task = asyncio.ensure_future(feed_audio())
    try:
        yield audio
    finally:
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task
        await audio_source.aclose()


@asynccontextmanager
async def gradient_video(
    room: rtc.Room,
    width: int = WIDTH,
    height: int = HEIGHT,
    on_frame: Callable[[], None] | None = None,
) -> AsyncIterator[rtc.LocalVideoTrack]:
    """Publish a moving gradient as the camera (30 frames/s, no simulcast) until the block
    ends; ``on_frame`` is called after each frame is captured."""
    video_source = rtc.VideoSource(width, height)
    video = rtc.LocalVideoTrack.create_video_track("gradient", video_source)
    await room.local_participant.publish_track(
        video,
        rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_CAMERA, simulcast=False),
    )

    async def feed_video() -> None:
        frame = np.zeros((height, width, 4), dtype=np.uint8)
        frame[..., 3] = 255
        step = 0
        while True:
            frame[..., 0] = (np.arange(width) + step) % 256
            frame[..., 1] = (np.arange(height)[:, None] + 2 * step) % 256
            video_source.capture_frame(
                rtc.VideoFrame(width, height, rtc.VideoBufferType.RGBA, frame.tobytes())
            )
            if on_frame is not None:
                on_frame()
            step += 4
            await asyncio.sleep(1 / 30)

    task = asyncio.ensure_future(feed_video())
    try:
        yield video
    finally:
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task


@asynccontextmanager
async def publishing(
    room: rtc.Room,
    width: int = WIDTH,
    height: int = HEIGHT,
    on_frame: Callable[[], None] | None = None,
) -> AsyncIterator[tuple[rtc.LocalAudioTrack, rtc.LocalVideoTrack]]:
    """Publish a 440 Hz sine (microphone) and a moving gradient (camera) until the block ends."""
    async with (
        sine_audio(room) as audio,
        gradient_video(room, width, height, on_frame) as video,
    ):
        yield audio, video


async def subscribed_track(events: Events, kind: int, identity: str) -> rtc.RemoteTrack:
    track, _, _ = await events.wait(
        "track_subscribed", lambda t, pub, p: t.kind == kind and p.identity == identity
    )
    return track  # type: ignore[no-any-return]


async def sine_energy(track: rtc.RemoteTrack, frames: int = 150) -> float:
    """Mean |x| of non-silent received audio (the sine's theoretical value is 2A/π)."""
    stream = rtc.AudioStream(track, sample_rate=SAMPLE_RATE, num_channels=1)
    values: list[float] = []
    try:
        async for event in stream:
            samples = np.frombuffer(event.frame.data, dtype=np.int16).astype(np.float64)
            level = float(np.mean(np.abs(samples)))
            if level > AMPLITUDE / 10:  # skip the silence before the first packets
                values.append(level)
            if len(values) >= frames:
                break
    finally:
        await stream.aclose()
    return float(np.median(values))


async def video_frame_size(track: rtc.RemoteTrack, frames: int = 5) -> tuple[int, int]:
    stream = rtc.VideoStream(track)
    seen = 0
    try:
        async for event in stream:
            seen += 1
            if seen >= frames:
                return event.frame.width, event.frame.height
    finally:
        await stream.aclose()
    raise AssertionError("video stream ended")


async def test_audio_and_video_reach_subscriber_and_late_joiner(server: Server) -> None:
    async with joined(server, "media", "bea") as (bea, bea_events):
        async with (
            joined(server, "media", "al") as (al, _),
            publishing(al) as (audio, video),
        ):
            audio_track = await subscribed_track(bea_events, rtc.TrackKind.KIND_AUDIO, "al")
            video_track = await subscribed_track(bea_events, rtc.TrackKind.KIND_VIDEO, "al")
            energy, size = await asyncio.wait_for(
                asyncio.gather(sine_energy(audio_track), video_frame_size(video_track)), 30
            )
            expected = 2 * AMPLITUDE / math.pi
            assert abs(energy - expected) / expected < 0.10, (energy, expected)
            assert size == (WIDTH, HEIGHT)
            if server.mux.engine is not None:  # the native plane: audio and VP8 are the
                # engine's to forward, congestion control on (the default) or not
                assert server.mux.engine.counters()["forwarded"] > 0
                planes = {(d.kind, type(d).__name__) for d in server.plane.downtracks()}
                assert planes == {("audio", "NativeDownTrack"), ("video", "NativeDownTrack")}

            # A late joiner gets the tracks that are already published.
            async with joined(server, "media", "cy") as (_, cy_events):
                late_video = await subscribed_track(cy_events, rtc.TrackKind.KIND_VIDEO, "al")
                assert await asyncio.wait_for(video_frame_size(late_video), 30) == (WIDTH, HEIGHT)

            # Mute and unmute reach the subscriber.
            audio.mute()
            await bea_events.wait("track_muted", lambda p, pub: pub.sid == audio.sid)
            audio.unmute()
            await bea_events.wait("track_unmuted", lambda p, pub: pub.sid == audio.sid)

            # The server API mutes a live track.
            async with api.LiveKitAPI(url_of(server), API_KEY, API_SECRET) as lk:
                response = await lk.room.mute_published_track(
                    api.MuteRoomTrackRequest(
                        room="media", identity="al", track_sid=video.sid, muted=True
                    )
                )
                assert response.track.muted
            await bea_events.wait("track_muted", lambda p, pub: pub.sid == video.sid)

            # Unpublishing removes the track on the subscriber.
            await al.local_participant.unpublish_track(audio.sid)
            await bea_events.wait("track_unpublished", lambda pub, p: pub.sid == audio.sid)
            assert audio.sid not in bea.remote_participants["al"].track_publications
            assert video.sid in bea.remote_participants["al"].track_publications


async def test_subscriptions_permissions_and_speakers(server: Server) -> None:
    manual = rtc.RoomOptions(auto_subscribe=False)
    async with (
        joined(server, "media2", "dee", options=manual) as (dee, dee_events),
        joined(server, "media2", "eve") as (_, eve_events),
        joined(server, "media2", "fay") as (fay, _),
        publishing(fay) as (audio, video),
        api.LiveKitAPI(url_of(server), API_KEY, API_SECRET) as lk,
    ):
        # eve auto-subscribes; dee sees the publications but subscribes to nothing by itself.
        await subscribed_track(eve_events, rtc.TrackKind.KIND_AUDIO, "fay")
        await dee_events.wait("track_published", lambda pub, p: pub.sid == video.sid)
        assert not dee_events.all("track_subscribed")

        # The server API subscribes dee to the video only.
        await lk.room.update_subscriptions(
            api.UpdateSubscriptionsRequest(
                room="media2", identity="dee", track_sids=[video.sid], subscribe=True
            )
        )
        track = await subscribed_track(dee_events, rtc.TrackKind.KIND_VIDEO, "fay")
        assert await asyncio.wait_for(video_frame_size(track), 30) == (WIDTH, HEIGHT)
        # ...and the client itself can subscribe to the audio.
        dee.remote_participants["fay"].track_publications[audio.sid].set_subscribed(True)
        await subscribed_track(dee_events, rtc.TrackKind.KIND_AUDIO, "fay")

        # The sine is loud: fay becomes an active speaker for her subscribers.
        (speakers,) = await eve_events.wait(
            "active_speakers_changed", lambda s: [p.identity for p in s] == ["fay"]
        )
        assert speakers[0].sid == fay.local_participant.sid

        # Revoking canPublish unpublishes fay's tracks for everyone
        # (docs/protocol/05-room-and-participant-updates.md §5.10).
        await lk.room.update_participant(
            api.UpdateParticipantRequest(
                room="media2",
                identity="fay",
                permission=api.ParticipantPermission(can_subscribe=True, can_publish=False),
            )
        )
        for events in (dee_events, eve_events):
            for sid in (audio.sid, video.sid):
                await events.wait("track_unpublished", lambda pub, p, s=sid: pub.sid == s)
        info = await lk.room.get_participant(
            api.RoomParticipantIdentity(room="media2", identity="fay")
        )
        assert list(info.tracks) == []
