"""Media through Roomcast from headless Chromium (fake camera with simulcast, fake microphone):
decoded by the Python SDK and by a second browser page.

Marked `media` (audio/video forwarding through the SFU), and not skipped: run it alone with
`pytest -m media`, or leave it out with `-m "not media"`.
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from livekit import rtc

from roomcast.server import Server
from tests.browser.conftest import NewPage, requires_chromium
from tests.conftest import url_of
from tests.integration.sdk import join_token, joined

pytestmark = [
    requires_chromium,
    pytest.mark.media,
    pytest.mark.usefixtures("signalling"),
    pytest.mark.both_planes,
]

FRAME_TIMEOUT = 20.0


async def first_video_frame(track: rtc.Track) -> rtc.VideoFrame:
    stream = rtc.VideoStream(track)
    try:
        async for event in stream:
            if event.frame.width > 0 and event.frame.height > 0:
                return event.frame
        raise AssertionError("video stream ended before a frame")
    finally:
        await stream.aclose()


async def first_audible_frame(track: rtc.Track) -> tuple[rtc.AudioFrame, int]:
    """The first non-silent frame (the SDK yields silence before any RTP arrives), and how many
    frames came before it."""
    stream = rtc.AudioStream(track, sample_rate=48000, num_channels=1)
    count = 0
    try:
        async for event in stream:
            count += 1
            if np.any(np.frombuffer(event.frame.data, dtype=np.int16)):
                return event.frame, count
        raise AssertionError("audio stream ended before an audible frame")
    finally:
        await stream.aclose()


async def test_browser_camera_and_microphone_reach_python_and_another_page(
    server: Server, new_page: NewPage
) -> None:
    url = url_of(server, "ws")
    publisher = await new_page("cam")
    info = await publisher.join(
        url, join_token("call", "cam"), camera=True, microphone=True, simulcast=True
    )
    assert sorted(t["kind"] for t in info["published"]) == ["audio", "video"], info

    async with joined(server, "call", "py") as (_, events):
        # The Python SDK subscribes to both tracks and decodes them.
        video, video_pub, _ = await events.wait(
            "track_subscribed",
            lambda t, pub, p: p.identity == "cam" and t.kind == rtc.TrackKind.KIND_VIDEO,
        )
        audio, _, _ = await events.wait(
            "track_subscribed",
            lambda t, pub, p: p.identity == "cam" and t.kind == rtc.TrackKind.KIND_AUDIO,
        )
        assert video_pub.simulcasted, "the browser published simulcast layers"
        video_task = asyncio.create_task(first_video_frame(video))
        audio_task = asyncio.create_task(first_audible_frame(audio))
        _, pending = await asyncio.wait({video_task, audio_task}, timeout=FRAME_TIMEOUT)
        for task in pending:
            task.cancel()
        if pending:
            raise AssertionError(
                f"within {FRAME_TIMEOUT} s the Python SDK got a decoded video frame: "
                f"{video_task not in pending}, audible audio: "
                f"{audio_task not in pending}\n" + await publisher.diagnostics()
            )
        frame = video_task.result()
        sound, silent_before = audio_task.result()
        assert frame.width > 0 and frame.height > 0
        assert sound.sample_rate == 48000 and sound.samples_per_channel > 0, silent_before

        # A second page subscribes: its receivers decode the first page's video and audio.
        viewer = await new_page("viewer")
        await viewer.join(url, join_token("call", "viewer"))
        seen = await viewer.wait_for_tracks("cam", ["video", "audio"])
        assert {t["source"] for t in seen["tracks"]} == {"camera", "microphone"}, seen
        stats = await viewer.wait_for_inbound(
            "cam", framesDecoded=10, frameWidth=1, totalSamplesReceived=1, totalAudioEnergy=1e-6
        )
        (video_in,) = stats["video"]
        (audio_in,) = stats["audio"]
        assert video_in["frameWidth"] > 0 and video_in["frameHeight"] > 0, stats
        assert audio_in["packetsReceived"] > 0, stats

        # Our receiver feedback (RR/REMB) lets Chrome send its top simulcast layer too
        # (docs/protocol/16-media-interop.md §7: without it `f` never starts).
        layers = await publisher.wait_for_outbound_layer("f")
        assert set(layers) == {"q", "h", "f"}, layers

    assert not publisher.page_errors, await publisher.diagnostics()
    assert not viewer.page_errors, await viewer.diagnostics()
