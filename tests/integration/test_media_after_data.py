"""Media published after the publisher PC was first negotiated for data only."""

from __future__ import annotations

import asyncio

import pytest
from livekit import rtc

from roomcast.server import Server
from tests.integration.sdk import joined
from tests.integration.test_media_python import publishing, subscribed_track, video_frame_size

pytestmark = [
    pytest.mark.usefixtures("signalling"),  # on /rtc/v1 and /rtc
    pytest.mark.both_planes,  # media: both forwarding planes
]


async def test_publish_after_data_only_negotiation(server: Server) -> None:
    async with (
        joined(server, "late-media", "viewer") as (_, events),
        joined(server, "late-media", "sender") as (sender, _),
    ):
        await sender.local_participant.publish_data(b"hello first", topic="t")
        await events.wait("data_received", lambda p: p.data == b"hello first")
        async with publishing(sender):
            track = await subscribed_track(events, rtc.TrackKind.KIND_VIDEO, "sender")
            assert await asyncio.wait_for(video_frame_size(track), 20) == (320, 240)
