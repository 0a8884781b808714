"""Publish options carried through to subscribers, with the official Python SDK: frame metadata
(LiveKit's packet trailer: user timestamp and frame id) reaches the subscriber's decoded frames,
and the publication keeps its features across a full reconnect of the publisher."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress

import numpy as np
import pytest
from livekit import rtc
from livekit.protocol import models

from roomcast.server import Server
from tests.integration.sdk import Events, joined, until

pytestmark = pytest.mark.media

WIDTH, HEIGHT = 320, 240
FEATURES = [rtc.FrameMetadataFeature.FMF_USER_TIMESTAMP, rtc.FrameMetadataFeature.FMF_FRAME_ID]
USER_TIMESTAMP_BASE = 1_700_000_000_000_000  # µs


@asynccontextmanager
async def publishing_with_metadata(room: rtc.Room) -> AsyncIterator[rtc.LocalTrackPublication]:
    """A camera track whose frames carry a user timestamp and a frame id (frame n: n, base+n)."""
    source = rtc.VideoSource(WIDTH, HEIGHT)
    track = rtc.LocalVideoTrack.create_video_track("stamped", source)
    options = rtc.TrackPublishOptions(
        source=rtc.TrackSource.SOURCE_CAMERA, simulcast=False, frame_metadata_features=FEATURES
    )
    publication = await room.local_participant.publish_track(track, options)

    async def feed() -> None:
        frame = np.zeros((HEIGHT, WIDTH, 4), dtype=np.uint8)
        frame[..., 3] = 255
        n = 0
        while True:
            n += 1
            frame[..., 0] = (np.arange(WIDTH) + 3 * n) % 256
            source.capture_frame(
                rtc.VideoFrame(WIDTH, HEIGHT, rtc.VideoBufferType.RGBA, frame.tobytes()),
                metadata=rtc.FrameMetadata(user_timestamp=USER_TIMESTAMP_BASE + n, frame_id=n),
            )
            await asyncio.sleep(1 / 30)

    task = asyncio.ensure_future(feed())
    try:
        yield publication
    finally:
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task
        await source.aclose()


async def stamped_frames(track: rtc.Track, count: int = 10) -> list[rtc.FrameMetadata]:
    """Metadata of the first `count` decoded frames that carry any."""
    stream = rtc.VideoStream(track)
    seen: list[rtc.FrameMetadata] = []
    try:
        async for event in stream:
            if event.metadata is not None and event.metadata.HasField("frame_id"):
                seen.append(event.metadata)
                if len(seen) >= count:
                    return seen
    finally:
        await stream.aclose()
    raise AssertionError(f"stream ended after {len(seen)} stamped frames")


def assert_stamps(stamps: list[rtc.FrameMetadata]) -> None:
    ids = [m.frame_id for m in stamps]
    assert all(m.user_timestamp == USER_TIMESTAMP_BASE + m.frame_id for m in stamps), stamps
    assert ids == sorted(ids) and len(set(ids)) == len(ids), ids


async def subscribed(events: Events, identity: str) -> tuple[rtc.Track, rtc.RemoteTrackPublication]:
    track, publication, _ = await events.wait(
        "track_subscribed",
        lambda t, pub, p: p.identity == identity and t.kind == rtc.TrackKind.KIND_VIDEO,
    )
    return track, publication


async def resubscribed(
    events: Events, identity: str, old: rtc.Track
) -> tuple[rtc.Track, rtc.RemoteTrackPublication]:
    track, publication, _ = await events.wait(
        "track_subscribed",
        lambda t, pub, p: (
            p.identity == identity and t.kind == rtc.TrackKind.KIND_VIDEO and t.sid != old.sid
        ),
        timeout=30,
    )
    return track, publication


async def test_frame_metadata_reaches_the_subscriber_and_survives_a_full_reconnect(
    server: Server,
) -> None:
    async with (
        joined(server, "stamps", "viewer") as (_, viewer_events),
        joined(server, "stamps", "camera") as (camera, _),
        publishing_with_metadata(camera),
    ):
        track, publication = await subscribed(viewer_events, "camera")
        assert list(publication.frame_metadata_features) == FEATURES
        room = server.rooms.get("stamps")
        assert room is not None
        (info,) = room.participants["camera"].tracks.values()
        assert list(info.packet_trailer_features) == FEATURES
        assert_stamps(await asyncio.wait_for(stamped_frames(track), 30))

        # A full reconnect: a new session publishes the track again, with the same options.
        sid_before = camera.local_participant.sid
        await camera.simulate_scenario(rtc.SimulateScenarioKind.SIMULATE_FULL_RECONNECT)
        await until(
            lambda: (
                (p := room.participants.get("camera")) is not None
                and p.sid != sid_before
                and bool(p.tracks)
            ),
            timeout=30,
        )
        track, publication = await resubscribed(viewer_events, "camera", track)
        assert list(publication.frame_metadata_features) == FEATURES
        assert_stamps(await asyncio.wait_for(stamped_frames(track), 30))


async def test_audio_options_reach_the_subscribers_publication(server: Server) -> None:
    source = rtc.AudioSource(48000, 1)
    track = rtc.LocalAudioTrack.create_audio_track("voice", source)
    options = rtc.TrackPublishOptions(
        source=rtc.TrackSource.SOURCE_MICROPHONE, dtx=False, red=False, stream="studio"
    )
    async with (
        joined(server, "opts", "listener") as (_, events),
        joined(server, "opts", "speaker") as (speaker, _),
    ):
        await speaker.local_participant.publish_track(track, options)
        _, publication, _ = await events.wait(
            "track_subscribed", lambda t, pub, p: t.kind == rtc.TrackKind.KIND_AUDIO
        )
        room = server.rooms.get("opts")
        assert room is not None
        (info,) = room.participants["speaker"].tracks.values()
        assert (info.disable_dtx, info.disable_red, info.stream) == (True, True, "studio")
        assert info.backup_codec_policy == models.BackupCodecPolicy.SIMULCAST
        assert models.AudioTrackFeature.TF_NO_DTX in info.audio_features
        # The SDK's own AudioTrackFeature enum numbers the features as the protocol does.
        assert models.AudioTrackFeature.TF_NO_DTX in publication.audio_features
        assert publication.mime_type.lower() == "audio/opus"  # no RED asked for: opus alone
    await source.aclose()
