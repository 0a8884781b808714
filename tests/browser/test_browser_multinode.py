"""livekit-client in Debian's chromium across two Roomcast nodes sharing rooms through Redis:
one page's signalling is relayed by the node that does not host the room."""

from __future__ import annotations

import pytest
from livekit import api

from tests.browser.conftest import NewPage, requires_chromium
from tests.integration.sdk import join_token
from tests.integration.test_multinode import cluster, lkapi

pytestmark = [requires_chromium, pytest.mark.media]


async def test_pages_on_two_nodes_share_media_and_data(new_page: NewPage, signalling: str) -> None:
    async with cluster(2, signalling=signalling) as (_, (a, b)):
        async with lkapi(a) as api_a:
            await api_a.room.create_room(api.CreateRoomRequest(name="browsers"))  # lives on A
        cam = await new_page("cam")
        info = await cam.join(a.ws_url, join_token("browsers", "cam"), camera=True, microphone=True)
        assert sorted(t["kind"] for t in info["published"]) == ["audio", "video"], info
        viewer = await new_page("viewer")
        await viewer.join(b.ws_url, join_token("browsers", "viewer"))  # relayed by B
        seen = await viewer.wait_for_tracks("cam", ["video", "audio"])
        assert {t["source"] for t in seen["tracks"]} == {"camera", "microphone"}, seen
        stats = await viewer.wait_for_inbound("cam", framesDecoded=10, totalSamplesReceived=1)
        assert stats["video"][0]["frameWidth"] > 0, stats
        await viewer.publish_data("hello from B", topic="chat")
        packet = await cam.wait_for_data(text="hello from B", from_="viewer")
        assert packet["topic"] == "chat"
        await viewer.leave()
        await cam.wait_for_participant_gone("viewer")
        assert not cam.page_errors, await cam.diagnostics()
        assert not viewer.page_errors, await viewer.diagnostics()
